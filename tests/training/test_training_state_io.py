"""Trainer state round-trips through safetensors + JSON, with no pickle involved."""

import torch

from training.run import state_io


def test_optimizer_scheduler_and_rng_state_round_trip(tmp_path):
    model = torch.nn.Linear(4, 3)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 0.5)
    model(torch.randn(2, 4)).sum().backward()
    opt.step()
    sched.step()
    state = {"optimizer": opt.state_dict(), "scheduler": {"last_epoch": 3, "base_lrs": [0.01]},
             "stream": {"order": [3, 1, 2], "cursor": (1, 2)}, "torch_rng": torch.get_rng_state(),
             "step": 7, "tokens": 1024, "note": None}
    state_io.save_state(state, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["trainer_state.json",
                                                          "trainer_state.safetensors"]
    back = state_io.load_state(tmp_path)
    assert back["stream"] == {"order": [3, 1, 2], "cursor": (1, 2)}
    assert back["step"] == 7 and back["note"] is None
    assert torch.equal(back["torch_rng"], state["torch_rng"])
    assert set(back["optimizer"]["state"]) == set(state["optimizer"]["state"])  # int keys
    fresh = torch.optim.AdamW(torch.nn.Linear(4, 3).parameters(), lr=1e-2)
    fresh.load_state_dict(back["optimizer"])
    for key, value in state["optimizer"]["state"][0].items():
        assert torch.equal(fresh.state_dict()["state"][0][key], value)


def test_a_latest_pointer_without_a_readable_state_is_an_error_not_a_fresh_start(tmp_path):
    import pytest

    from training.run.checkpointing import latest_checkpoint

    root = tmp_path / "checkpoints"
    (root / "step-001800").mkdir(parents=True)
    (root / "step-001800" / "trainer_state.pt").write_bytes(b"PK legacy pickle")
    (root / "latest").write_text("step-001800\n")
    with pytest.raises(RuntimeError, match="step-001800"):
        latest_checkpoint(root)
    assert latest_checkpoint(tmp_path / "nothing-here") is None
