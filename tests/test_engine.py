"""The engine caps the context at the model's trained positions and keeps typing batches small."""

import dataclasses

import pytest

from coda_lsp.engine import INLINE_CANDIDATES, Engine, FillJob
from coda_lsp.settings import Settings


@pytest.fixture(scope="module")
def engine(tiny_model_dir):
    return Engine.load(tiny_model_dir, device="cpu")


def test_context_budget_is_capped_at_trained_positions(engine):
    trained = engine.model.config.max_position_embeddings
    assert engine.context_budget(dataclasses.replace(Settings(), context_tokens=10**6)) == trained
    assert engine.context_budget(dataclasses.replace(Settings(), context_tokens=64)) == 64


@pytest.mark.parametrize("fast, expected", [(True, INLINE_CANDIDATES), (False, 4)])
def test_typing_tries_fewer_lengths_than_hole_fills(engine, fast, expected):
    job = FillJob(prefix="def add(a, b):\n    return ", suffix="\n", span_lengths=(2, 4, 8, 16),
                  steps=2, settings=Settings(), fast=fast)
    assert len(engine.fill(job).fills) == expected


def test_typing_carries_context_per_document(engine):
    from coda_lsp.engine import CARRIED_DOCUMENTS

    body = "".join(f"def f{i}(x):\n    return x * {i}\n\n" for i in range(20))
    job = FillJob(prefix=body + "def g(x):\n    return ", suffix="\n\nprint(g(2))\n",
                  span_lengths=(4, 8), steps=2, settings=Settings(), fast=True,
                  carry_key="file:///a.py")
    assert engine.fill(job).reused == 0   # the document's first request: a full pass
    typed = dataclasses.replace(job, prefix=job.prefix + "x")
    assert engine.fill(typed).reused > 100
    other = dataclasses.replace(typed, carry_key="file:///b.py")
    assert engine.fill(other).reused == 0   # another document has its own carry
    hole = dataclasses.replace(typed, fast=False)
    assert engine.fill(hole).reused == 0   # hole fills are exact: no carry
    for i in range(CARRIED_DOCUMENTS + 1):
        engine.fill(dataclasses.replace(job, carry_key=f"file:///{i}.py"))
    assert len(engine.carries) == CARRIED_DOCUMENTS and "file:///a.py" not in engine.carries


@pytest.mark.parametrize("cpuinfo, expected", [
    ("flags\t\t: fpu sse2 avx2 avx512f avx512bw avx512_vnni\n", None),   # emulated bf16: fp32
    ("flags\t\t: fpu avx512f avx512_bf16 amx_tile\n", "bfloat16"),
    ("flags\t\t: fpu avx512f amx_bf16 amx_tile\n", "bfloat16"),
    ("Features\t: fp asimd sve bf16 i8mm\n", "bfloat16"),                 # aarch64
    (None, None),                                                         # no /proc/cpuinfo
])
def test_cpu_dtype_is_bf16_only_where_the_cpu_has_it(tmp_path, monkeypatch, cpuinfo, expected):
    from coda_lsp import engine as engine_module

    path = tmp_path / "cpuinfo"
    if cpuinfo is not None:
        path.write_text("processor\t: 0\n" + cpuinfo)
    monkeypatch.setattr(engine_module, "CPUINFO", path)
    assert engine_module.pick_dtype(None, "cpu") == expected
    assert engine_module.pick_dtype("auto", "cpu") == expected
    assert engine_module.pick_dtype("float32", "cpu") == "float32"  # --dtype still decides
    assert engine_module.pick_dtype(None, "cuda") == "bfloat16"
