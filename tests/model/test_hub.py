"""coda_model.hub: a folder stays a folder; a Hub id is downloaded by the real huggingface_hub
client from a Hub-shaped local server (tests/hubkit.py), checked whole, and then reproduces
the reference logits; a cut transfer resumes; a partial or corrupt file is never loaded."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hubkit import REFERENCE, FakeHub, hub_env, needs_reference

from coda_model import load_model
from coda_model.hub import ALLOW_PATTERNS, HubError, HubId, parse, verify

RESOLVE = ("import sys\nfrom coda_model.hub import HubError, resolve\n"
           "try:\n    print(resolve(sys.argv[1]))\nexcept HubError as exc:\n"
           "    print(exc, file=sys.stderr)\n    sys.exit(2)\n")


def resolve_in_process(ref: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    """``resolve`` in a fresh process: huggingface_hub reads HF_* when it is imported."""
    return subprocess.run([sys.executable, "-c", RESOLVE, ref], capture_output=True, text=True,
                          env=env, timeout=300)


def test_a_folder_is_a_folder_and_owner_name_is_a_hub_id(tmp_path):
    (tmp_path / "org" / "local").mkdir(parents=True)
    assert parse(str(tmp_path)) == tmp_path
    assert parse("Salesforce/CoDA-v0-Instruct") == HubId("Salesforce/CoDA-v0-Instruct")
    assert parse("org/name@v1.0") == HubId("org/name", "v1.0")
    assert parse("./org/name") == Path("./org/name")  # spelled as a path: never the network
    assert parse("a/b/c") == Path("a/b/c")
    assert "config.json" in ALLOW_PATTERNS and "*.safetensors" in ALLOW_PATTERNS


@needs_reference
def test_verify_refuses_a_truncated_weight_file_and_a_missing_shard(tmp_path):
    folder = tmp_path / "m"
    shutil.copytree(REFERENCE, folder)
    verify(folder)  # whole
    weights = folder / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) - 1000])
    with pytest.raises(HubError, match=r"model.safetensors is incomplete \(\d+ of \d+ bytes\)"):
        verify(folder, "org/m")
    weights.write_bytes(b"\x00" * 4)
    with pytest.raises(HubError, match="truncated"):
        verify(folder)
    weights.unlink()
    (folder / "model.safetensors.index.json").write_text(json.dumps(
        {"weight_map": {"a": "model-00001-of-00002.safetensors"}}))
    with pytest.raises(HubError, match="model-00001-of-00002.safetensors is missing: run "
                                       "`coda-lsp pull org/m --force`"):
        verify(folder, "org/m")


@needs_reference
def test_a_hub_id_downloads_only_what_the_loader_reads_and_matches_the_golden_logits(tmp_path):
    golden = json.loads((REFERENCE / "golden.json").read_text())
    with FakeHub() as hub:
        hub.add("org/tiny", REFERENCE)
        done = resolve_in_process("org/tiny", hub_env(hub, tmp_path / "hf"))
    assert done.returncode == 0, done.stderr
    folder = Path(done.stdout.strip())
    assert folder.is_relative_to(tmp_path / "hf" / "hub" / "models--org--tiny" / "snapshots")
    names = {p.name for p in folder.iterdir()}
    assert "golden.json" not in names and {"config.json", "model.safetensors"} <= names
    model = load_model(folder, dtype=torch.float32)
    for case in golden["forward"]:
        with torch.no_grad():
            logits = model(torch.tensor([case["input_ids"]]))[0]
        assert logits.argmax(-1).tolist() == case["argmax"]
        torch.testing.assert_close(logits[:, :32], torch.tensor(case["logits_first_32"]),
                                   atol=1e-4, rtol=0)


@needs_reference
def test_a_cut_transfer_resumes_within_the_call_with_a_range_request(tmp_path):
    with FakeHub() as hub:
        hub.add("org/tiny", REFERENCE)
        hub.cut("model.safetensors")  # 3/4 of the file, then the connection drops
        done = resolve_in_process("org/tiny", hub_env(hub, tmp_path / "hf"))
        ranges = hub.gets("model.safetensors")
    assert done.returncode == 0, done.stderr
    assert ranges[0] is None and ranges[1].startswith("bytes=") and ranges[1] != "bytes=0-"
    folder = Path(done.stdout.strip())
    assert (folder / "model.safetensors").read_bytes() == (REFERENCE / "model.safetensors")\
        .read_bytes()


@needs_reference
def test_a_link_that_keeps_dropping_is_one_line_and_leaves_nothing_half_written(tmp_path):
    home = tmp_path / "hf"
    with FakeHub() as hub:
        hub.add("org/tiny", REFERENCE)
        hub.cut("model.safetensors", times=99)
        done = resolve_in_process("org/tiny", hub_env(hub, home))
        assert done.returncode == 2
        line = done.stderr.strip().splitlines()[-1]
        assert line.startswith("org/tiny: download interrupted (") and "run it again" in line
        assert not list(home.rglob("*.incomplete"))  # the library drops the partial file
        assert not list(home.rglob("model.safetensors"))  # never a half file to load
        fetched = len(hub.gets("tokenizer.json"))
        hub.cuts.clear()
        again = resolve_in_process("org/tiny", hub_env(hub, home))
        assert again.returncode == 0, again.stderr
        assert len(hub.gets("tokenizer.json")) == fetched  # complete files are kept
