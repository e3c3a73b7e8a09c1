"""The prepared GPU run (``training.gpu_run``) end to end on CPU at tiny scale, and its parts:
licences from metadata, duplicate and benchmark filtering, packing, sharded bf16 export."""

import gzip
import json
import os
import random
import subprocess
import sys
from email.message import Message
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from coda_model import load_model, load_tokenizer
from training import gpu_run
from training.data import corpus, decontam, licences
from training.data.feed import CorpusFeed, pack_files
from training.data.packing import pack

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "model"
BENCHMARK = ROOT.parent / "shared" / "benchmarks" / "humaneval-infilling"
PROBLEM = '''def running_maximum_of_weights(weights: list[int]) -> list[int]:
    """ Return the running maximum of the given parcel weights, element by element.
    >>> running_maximum_of_weights([3, 1, 4, 1, 5])
    [3, 3, 4, 4, 5]
    """
    best, out = None, []
    for weight in weights:
        best = weight if best is None or weight > best else best
        out.append(best)
    return out
'''


def module_text(seed: int, functions: int = 12) -> str:
    rng = random.Random(seed)
    names = ["total", "items", "value", "count", "path", "result", "node", "key", "index"]
    lines = ["import os", ""]
    for fn in range(functions):
        a, b = rng.sample(names, 2)
        lines += ["", f"def {rng.choice(names)}_{seed}_{fn}({a}, {b}=None):",
                  f'    """Compute the {a} of {b}."""', f"    if {b} is None:",
                  f"        {b} = {rng.randint(0, 9)}"]
        for _ in range(rng.randint(2, 5)):
            c = rng.choice(names)
            lines += [f"    for {c} in range({a}):",
                      f"        {b} = {b} + {c} * {rng.randint(1, 99)}"]
        lines += [f"    return {a} - {b}", ""]
    return "\n".join(lines) + "\n"


def install(site: Path, name: str, version: str, meta: list[str], files: dict[str, str]) -> None:
    for rel, text in files.items():
        (site / rel).parent.mkdir(parents=True, exist_ok=True)
        (site / rel).write_text(text)
    info = site / f"{name}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("\n".join(["Metadata-Version: 2.4", f"Name: {name}",
                                              f"Version: {version}", *meta]) + "\n\n")
    (info / "RECORD").write_text("".join(f"{rel},,\n" for rel in files)
                                 + f"{info.name}/METADATA,,\n")


@pytest.fixture(scope="module")
def machine(tmp_path_factory):
    """A fake GPU machine: site-packages with metadata, a stdlib, a benchmark artifact."""
    root = tmp_path_factory.mktemp("machine")
    site, std = root / "site", root / "stdlib"
    core = module_text(1)
    near = module_text(2)
    near_copy = near.replace("import os", "import os  # patched\nimport sys", 1)
    install(site, "goodpkg", "1.0", ["License-Expression: MIT"], {
        "goodpkg/__init__.py": module_text(3), "goodpkg/core.py": core,
        "goodpkg/near.py": near, "goodpkg/leak.py": module_text(4) + "\n\n" + PROBLEM,
        "goodpkg/tests/test_core.py": module_text(5), "goodpkg/test_more.py": module_text(6)})
    install(site, "mirrorpkg", "0.3", ["Classifier: License :: OSI Approved :: BSD License"], {
        "mirrorpkg/copy_of_core.py": core, "mirrorpkg/near_copy.py": near_copy,
        "mirrorpkg/own.py": module_text(7)})
    install(site, "gplpkg", "2.0", [
        "License: GPL-3.0-or-later",
        "Classifier: License :: OSI Approved :: GNU General Public License v3 (GPLv3)"],
        {"gplpkg/__init__.py": module_text(8)})
    for i in range(10):
        (std / "json").mkdir(parents=True, exist_ok=True)
        (std / "json" / f"mod{i}.py").write_text(module_text(100 + i))
    (std / "test").mkdir()
    (std / "test" / "test_json.py").write_text(module_text(9))
    bench = root / "bench"
    bench.mkdir()
    with gzip.open(bench / decontam.FILES[0], "wt") as f:
        cut = PROBLEM.index("    best, out")
        f.write(json.dumps({"task_id": "SingleLineInfilling/HumanEval/0/L0",
                            "prompt": PROBLEM[:cut], "canonical_solution": "",
                            "suffix": PROBLEM[cut:], "entry_point": "x", "test": ""}) + "\n")
    artifact = root / "decontam.json"
    decontam.main(["--benchmark", str(bench), "--out", str(artifact)])
    return site, std, artifact


