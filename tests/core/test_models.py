"""core.models: which model serves each role, sharing, swaps that drop nothing, --device auto."""

import asyncio
import dataclasses
import threading
from pathlib import Path

import pytest
import torch

from coda_lsp.core import models
from coda_lsp.core.engine import Engine, pick_device
from coda_lsp.core.models import ModelError, Models, ModelSpec, Role, resolve, spec_for
from coda_lsp.core.scheduling import Superseded
from coda_lsp.core.settings import Settings, update


class FakeEngine:
    def __init__(self, spec: ModelSpec) -> None:
        self.spec = spec
        self.device = "cpu" if spec.device == "auto" else spec.device
        self.dtype_name = spec.dtype or "float32"


class CountingLoader:
    def __init__(self, fail: set[str] = frozenset()) -> None:
        self.loaded: list[ModelSpec] = []
        self.fail = fail

    def __call__(self, spec: ModelSpec) -> FakeEngine:
        if spec.ref in self.fail:
            raise ModelError(f"model folder not found: {spec.ref}\nsecond line never shown")
        self.loaded.append(spec)
        return FakeEngine(spec)


def settings(**kw) -> Settings:
    return dataclasses.replace(Settings(typing_model="/m/small"), **kw)


def test_the_fill_role_takes_the_typing_roles_choices_where_unset():
    s = settings(typing_device="cpu", typing_dtype="int8")
    small = ModelSpec("/m/small", "cpu", "int8")
    assert spec_for(s, Role.FILL) == spec_for(s, Role.TYPING) == small
    s = settings(fill_model="/m/big", fill_device="cuda", fill_dtype="auto")
    assert spec_for(s, Role.TYPING) == ModelSpec("/m/small", "auto", None)
    assert spec_for(s, Role.FILL) == ModelSpec("/m/big", "cuda", None)
    s = settings(typing_device="cpu", typing_dtype="int8", fill_device="cuda")
    assert spec_for(s, Role.FILL).dtype is None  # int8 stays on the CPU: the GPU's default
    assert spec_for(Settings(), Role.TYPING).ref == str(models.shipped_model_dir())


def test_null_on_the_wire_means_the_command_line():
    cli = settings(fill_model="/m/big", typing_device="cpu")
    s, problems = update(cli, {"fillModel": "/m/other", "typingDevice": "cuda"}, cli)
    assert (s.fill_model, s.typing_device, problems) == ("/m/other", "cuda", [])
    s, problems = update(s, {"fillModel": None, "typingDevice": None, "typingModel": ""}, cli)
    assert (s.fill_model, s.typing_device, s.typing_model) == ("/m/big", "cpu", "/m/small")
    s, problems = update(s, {"fillDevice": "tpu", "fillModel": 3}, cli)
    assert len(problems) == 2 and "one of auto, cpu, cuda, mps" in problems[0]


def test_one_model_serves_both_roles_when_they_name_the_same():
    loader = CountingLoader()
    m = Models(loader)
    changes = asyncio.run(m.apply(settings()))
    assert [c.error for c in changes] == [None, None] and len(loader.loaded) == 1
    assert m.get(Role.TYPING) is m.get(Role.FILL)
    assert m.describe()["fill"] == {"model": "small", "ref": "/m/small", "device": "cpu",
                                    "dtype": "float32"}


def test_two_models_two_workers():
    loader = CountingLoader()
    m = Models(loader)
    asyncio.run(m.apply(settings(fill_model="/m/big", fill_device="cuda")))
    typing, fill = m.get(Role.TYPING), m.get(Role.FILL)
    assert typing.scheduler is not fill.scheduler
    assert m.describe() == {
        "typing": {"model": "small", "ref": "/m/small", "device": "cpu", "dtype": "float32"},
        "fill": {"model": "big", "ref": "/m/big", "device": "cuda", "dtype": "float32"}}


def test_a_swap_lets_queued_work_finish_on_the_old_model():
    loader = CountingLoader()
    m = Models(loader)
    gate = threading.Event()

    async def main():
        await m.apply(settings())
        old = m.get(Role.FILL)
        ran_on = []

        def work(engine):
            def run(_stop):
                gate.wait(5)
                ran_on.append(engine.spec.ref)
                return engine.spec.ref
            return run

        queued = [old.scheduler.submit(f"doc{i}", work(old.engine)) for i in range(3)]
        changes = await m.apply(settings(fill_model="/m/big"))
        assert [c.role for c in changes] == [Role.FILL]
        new = m.get(Role.FILL)
        assert new is not old and m.get(Role.TYPING) is old  # typing keeps it: not retired
        later = new.scheduler.submit("doc0", work(new.engine))
        gate.set()
        return await asyncio.gather(*queued, later)

    assert asyncio.run(main()) == ["/m/small"] * 3 + ["/m/big"]


def test_a_retired_worker_finishes_its_queue_then_refuses_work():
    loader = CountingLoader()
    m = Models(loader)
    gate = threading.Event()

    async def main():
        await m.apply(settings(fill_model="/m/a"))
        old = m.get(Role.FILL)
        first = old.scheduler.submit("k1", lambda _s: gate.wait(5) and "a1")
        second = old.scheduler.submit("k2", lambda _s: "a2")
        await m.apply(settings(fill_model="/m/b"))  # nobody else uses /m/a: retired
        gate.set()
        done = await asyncio.gather(first, second)
        with pytest.raises(Superseded):
            await old.scheduler.submit("k3", lambda _s: "never")
        return done

    assert asyncio.run(main()) == ["a1", "a2"]


