"""The held-out probe: fixed rows and masks, so two models differ only by their weights."""

from __future__ import annotations

import shutil
import sysconfig
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from coda_model import load_tokenizer
from training import ship
from training.data import corpus
from training.eval import probe

REPO = Path(__file__).resolve().parents[2]
SHIPPED = REPO / "model"


@pytest.fixture(autouse=True)
def few_rows(monkeypatch):
    monkeypatch.setattr(probe, "ROWS", 8)


def noised_copy(src: Path, dst: Path, std: float) -> Path:
    """src with Gaussian noise on every weight matrix: the same model, made worse."""
    shutil.copytree(src, dst)
    g = torch.Generator().manual_seed(0)
    for f in dst.glob("*.safetensors"):
        tensors = load_file(f)
        save_file({k: v + std * torch.randn(v.shape, generator=g).to(v.dtype) if v.dim() > 1
                   else v for k, v in tensors.items()}, f)
    return dst


def test_the_heldout_files_are_the_ones_no_run_trains_on():
    pkg = corpus.stdlib(Path(sysconfig.get_paths()["stdlib"]))
    files = probe.heldout_files()
    assert 10 <= len(files) < 0.1 * len(pkg.files)
    for fraction in (0.0, 0.01, 0.03):   # held out by every gpu_run, whatever its own split
        held = {p for p, rel in pkg.files if corpus.held_out(corpus.STDLIB_PACKAGE, rel, fraction)}
        assert set(files) <= held


def test_rows_take_from_every_file_in_turn(tmp_path):
    tokenizer = load_tokenizer(SHIPPED)
    files = []
    for i, lines in enumerate((400, 40, 400)):
        path = tmp_path / f"f{i}.py"
        path.write_text("".join(f"value_{i}_{n} = {n} * {i}\n" for n in range(lines)))
        files.append(path)
    rows = probe.probe_rows(tokenizer, 64, files, rows=5)
    firsts = [tokenizer.decode(r[:3].tolist()) for r in rows]
    assert [f.split("_")[1] for f in firsts[:3]] == ["0", "1", "2"]   # one row from each first
    assert rows.shape == (5, 64)
    with pytest.raises(probe.ProbeError, match="nothing to probe"):
        probe.probe_rows(tokenizer, 10_000, files)


@pytest.mark.parametrize("point", [0.05, 0.3, 0.8, "spans"])
def test_masks_are_seeded_and_keep_position_zero(point):
    mask = probe.masks((16, 512), point)
    assert torch.equal(mask, probe.masks((16, 512), point))
    assert not mask[:, 0].any()
    if point == "spans":
        assert (mask.sum(1) == probe.SPAN * probe.SPANS_PER_ROW).all()
        starts = (mask[:, 1:] & ~mask[:, :-1]).sum(1)   # runs of masks begin here
        assert (starts <= probe.SPANS_PER_ROW).all()
    else:
        assert abs(mask.float().mean().item() - point) < 0.02


def test_the_probe_ranks_a_damaged_copy_below_the_shipped_model(tmp_path):
    worse = noised_copy(SHIPPED, tmp_path / "worse", std=0.05)
    results = probe.compare([SHIPPED, worse])
    good, bad = results[str(SHIPPED)], results[str(worse)]
    assert bad["ce_mean"] > good["ce_mean"] + 0.1
    assert all(0 < good[f"top1_{p}"] < 1 for p in probe.points())
    again = probe.compare([SHIPPED])[str(SHIPPED)]
    assert again == good   # same rows, same masks, same weights: the same figures


def test_ship_refuses_a_damaged_run_with_the_real_probe(tmp_path, capsys):
    """The whole path, no stand-in judge: a run exporting damaged weights changes nothing."""
    model = tmp_path / "model"
    shutil.copytree(SHIPPED, model)
    run = tmp_path / "run"
    (run / "model").mkdir(parents=True)
    noised_copy(SHIPPED, tmp_path / "worse", std=0.05)
    for name in ("config.json", "model.safetensors"):
        shutil.copy2(tmp_path / "worse" / name, run / "model" / name)
    (run / "report.json").write_text('{"status": "done"}')
    (run / "corpus_manifest.json").write_text("{}")
    weights = (model / "model.safetensors").read_bytes()
    assert ship.main([str(run), "--model", str(model)]) == 2
    assert "training.eval.probe mean CE" in capsys.readouterr().err
    assert (model / "model.safetensors").read_bytes() == weights


def test_cli_prints_a_table_or_one_line(tmp_path, capsys):
    assert probe.main([str(SHIPPED)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("| model |") and f"| {SHIPPED} |" in out
    assert probe.main([str(tmp_path)]) == 2
    assert "no config.json" in capsys.readouterr().err