GPU_MACHINE_LACKS = """
import importlib.abc
import sys


class Absent(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in NAMES:
            raise ImportError(name + " is not installed on the GPU machine")
        return None


sys.meta_path.insert(0, Absent())
"""


def test_the_whole_gpu_run_on_cpu(machine, tmp_path):
    """scripts/gpu_default_model.sh itself: benchmark, corpus, training, export, report; with
    the packages the GPU machine lacks made unimportable (tree-sitter, the server's)."""
    site, std, artifact = machine
    out = tmp_path / "OUT"
    lacks = tmp_path / "lacks"
    lacks.mkdir()
    names = {"tree_sitter", "tree_sitter_python", "coda_lsp", "pygls", "lsprotocol", "cattrs"}
    (lacks / "sitecustomize.py").write_text(f"NAMES = {names!r}\n" + GPU_MACHINE_LACKS)
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    env = {**os.environ, "OUT": str(out), "BUDGET_S": "50", "PYTHON": sys.executable,
           "TMPDIR": str(scratch),
           "PYTHONPATH": f"{lacks}{os.pathsep}{ROOT}", "BENCH_ARGS": "--device cpu --recipe "
           "default_model_gpu --batch 2 --seq-len 32 --steps 2 --warmup 1"}
    subprocess.run([
        "bash", str(ROOT / "scripts" / "gpu_default_model.sh"), "--site-packages", str(site),
        "--stdlib", str(std), "--decontam", str(artifact), "--workers", "1",
        "--shard-mib", "10", "--export-s", "1", "--work", str(tmp_path / "work"),
        "--first-share", "0",
        "--set", "train.device=cpu", "train.batch_size=2", "data.seq_len=32",
        "data.eval_fraction=0.3", "train.compile=false", "train.threads=1",
        "train.log_every=2", "train.eval_every=0", "train.eval_batches=1",
        "train.checkpoint_every_seconds=4", "optim.warmup_steps=10"],
        env=env, check=True, timeout=240)
    files = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    index = json.loads((out / "model" / "model.safetensors.index.json").read_text())
    shards = sorted(f"model/{name}" for name in set(index["weight_map"].values()))
    assert len(shards) == 3 and shards[0] == "model/model-00001-of-00003.safetensors"
    assert files == sorted(["corpus_manifest.json", "model/config.json", *shards,
                            "model/model.safetensors.index.json", "report.json", "train.log"])
    assert not list(scratch.glob("bench_training.*")), "the benchmark's JSON is left behind"
    for shard in (out / "model").glob("*.safetensors"):
        assert shard.stat().st_size <= 10 * 1024 * 1024
        with safe_open(str(shard), "pt") as f:
            assert all(f.get_tensor(k).dtype == torch.bfloat16 for k in f.keys())

    manifest = json.loads((out / "corpus_manifest.json").read_text())
    kept = {p["package"]: p for p in manifest["packages"]}
    assert set(kept) == {"python-stdlib", "goodpkg", "mirrorpkg"}
    # core, near, __init__, own; tests and leak gone, and of each (near) copy one is kept
    assert kept["goodpkg"]["files"] + kept["mirrorpkg"]["files"] == 4
    assert kept["python-stdlib"]["files"] == 10   # stdlib/test skipped
    assert {p["licence"] for p in manifest["packages"]} == {"MIT", "BSD", "PSF"}
    assert [e["package"] for e in manifest["excluded_packages"]] == ["gplpkg"]
    assert "copyleft" in manifest["excluded_packages"][0]["reason"]
    assert manifest["dropped_files"]["duplicate"] == 1
    assert manifest["dropped_files"]["near_duplicate"] == 1
    assert manifest["dropped_files"]["benchmark"] == 1
    for p in manifest["packages"]:
        assert {"version", "bytes", "sha256", "files"} <= set(p)

    report = json.loads((out / "report.json").read_text())
    assert report["status"] == "done" and report["steps"] >= 8   # calibration steps train too
    # Training began on the first files; the rest joined as they came (or were there already).
    assert manifest["corpus_done"] and report["corpus_seconds"] is not None
    for grew in report["data_growth"]:
        assert 0 < grew["step"] <= report["steps"] and grew["train_rows"] >= 2
    if report["data_growth"]:
        assert report["data_growth"][-1]["files"] == manifest["files"]
    assert report["exported_step"] == report["steps"]
    assert report["calibration"]["tokens_per_s"] > 0 and report["flops"] > 0
    assert report["train_tokens_per_s"] is None or report["train_tokens_per_s"] > 0
    assert report["bench"]["loop_tokens_per_s"] > 0   # the benchmark measured the grown shape
    assert report["bench"]["parameters"] == report["grown"]["parameters"][1]
    for key in ("ce_sigma0.05", "top1_sigma0.05", "masked_ce"):
        assert key in report["eval_before"] and key in report["eval_after"]
    trained = load_model(out / "model")
    shipped = load_model(SHIPPED)
    # the script's default growth: 384 wide, 6 deep
    assert report["grown"]["layers"] == [4, 6] and report["grown"]["hidden"] == [256, 384]
    assert report["grown"]["max_logit_gap"] < 1e-3
    assert (trained.config.num_hidden_layers, trained.config.hidden_size) == (6, 384)
    old, new = shipped.state_dict(), trained.state_dict()
    for name in ("model.embed_tokens.weight", "model.layers.0.mlp.up_proj.weight"):
        rows, cols = old[name].shape
        assert not torch.equal(old[name].to(torch.bfloat16), new[name][:rows, :cols])  # trained
    assert new["model.layers.1.self_attn.o_proj.weight"].abs().max() > 0  # a copy left zero
    assert new["model.layers.0.self_attn.o_proj.weight"][256:].abs().max() > 0  # new channels