def test_a_failed_load_keeps_the_old_model_and_says_one_line():
    loader = CountingLoader(fail={"/no/such"})
    m = Models(loader)

    async def main():
        await m.apply(settings(fill_model="/m/big"))
        before = m.get(Role.FILL)
        changes = await m.apply(settings(fill_model="/no/such"))
        again = await m.apply(settings(fill_model="/no/such"))  # not retried until it changes
        return before, changes, again

    before, changes, again = asyncio.run(main())
    assert m.get(Role.FILL) is before
    assert [c.role for c in changes] == [Role.FILL] and again == []
    assert changes[0].message == ("cannot load the model /no/such (fill): model folder not "
                                  "found: /no/such")


def test_at_start_a_fill_model_that_fails_falls_back_to_the_typing_model():
    m = Models(CountingLoader(fail={"/no/such"}))
    changes = asyncio.run(m.apply(settings(fill_model="/no/such")))
    assert [c.error is None for c in changes] == [True, False]
    assert m.get(Role.FILL) is m.get(Role.TYPING)


def test_resolve_names_what_is_wrong(tmp_path: Path, tiny_model_dir: Path):
    assert resolve(str(tiny_model_dir)) == tiny_model_dir
    with pytest.raises(ModelError, match="model folder not found"):
        resolve(str(tmp_path / "nothing"))
    with pytest.raises(ModelError, match="no config.json"):
        resolve(str(tmp_path))


def test_load_engine_reports_the_device_and_dtype_it_chose(tiny_model_dir: Path):
    served = Models(models.load_engine).load(ModelSpec(str(tiny_model_dir), "cpu", "bfloat16"))
    assert served.describe()["device"] == "cpu" and served.describe()["dtype"] == "bfloat16"
    assert isinstance(served.engine, Engine)


@pytest.mark.parametrize(("cuda", "mps", "expected"), [
    (True, True, "cuda"), (False, True, "mps"), (False, False, "cpu")])
def test_device_auto_takes_cuda_then_mps_then_cpu(monkeypatch, cuda, mps, expected):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: mps)
    assert pick_device("auto") == expected
    assert pick_device("cpu") == "cpu"  # a named device is taken as named


def test_device_auto_is_decided_per_model(monkeypatch, tiny_model_dir: Path):
    """The typing model named cpu stays there; the fill model's auto takes the GPU."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    seen = {}

    def fake_load(model_dir, device="cpu", dtype=None):
        seen[device] = dtype
        return torch.nn.Linear(1, 1)

    monkeypatch.setattr("coda_lsp.core.engine.load_model", fake_load)
    monkeypatch.setattr("coda_lsp.core.engine.load_tokenizer", lambda d: type(
        "T", (), {"texts_in_order": ()})())
    m = Models(models.load_engine)
    s = Settings(typing_model=str(tiny_model_dir), typing_device="cpu", typing_dtype="float32",
                 fill_device="auto")
    asyncio.run(m.apply(s))
    assert m.describe()["typing"]["device"] == "cpu" and m.describe()["fill"]["device"] == "cuda"
    assert seen == {"cpu": "float32", "cuda": "bfloat16"}  # the GPU's default dtype


def test_a_remote_serves_a_role_and_typing_keeps_its_local_model_to_fall_back_on():
    url = "http://gpu-box:8012"
    s = Settings(typing_model="/m/small", typing_remote=url)
    typing, fill = spec_for(s, Role.TYPING), spec_for(s, Role.FILL)
    assert (typing.ref, typing.fallback, typing.remote, typing.label) == (
        url, "/m/small", True, f"remote {url}")
    assert fill == typing  # unset, the fill role follows typing: one remote, one worker
    s = Settings(typing_model="/m/small", fill_remote=url)
    assert spec_for(s, Role.TYPING) == ModelSpec("/m/small", "auto", None)
    assert spec_for(s, Role.FILL).ref == url and spec_for(s, Role.FILL).fallback is None
    s = Settings(typing_remote=url, fill_model="/m/big")  # a local fill model beside it
    assert spec_for(s, Role.FILL) == ModelSpec("/m/big", "auto", None)


def test_remote_settings_take_a_url_or_null():
    s, problems = update(Settings(), {"fillRemote": "https://gpu-box/coda/",
                                      "typingRemote": "gpu-box:8012"}, Settings())
    assert s.fill_remote == "https://gpu-box/coda" and s.typing_remote is None
    assert problems == ["coda.typingRemote must be a coda-lsp http URL (http://HOST:PORT), "
                        "not 'gpu-box:8012'; using None"]
    _, problems = update(Settings(), {"fillModel": "http://gpu-box:8012"}, Settings())
    assert problems and "goes in typingRemote or fillRemote" in problems[0]
    s, _ = update(s, {"fillRemote": None}, Settings(fill_remote="http://x:1"))
    assert s.fill_remote == "http://x:1"  # null: the command line's --remote
