"""The unseen-repository set: its manifest is permissive and disjoint from the corpus, the fetch
checks each sdist's sha256 before unpacking it, and the harness fills holes through the
server's path from a model folder and from a Hub id, reporting per repository and kind."""

from __future__ import annotations

import importlib.util
import io
import json
import re
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from hubkit import FakeHub, hub_env

from training.data import heldout, unseen
from training.data.heldout import Example
from training.eval import unseen as unseen_eval

ROOT = Path(__file__).resolve().parents[2]
FINETUNE_REPOS = {"boltons", "tomlkit", "marshmallow", "mistune"}  # the fine-tune tests' own

FAKE_MODULE = '''"""A small module, standing in for a repository."""

import os


def join(a, b):
    """Both parts, joined."""
    path = os.path.join(a, b)
    return path


class Box:
    def __init__(self, value):
        self.value = value
        self.seen = 0

    def take(self):
        self.seen += 1
        return self.value
'''


def norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_the_manifest_is_permissive_pinned_and_disjoint_from_the_training_corpus():
    repos, exclude = unseen.manifest()
    assert 4 <= len(repos) <= 6 and "tests/" in exclude
    trained = set()
    for path in ROOT.glob("model/corpus_manifest*.json"):
        trained |= {norm(p["package"]) for p in json.loads(path.read_text())["packages"]}
    assert len(trained) > 100  # both manifests were read
    for repo in repos:
        assert repo.licence in unseen.PERMISSIVE and repo.why, repo
        assert re.fullmatch(r"[0-9a-f]{64}", repo.sha256), repo
        assert norm(repo.sdist).startswith(norm(f"{repo.name}-{repo.version}")), repo
        assert repo.sdist.endswith(".tar.gz"), repo
        assert norm(repo.name) not in trained | FINETUNE_REPOS, repo.name


def fake_sdist(folder: Path, name: str, version: str, source: str) -> Path:
    """A real sdist pip can prepare offline (setuptools, no build isolation)."""
    top = f"{name}-{version}"
    files = {
        "pyproject.toml": "[build-system]\nrequires = ['setuptools']\n"
                          "build-backend = 'setuptools.build_meta'\n\n"
                          f"[project]\nname = '{name}'\nversion = '{version}'\n",
        "PKG-INFO": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
        "LICENSE": "MIT License\n",
        f"{name}/__init__.py": source,
        "tests/test_it.py": "def test_it():\n    assert True\n",
    }
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{top}.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        for rel, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(f"{top}/{rel}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def write_manifest(path: Path, entries: list[dict]) -> Path:
    path.write_text(json.dumps({"exclude": ["tests/"], "repos": entries}))
    return path


def entry(name: str, version: str, sha256: str) -> dict:
    return {"name": name, "version": version, "sdist": f"{name}-{version}.tar.gz",
            "sha256": sha256, "licence": "MIT", "why": "test"}


def test_fetch_unpacks_a_matching_sdist_and_refuses_one_whose_sha256_differs(tmp_path, capsys):
    index = tmp_path / "index"
    sdist = fake_sdist(index, "fakerepo", "1.0", FAKE_MODULE)
    pip_args = f"--no-index --find-links {index} --no-build-isolation"
    cache = tmp_path / "cache"
    good = write_manifest(tmp_path / "good.json",
                          [entry("fakerepo", "1.0", unseen.sha256_of(sdist))])
    assert unseen_eval.main(["fetch", "--cache", str(cache), "--manifest", str(good),
                             "--pip-args", pip_args]) == 0
    folder = cache / "fakerepo-1.0"
    assert (folder / "fakerepo" / "__init__.py").read_text() == FAKE_MODULE
    assert (folder / "LICENSE").is_file() and not (folder / "pyproject.toml").exists()
    assert [rel for rel, _ in unseen.python_files(folder, ["tests/"])] == ["fakerepo/__init__.py"]

    wrong = write_manifest(tmp_path / "wrong.json", [entry("fakerepo", "1.0", "0" * 64)])
    assert unseen_eval.main(["fetch", "--cache", str(tmp_path / "c2"), "--manifest", str(wrong),
                             "--pip-args", pip_args]) == 2
    err = capsys.readouterr().err
    assert "sha256" in err and unseen.sha256_of(sdist) in err and "not unpacked" in err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "c2" / "fakerepo-1.0").exists()


