"""GPU serving paths, checked on the CPU: grouped-query attention without key/value copies,
the sampler's device-side step, and the bucketed static-shape window (what a CUDA graph replays)."""

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from coda_model import (
    SamplerConfig,
    denoise,
    forward,
    graphs,
    infill,
    load_model,
    load_tokenizer,
    modeling,
)


def reference_attention(q, k, v, mask):
    groups = q.shape[1] // k.shape[1]
    return F.scaled_dot_product_attention(q, k.repeat_interleave(groups, 1),
                                          v.repeat_interleave(groups, 1), attn_mask=mask)


@pytest.mark.parametrize("sdpa_gqa", [True, False])
@pytest.mark.parametrize("masked", [True, False])
def test_grouped_query_attention_equals_repeated_keys(monkeypatch, sdpa_gqa, masked):
    """SDPA's own GQA, and (sdpa_gqa=False, masked) the query heads stacked per key head that
    CUDA uses with a padding mask, both equal attention over repeat_interleave'd keys."""
    monkeypatch.setattr(modeling, "SDPA_GQA", sdpa_gqa)
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, h, n, 16, generator=g) for h, n in ((8, 5), (2, 11), (2, 11)))
    mask = None
    if masked:
        mask = torch.rand(2, 1, 1, 11, generator=g) > 0.3
        mask[..., 0] = True
    torch.testing.assert_close(modeling.attend(q, k, v, mask), reference_attention(q, k, v, mask),
                               atol=1e-6, rtol=1e-5)


# --------------------------------------------------------------------------------------------
# The accelerator layout (dense logits over the hole, no host reads in the step loop) and the
# bucketed static-shape window give the same tokens as the CPU's dynamic path
# --------------------------------------------------------------------------------------------

FIXTURE = Path(__file__).resolve().parents[3] / "shared" / "fixtures" / "coda-reference-tiny"

CONFIGS = {
    "exact": SamplerConfig(steps=8),
    "exact_blocks": SamplerConfig(steps=8, block_length=4),
    "exact_margin_alg_temp": SamplerConfig(steps=6, alg="topk_margin", alg_temp=0.5, seed=3),
    "sampled_entropy": SamplerConfig(steps=6, alg="entropy", temperature=0.7, seed=1),
    "origin": SamplerConfig(steps=6, alg="origin", seed=2),
    "cache": SamplerConfig(steps=8, context_cache=True),
    "cache_window_refresh": SamplerConfig(steps=8, context_cache=True, cache_window=3,
                                          refresh_every=3),
    "cache_threshold": SamplerConfig(steps=12, context_cache=True, threshold=0.2),
    "cache_64_steps": SamplerConfig(steps=64, context_cache=True),
    "cache_stop_weight": SamplerConfig(steps=8, context_cache=True, stop_weight=0.2),
    "exact_stop_weight_threshold": SamplerConfig(steps=8, stop_weight=0.0, threshold=0.3),
}


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    return load_model(tiny_model_dir), load_tokenizer(tiny_model_dir)


def long_prompt(tok):
    body = "".join(f"    def method_{i}(self, value):\n        return value + {i}\n\n"
                   for i in range(8))
    return (tok.encode("class Numbers:\n" + body + "    def total(self):\n        return "),
            tok.encode("\n\n    def count(self):\n        return len(self.items)\n"))


def fills(model, tok, config, lengths):
    prefix, suffix = long_prompt(tok)
    return [(c.ids, c.confidences) for c in infill(model, tok, prefix, suffix, lengths, config)]


@pytest.mark.parametrize("name", CONFIGS)
@pytest.mark.parametrize("lengths", [[12], [5, 12, 20]])
def test_accelerator_layout_gives_the_cpu_paths_tokens(monkeypatch, tiny, name, lengths):
    model, tok = tiny
    expected = fills(model, tok, CONFIGS[name], lengths)
    monkeypatch.setattr(forward, "DENSE_ON_CPU", True)
    same_fills(fills(model, tok, CONFIGS[name], lengths), expected)