def meta(**fields) -> Message:
    m = Message()
    for key, value in fields.items():
        for v in value if isinstance(value, list) else [value]:
            m[key.replace("_", "-")] = v
    return m


@pytest.mark.parametrize(("fields", "family"), [
    ({"License_Expression": "MIT"}, "MIT"),
    ({"License_Expression": "BSD-3-Clause AND MIT"}, "BSD+MIT"),
    ({"License_Expression": "Apache-2.0 WITH LLVM-exception AND BSD-2-Clause"}, "Apache+BSD"),
    ({"License_Expression": "Apache-2.0 OR GPL-2.0-only"}, None),  # a copyleft option
    ({"License_Expression": "MPL-2.0 AND MIT"}, None),
    ({"License_Expression": "BSD-3-Clause AND Zlib"}, None),       # Zlib is not on the list
    ({"License_Expression": "MIT AND BSL-1.0"}, None),             # nor Boost
    ({"License_Expression": "GPL-2.0-or-later WITH Classpath-exception-2.0"}, None),
    ({"Classifier": ["License :: OSI Approved :: Apache Software License"]}, "Apache"),
    ({"Classifier": ["License :: OSI Approved :: GNU Lesser General Public License v3 "
                     "(LGPLv3)"]}, None),
    ({"License": "PSF", "Classifier": ["Programming Language :: Python"]}, "PSF"),
    ({"License": "License agreement for matplotlib (mpl) ...\n1. This LICENSE AGREEMENT",
      "Classifier": ["License :: OSI Approved :: Python Software Foundation License"]}, "PSF"),
    ({"Classifier": ["License :: OSI Approved :: MIT License",
                     "License :: OSI Approved :: Apache Software License"]}, "Apache+MIT"),
    ({"License": "ISC"}, "ISC"),
    ({"License": "Permission is hereby granted, free of charge, to any person\nobtaining"},
     "MIT"),
    ({"License": "BSD\n\nbundled: GNU General Public License with GCC exception"}, None),
    ({"License": "UNKNOWN"}, None),
    ({}, None),
])
def test_licence_comes_from_metadata_and_excludes_copyleft(fields, family):
    assert licences.licence_of(meta(**fields))[0] == family