def test_holes_are_whole_statements_and_short_bodies():
    examples = unseen.sample_holes([("fake/mod.py", FAKE_MODULE)], "fake", lines=50, blocks=50)
    lines = {e.middle for e in examples if e.kind == "line"}
    blocks = {e.middle for e in examples if e.kind == "block"}
    assert "path = os.path.join(a, b)" in lines and "import os" in lines
    assert "self.seen += 1\n        return self.value" in blocks
    for e in examples:
        assert e.prefix + e.middle + e.suffix == FAKE_MODULE
        assert not e.prefix.rsplit("\n", 1)[-1].strip()  # the hole starts its line
        assert e.id.startswith("fake/fake/mod.py#") and unseen.repo_of(e) == "fake"


def fake_cache(tmp_path: Path) -> tuple[Path, Path]:
    cache = tmp_path / "cache"
    for name in ("alpha", "beta"):
        folder = cache / f"{name}-1.0"
        (folder / name).mkdir(parents=True)
        (folder / name / "core.py").write_text(FAKE_MODULE)
        (folder / ".sha256").write_text("0" * 64 + "\n")
    manifest = write_manifest(tmp_path / "m.json", [entry("alpha", "1.0", "0" * 64),
                                                    entry("beta", "1.0", "0" * 64)])
    return cache, manifest


FIELDS = {"repo", "kind", "spans", "exact_match", "edit_similarity", "parses", "offered",
          "best_similarity", "floor_exact", "floor_similarity", "ms_p50"}


def check_summary(summary: list[dict]) -> None:
    groups = {(s["repo"], s["kind"]): s for s in summary}
    assert {("alpha", "line"), ("alpha", "block"), ("beta", "all"), ("all", "line"),
            ("all", "block"), ("all", "all")} <= set(groups)
    assert groups["all", "all"]["spans"] == 4
    assert groups["all", "line"]["spans"] == 2 and groups["alpha", "block"]["spans"] == 1
    for s in summary:
        assert set(s) == FIELDS
        for key in FIELDS - {"repo", "kind", "spans", "ms_p50"}:
            assert 0.0 <= s[key] <= 1.0, (key, s)


def load_driver():
    spec = importlib.util.spec_from_file_location("eval_unseen",
                                                  ROOT / "benchmarks" / "eval_unseen.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_harness_fills_holes_from_a_model_folder_through_the_server_path(tmp_path, capsys,
                                                                             tiny_model_dir):
    cache, manifest = fake_cache(tmp_path)
    calls = []
    server = load_driver().hole_fill

    def hole_fill(folder):
        fill = server(folder)

        def counted(prefix, suffix):
            calls.append((folder, prefix, suffix))
            return fill(prefix, suffix)
        return counted

    result = unseen_eval.evaluate(str(tiny_model_dir), hole_fill, cache=cache, lines=1,
                                  blocks=1, seed=3, out=tmp_path / "out", manifest=manifest)
    assert len(calls) == 4 and all(folder == tiny_model_dir for folder, _, _ in calls)
    check_summary(result["summary"])
    rows = result["rows"]
    assert len(rows) == 4 and {r["kind"] for r in rows} == {"line", "block"}
    for r in rows:  # the floor is the line above, from the hole's column
        assert r["floor_similarity"] == pytest.approx(
            heldout.edit_similarity(r["floor"], r["truth"]))
    saved = json.loads((tmp_path / "out" / "unseen.json").read_text())
    assert saved["summary"] == result["summary"] and saved["repos"] == ["alpha==1.0",
                                                                         "beta==1.0"]
    assert "| all | all | 4 |" in (tmp_path / "out" / "unseen.md").read_text()
    capsys.readouterr()
    assert unseen_eval.main(["report", str(tmp_path / "out")]) == 0  # rows saved as they came
    assert result["table"] in capsys.readouterr().out
    again = unseen_eval.evaluate(str(tiny_model_dir), lambda f: lambda p, s: ("", ""),
                                 cache=cache, lines=1, blocks=1, seed=3, manifest=manifest)
    assert [r["id"] for r in again["rows"]] == [r["id"] for r in rows]  # seeded
    assert again["summary"][-1]["offered"] == 0.0 and again["summary"][-1]["parses"] == 0.0