def same_fills(got, expected):
    """The same tokens; the same confidences up to float noise (lm_head over more rows)."""
    assert [ids for ids, _ in got] == [ids for ids, _ in expected]
    for (_, conf), (_, want) in zip(got, expected, strict=True):
        torch.testing.assert_close(conf, want, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", [n for n in CONFIGS if CONFIGS[n].context_cache])
@pytest.mark.parametrize("lengths", [[12], [5, 12, 20]])
def test_bucketed_static_window_gives_the_dynamic_paths_tokens(monkeypatch, tiny, name, lengths):
    model, tok = tiny
    expected = fills(model, tok, CONFIGS[name], lengths)
    monkeypatch.setattr(graphs, "STATIC_ON_CPU", True)
    same_fills(fills(model, tok, CONFIGS[name], lengths), expected)


def test_windows_of_one_bucket_share_one_static_step(monkeypatch, tiny):
    """Prompts of other lengths in the same buckets reuse the step (on CUDA: one capture)."""
    model, tok = tiny
    monkeypatch.setattr(graphs, "STATIC_ON_CPU", True)
    graphs._steps.pop(model, None)
    prefix, suffix = long_prompt(tok)
    config = SamplerConfig(steps=4, context_cache=True)
    for cut, lengths in ((0, [5, 9]), (3, [6, 10]), (7, [4, 11])):
        infill(model, tok, prefix[cut:], suffix, lengths, config)
    assert len(graphs._steps[model]) == 1
    [(batch, width, context, _, _)] = graphs._steps[model]
    assert (batch, width, context % graphs.CONTEXT_BUCKET) == (2, 16, 0)


def test_carry_is_used_where_it_pays():
    assert forward.carry_pays("cpu")
    assert not forward.carry_pays("cuda")


@pytest.mark.skipif(not (FIXTURE / "golden.json").is_file(), reason="../shared is absent")
def test_golden_fixtures_in_the_accelerator_layout(monkeypatch):
    monkeypatch.setattr(forward, "DENSE_ON_CPU", True)
    model, tok = load_model(FIXTURE), load_tokenizer(FIXTURE)
    golden = json.loads((FIXTURE / "golden.json").read_text())
    for case in golden["infill"] + golden["complete"]:
        ids = list(case["input_ids"]) + [tok.mask_id] * case.get("max_new_tokens", 0)
        config = SamplerConfig(steps=case["steps"], alg=case["alg"], alg_temp=case["alg_temp"],
                               temperature=case["temperature"], eps=case["eps"],
                               top_k=case.get("top_k"), top_p=case.get("top_p"))
        out = denoise(model, torch.tensor([ids]), config, mask_id=tok.mask_id)
        assert out[0].tolist() == case["output_ids"]


class HostReads:
    """Counts the calls that read a tensor's values back to the host (a device sync on a GPU)."""

    NAMES = ("tolist", "item", "__bool__", "__int__", "__float__", "nonzero")

    def __init__(self, monkeypatch) -> None:
        self.count = 0
        for name in self.NAMES:
            original = getattr(torch.Tensor, name)

            def counted(*args, _original=original, **kwargs):
                self.count += 1
                return _original(*args, **kwargs)

            monkeypatch.setattr(torch.Tensor, name, counted)


@pytest.mark.parametrize("name", ["exact", "cache"])
def test_no_host_reads_inside_the_step_loop(monkeypatch, tiny, name):
    """In the accelerator layout, 64 steps read from the device as often as 8 do."""
    model, tok = tiny
    monkeypatch.setattr(forward, "DENSE_ON_CPU", True)
    monkeypatch.setattr(graphs, "STATIC_ON_CPU", True)
    prefix, suffix = long_prompt(tok)
    reads = {}
    for steps in (8, 64):
        config = SamplerConfig(steps=steps, context_cache=name == "cache", skip_idle_steps=False)
        with monkeypatch.context() as patch:
            counter = HostReads(patch)
            infill(model, tok, prefix, suffix, [5, 24], config)
        reads[steps] = counter.count
    assert reads[64] == reads[8]


def test_the_gpu_check_rehearses_on_the_cpu(tmp_path):
    """benchmarks/gpu_serve.py at a tiny shape on the CPU: its window, equality, profile and
    compiled sections run, and the static path's tokens equal the dynamic path's."""
    import os
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "OUT": str(tmp_path), "PYTHONPATH": str(root)}
    run = subprocess.run([sys.executable, str(root / "benchmarks" / "gpu_serve.py"), "--tiny",
                          "--device", "cpu", "--ctx", "48", "--reps", "1",
                          "--sections", "window,equal,profile,compiled"],
                         capture_output=True, text=True, env=env, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    results = json.loads((tmp_path / "gpu_serve.json").read_text())
    assert not [k for k in results if k.endswith("_error")], results
    assert set(results["window"]) == {"ctx48_hole16", "ctx48_hole48", "ctx192_hole16"}
    assert results["graph_equals_eager_all"] is True
    assert all(row["static_vs_dynamic_agree"] == 1.0 for row in results["equal"].values())
    prof = results["profile_window_step"]
    assert prof["ops_per_step"] > 0 and prof["busy_us_per_step"] > 0
    assert any("mm" in row["name"] or "linear" in row["name"] for row in prof["top"]), prof
    compiled = results["compiled"]
    assert results["compile_s"] > 0 and compiled["window_step_ms"] > 0
    assert {"infill8_16_ms", "keystroke8_16-32_ms", "fill_hole_3_lengths_64_steps_ms"} <= set(
        compiled)
    equal, total = map(int, compiled["tokens_equal_eager"].split("/"))
    assert total == 3 and equal >= 2   # rounding may flip a near tie, rarely


def test_static_steps_are_bounded_by_their_buffers_bytes(monkeypatch, tiny):
    """Least recently used shapes go once their context buffers pass the byte budget."""
    model, tok = tiny
    monkeypatch.setattr(graphs, "STATIC_ON_CPU", True)
    graphs._steps.pop(model, None)
    prefix, suffix = long_prompt(tok)
    config = SamplerConfig(steps=2, context_cache=True)
    infill(model, tok, prefix, suffix, [4], config)
    [one] = graphs._steps[model].values()
    monkeypatch.setattr(graphs, "MAX_BUFFER_BYTES", 2 * one.nbytes)
    for lengths in ([20], [40], [60]):  # window buckets 32, 48, 64: each larger than the last
        infill(model, tok, prefix, suffix, lengths, config)
    widths = [key[1] for key in graphs._steps[model]]
    assert widths == [64]  # a 48 and a 64 would pass 2x a 16-wide step's bytes


def test_compiled_layers_follow_the_eager_ones_in_every_path(monkeypatch, tiny_model_dir):
    """torch.compile'd layers (one compilation for every layer and shape): the full pass, the
    dynamic cached window and the static window (what a CUDA graph replays) give the eager
    logits up to rounding, and fills through them complete."""
    from coda_model.compiled import compile_layers

    model, tok = load_model(tiny_model_dir), load_tokenizer(tiny_model_dir)
    eager = load_model(tiny_model_dir)
    compile_layers(model)
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    prefix, suffix = long_prompt(tok)
    with torch.inference_mode():
        for n in (40, 57):  # two lengths: dynamic shapes, no recompilation per length
            ids = torch.tensor([prefix[:n]])
            torch.testing.assert_close(model(ids), eager(ids), atol=2e-4, rtol=1e-4)
    config = SamplerConfig(steps=4, context_cache=True)
    for static in (False, True):
        monkeypatch.setattr(graphs, "STATIC_ON_CPU", static)
        for lengths in ([5, 12], [7]):
            got = infill(model, tok, prefix, suffix, lengths, config)
            want = infill(eager, tok, prefix, suffix, lengths, config)
            assert [len(c.confidences) for c in got] == [len(c.confidences) for c in want]
            agree = sum(a.ids == b.ids for a, b in zip(got, want, strict=True))
            assert agree >= len(lengths) - 1   # rounding may flip a near tie, rarely
    variants = torch._dynamo.utils.counters["frames"]["ok"]
    assert variants <= 8   # batch 1 or 2, mask or not, context kind: never per layer or length