def test_pack_files_matches_the_reference_packing():
    tok = load_tokenizer(SHIPPED)
    texts = [module_text(i, functions=3) for i in range(6)]
    ids = [tok.backend.encode(t, add_special_tokens=False).ids for t in texts]
    spans = [[(1, 3), (0, len(x) - 1), (5, 9)] for x in ids]
    from array import array
    files = [corpus.CorpusFile("p", str(i), "", 0, array("H", x).tobytes(),
                               array("i", [v for s in sp for v in s]).tobytes(), False)
             for i, (x, sp) in enumerate(zip(ids, spans, strict=True))]
    got, want = pack_files(files, 48, tok.eos_id), pack(ids, spans, 48, tok.eos_id)
    assert torch.equal(got.ids, want.ids)
    assert torch.equal(got.span_ptr, want.span_ptr)
    assert torch.equal(got.spans, want.spans)


def test_python_spans_are_statements_and_expressions_in_bytes():
    text = "x = 'é'\nif x:\n    y = f(x, k=1)\n"
    raw = text.encode()
    got = {raw[a:b].decode() for a, b in corpus.python_byte_spans(text)}
    assert {"x = 'é'", "'é'", "y = f(x, k=1)", "f(x, k=1)", "k=1", "1"} <= got
    assert "x" not in got                             # bare names are not spans


@pytest.mark.skipif(not BENCHMARK.is_dir(), reason="HumanEval-Infilling not in ../shared")
def test_the_committed_artifact_flags_every_benchmark_problem():
    d = decontam.Decontaminator()
    problems = decontam.problems(BENCHMARK)
    assert len(problems) == d.info["problems"] == 164
    assert all(any(d.contaminated(t) for t in texts) for texts in problems.values())
    assert not d.contaminated(module_text(1))


def test_a_corpus_out_of_time_says_how_many_files_it_left_out(machine):
    site, std, artifact = machine
    from training.run import recipes
    files, manifest = corpus.build_corpus([site], std, SHIPPED, recipes.get("tiny_cpu").data,
                                          artifact=artifact, workers=1, time_limit_s=0.0)
    assert files == [] and manifest["unprocessed_files"] == 17


def test_training_takes_the_corpus_as_it_grows(machine):
    """The builder hands out what it has so far; the feed packs the larger corpus once the
    loop has started, and every earlier file stays in it (the manifest is the data trained on)."""
    site, std, artifact = machine
    from training.run import recipes
    cfg = recipes.get("tiny_cpu").data
    eos = load_tokenizer(SHIPPED).eos_id
    builder = corpus.CorpusBuilder([site], std, SHIPPED, cfg, artifact=artifact, workers=1)
    assert len(builder.chunks) > 2
    feed = CorpusFeed(builder, 32, eos, refresh_s=1e9)   # only the final refresh
    first = []

    def on_chunk():
        if not first:
            first.extend(builder.snapshot()[0])
            feed.start(len(first))
        feed.on_chunk()

    builder.run(on_chunk=on_chunk)
    split, manifest = feed.take()
    assert feed.take() is None
    files, _ = builder.snapshot()
    assert 0 < len(first) < len(files) == manifest["files"] and manifest["corpus_done"]
    assert {f.sha256 for f in first} <= {f.sha256 for f in files}
    expected = pack_files([f for f in files if not f.is_eval], 32, eos)
    assert torch.equal(split.ids, expected.ids) and torch.equal(split.spans, expected.spans)
    assert manifest["dropped_files"] == {"size": 0, "decode": 0, "generated": 0, "error": 0,
                                         "duplicate": 1, "near_duplicate": 1, "benchmark": 1}
    # The corpus ended with nothing new to train on: the final counts still reach the manifest.
    late = CorpusFeed(builder, 32, eos, refresh_s=1e9)
    late.start(len(files))
    late.on_chunk()
    split_none, counts = late.take()
    assert split_none is None and counts["corpus_done"] and counts["files"] == manifest["files"]
    assert counts["dropped_files"] == manifest["dropped_files"]
    # A larger split not yet taken survives the final refresh that brings nothing new.
    pending = CorpusFeed(builder, 32, eos, refresh_s=1e9)
    pending.start(len(first))
    pending.on_chunk()
    pending.on_chunk()
    split, final = pending.take()
    assert split is not None and len(split) == len(expected) and final["corpus_done"]