def test_the_harness_takes_a_hub_id(tmp_path, tiny_model_dir):
    cache, manifest = fake_cache(tmp_path)
    with FakeHub() as hub:
        hub.add("org/tiny", tiny_model_dir)
        done = subprocess.run(
            [sys.executable, str(ROOT / "benchmarks" / "eval_unseen.py"), "run", "--model",
             "org/tiny", "--cache", str(cache), "--manifest", str(manifest), "--lines", "1",
             "--blocks", "1", "--threads", "1", "--out", str(tmp_path / "out")],
            capture_output=True, text=True, env=hub_env(hub, tmp_path / "hf"), timeout=600)
    assert done.returncode == 0, done.stderr
    saved = json.loads((tmp_path / "out" / "unseen.json").read_text())
    assert saved["model"] == "org/tiny"
    assert Path(saved["folder"]).is_relative_to(tmp_path / "hf" / "hub" / "models--org--tiny")
    check_summary(saved["summary"])
    assert "| all | all | 4 |" in done.stdout


def test_run_without_the_fetch_says_how_to_fetch(tmp_path, capsys):
    manifest = write_manifest(tmp_path / "m.json", [entry("alpha", "1.0", "0" * 64)])
    code = unseen_eval.main(["run", "--model", str(tmp_path), "--cache", str(tmp_path / "none"),
                             "--manifest", str(manifest)], hole_fill=lambda f: None)
    assert code == 2
    assert "python -m training.unseen fetch" in capsys.readouterr().err


def test_training_evaluate_takes_the_unseen_task_beside_the_stdlib_one(tmp_path):
    from training.eval import evaluate

    cache = tmp_path / "cache"
    repos, _ = unseen.manifest()
    for repo in repos:
        (cache / repo.folder / "pkg").mkdir(parents=True)
        (cache / repo.folder / "pkg" / "core.py").write_text(FAKE_MODULE)
        (cache / repo.folder / ".sha256").write_text(repo.sha256 + "\n")
    found = evaluate.load_examples(["unseen"], 5, 0, tmp_path, "default_model_cpu", 4, None,
                                   unseen_cache=cache)
    assert len(found) == 5 and {e.task for e in found} == {"unseen"}
    assert {unseen.repo_of(e) for e in found} <= {r.name for r in repos}
    scored = evaluate.Scorer(10.0, 512)(found[0], found[0].middle)
    assert scored["exact"] and scored["parses"] is True


def test_shards_split_the_holes_round_robin_over_repositories_and_kinds():
    examples = [Example("unseen", f"{repo}/m.py#{i}", "", "x", "", kind=kind)
                for repo in ("a", "b") for kind in ("line", "block") for i in range(3)]
    order = unseen_eval.interleave(examples)
    assert sorted(e.id + e.kind for e in order) == sorted(e.id + e.kind for e in examples)
    assert {(unseen.repo_of(e), e.kind) for e in order[:4]} == {
        ("a", "line"), ("a", "block"), ("b", "line"), ("b", "block")}
    shards = [order[i::3] for i in range(3)]
    assert sum(map(len, shards)) == len(examples)