def test_the_loop_trains_on_a_new_split_from_the_next_step(tmp_path):
    from training.run import recipes
    from training.run.loop import Trainer
    recipe = recipes.override(recipes.get("tiny_cpu"), ["train.batch_size=2", "data.seq_len=16",
                                                        "train.threads=1"])
    small = pack_files([corpus.CorpusFile("p", "a.py", "x", 1, _ids(range(40)), b"",
                                                  False)], 16, 0)
    large = pack_files([corpus.CorpusFile("p", "b.py", "y", 1, _ids(range(100, 300)),
                                                  b"", False)], 16, 0)
    trainer = Trainer(recipe, tmp_path, train_split=small, eval_split=small)
    trainer.train_step()
    trainer.use_train_split(large)
    assert trainer.train_split is large and trainer.stream.n_rows == len(large) == 12
    seen = set()
    for _ in range(6):
        seen.update(trainer.stream.next())
    assert seen == set(range(12))
    trainer.train_step()
    with pytest.raises(Exception, match="fewer than a batch"):
        trainer.use_train_split(pack_files([], 16, 0))


def _ids(values) -> bytes:
    from array import array
    return array("H", values).tobytes()


def test_growing_deeper_keeps_the_function_and_the_copies_learn():
    from training.run.grow import grow_depth, same_function, source_layers
    from training.run.loop import build_optimizer
    from training.run.recipes import tiny_cpu
    assert source_layers(4, 6) == [0, 0, 1, 2, 2, 3]
    shipped = load_model(SHIPPED)
    grown = grow_depth(shipped, 6)
    ids = torch.randint(10, 8000, (2, 40), generator=torch.Generator().manual_seed(0))
    assert same_function(shipped, grown, ids) < 1e-4
    assert grown.config.num_parameters > shipped.config.num_parameters
    assert grown.lm_head.weight is grown.model.embed_tokens.weight   # still tied
    copy = grown.model.layers[1].self_attn.o_proj.weight
    assert torch.equal(copy, torch.zeros_like(copy))
    optimizer, _ = build_optimizer(grown.train(), tiny_cpu())
    grown(ids).float().logsumexp(-1).mean().backward()
    optimizer.step()
    assert copy.abs().max() > 0
    with pytest.raises(ValueError):
        grow_depth(shipped, 3)


def test_growing_wider_keeps_the_function_and_the_new_channels_learn():
    from training.run.grow import _widened_heads, grow_depth, grow_width, same_function
    from training.run.loop import build_optimizer
    from training.run.recipes import tiny_cpu
    assert _widened_heads(4, 6, 2) == [0, 1, 3, 4]   # each keeps its key/value head
    shipped = load_model(SHIPPED).float()
    wide = grow_width(shipped, 384, 1152)
    c = wide.config
    assert (c.hidden_size, c.intermediate_size, c.num_attention_heads,
            c.num_key_value_heads) == (384, 1152, 6, 2)
    ids = torch.randint(10, 8000, (2, 40), generator=torch.Generator().manual_seed(0))
    assert same_function(shipped, wide, ids) < 1e-3
    assert same_function(shipped, grow_depth(wide, 6), ids) < 1e-3   # both ways at once
    assert wide.lm_head.weight is wide.model.embed_tokens.weight
    layer = wide.model.layers[0]
    zeroed = [wide.model.embed_tokens.weight[:, 256:], layer.self_attn.o_proj.weight[256:],
              layer.self_attn.o_proj.weight[:, 2 * 64:3 * 64],   # a new head's output
              layer.mlp.down_proj.weight[:, 768:]]
    assert all(z.abs().max() == 0 for z in zeroed)
    optimizer, _ = build_optimizer(wide.train(), tiny_cpu())
    for _ in range(2):   # the second step: what only the first step's new weights fed
        optimizer.zero_grad()
        wide(ids).float().logsumexp(-1).mean().backward()
        optimizer.step()
    assert all(z.abs().max() > 0 for z in zeroed)
    for bad in ((192, 1152), (384, 512), (320, 1152)):   # narrower, or 5 heads over 2 kv
        with pytest.raises(ValueError, match="cannot widen"):
            grow_width(shipped, *bad)


def test_the_run_widens_and_deepens_its_start_model(tmp_path):
    """gpu_run --grow-width 384 --grow-layers 6: the saved start model loads at the new shape,
    the report says so, and a later run given the same sizes continues it as it is."""
    from training.run import recipes
    recipe = recipes.get("default_model_gpu")
    report = gpu_run.Report(tmp_path / "report.json")
    split = pack_files([corpus.CorpusFile("p", "a.py", "x", 1, _ids(range(10, 200)),
                                                  b"", False)], 64, 0)
    grown = gpu_run.grow(recipe, SHIPPED, 6, tmp_path / "grown", split, report, width=384)
    assert grown.init_from == str(tmp_path / "grown")
    model = load_model(tmp_path / "grown")
    assert (model.config.hidden_size, model.config.num_hidden_layers) == (384, 6)
    g = report.data["grown"]
    assert g["layers"] == [4, 6] and g["hidden"] == [256, 384] and g["max_logit_gap"] < 1e-3
    assert g["parameters"][1] == model.config.num_parameters > g["parameters"][0]
    again = gpu_run.grow(grown, tmp_path / "grown", 6, tmp_path / "g2", split, report, width=384)
    assert again is grown and report.data["grown"]["skipped"]


def test_a_start_model_already_that_deep_is_not_grown_again(tmp_path):
    """A later GPU session with GROW_LAYERS set continues the grown model as it is."""
    from training.run import recipes
    recipe = recipes.get("default_model_gpu")
    report = gpu_run.Report(tmp_path / "report.json")
    layers = load_model(SHIPPED).config.num_hidden_layers
    assert gpu_run.grow(recipe, SHIPPED, layers, tmp_path / "grown", None, report) is recipe
    assert report.data["grown"]["skipped"] and not (tmp_path / "grown").exists()


def test_a_failed_run_says_so_in_its_report(machine, tmp_path):
    site, std, artifact = machine
    with pytest.raises(SystemExit):
        gpu_run.main(["--out", str(tmp_path / "out"), "--site-packages", str(site), "--stdlib",
                      "none", "--decontam", str(artifact), "--workers", "1",
                      "--set", "train.device=cpu", "train.batch_size=100000"])
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["status"].startswith("failed: SystemExit") and "cannot fill" in report["status"]
    assert (tmp_path / "out" / "corpus_manifest.json").is_file()


def test_a_corpus_that_breaks_ends_the_corpus_not_the_run(machine, monkeypatch, tmp_path):
    """A broken pool (a worker killed, say) mid-corpus: training goes on with what it has."""
    site, std, artifact = machine
    real, calls = corpus._process_many, []

    def breaks_after_three(items):
        calls.append(items)
        if len(calls) > 3:
            raise RuntimeError("pool broke")
        return real(items)
    monkeypatch.setattr(corpus, "_process_many", breaks_after_three)
    out = tmp_path / "out"
    assert gpu_run.main([
        "--out", str(out), "--site-packages", str(site), "--stdlib", str(std), "--decontam",
        str(artifact), "--workers", "1", "--budget-s", "25", "--first-share", "0",
        "--export-s", "1", "--work", str(tmp_path / "work"),
        "--set", "train.device=cpu", "train.batch_size=2", "data.seq_len=32",
        "train.compile=false", "train.threads=1", "train.eval_batches=1",
        "optim.warmup_steps=10"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["status"] == "done" and report["steps"] > 0
    assert report["corpus_error"] == "RuntimeError: pool broke"
    manifest = json.loads((out / "corpus_manifest.json").read_text())
    assert manifest["unprocessed_files"] > 0 and not manifest["corpus_done"]


def test_an_odd_file_is_dropped_not_fatal(monkeypatch, tmp_path):
    def boom(item):
        raise RuntimeError("odd")
    monkeypatch.setattr(corpus, "_process", boom)
    assert corpus._process_many([(3, "x.py")]) == [{"i": 3, "drop": "error"}]
    text = "s = 'é'\r\nt = 'ü'\rprint(s)\n"
    raw = text.encode()
    assert all(0 <= a < b <= len(raw) for a, b in corpus.python_byte_spans(text))
    assert "print(s)" in {raw[a:b].decode() for a, b in corpus.python_byte_spans(text)}


def test_the_shipped_models_heldout_stdlib_files_stay_held_out():
    # training.eval.evaluate's held-out spans come from the stdlib files the first run held out
    # (key "python3.11/<path>"); a warm start on any machine must never train on them.
    from training.data.packing import eval_split, read_corpus
    from training.run import recipes

    docs = read_corpus(recipes.default_model_cpu().data)
    shipped = [d.path for d in docs if eval_split(f"python3.11/{d.path.split('/', 1)[1]}",
                                                   0.03)]
    assert shipped, "the stdlib has held-out files"
    for path in shipped:
        rel = "stdlib/" + path.split("/", 1)[1]
        assert corpus.held_out(corpus.STDLIB_PACKAGE, rel, 0.0)
        assert not corpus.held_out("somepackage", rel, 0.0)   # only the stdlib's are pinned
    trained = [d.path for d in docs if d.path not in set(shipped)]
    assert not any(corpus.held_out(corpus.STDLIB_PACKAGE, "stdlib/" + p.split("/", 1)[1], 0.0)
                   for p in trained)


def test_the_run_is_planned_again_at_the_last_warm_up_step(monkeypatch, tmp_path):
    """The calibration's few steps can misjudge the step time (compilation, a busy machine):
    at the end of the warm-up the cosine is planned again from the steps timed since."""
    clock = [1000.0]
    monkeypatch.setattr(gpu_run.time, "monotonic", lambda: clock[0])

    class FakeTrainer:
        step = 8
        recipe = gpu_run.recipes.get("default_model_gpu")   # warm-up: 100 steps
        planned = None

        def set_total_steps(self, steps):
            self.planned = steps

    trainer, report = FakeTrainer(), gpu_run.Report(tmp_path / "report.json")
    on_step = gpu_run.replan_at_warmup_end(trainer, deadline=1000.0 + 1000.0, report=report)
    for step in range(9, 100):
        clock[0] += 1.3                        # calibration had said more, say 1.7 s
        trainer.step = step
        on_step(trainer)
        assert trainer.planned is None or step == 99
    step_s = (clock[0] - 1000.0) / 91
    expected = 99 + int((2000.0 - clock[0]) / step_s)
    assert step_s == pytest.approx(1.3) and expected == 99 + 678   # ~880 s left at 1.3 s
    assert trainer.planned == expected
    assert report.data["replanned"] == {"at_step": 99, "seconds_per_step": pytest.approx(1.3),
                                        "planned_steps": trainer.planned}
    trainer.step = 100
    on_step(trainer)                           # past the warm-up: never again
    assert trainer.planned == expected
