"""``training.finetune --base`` takes a Hub id: fetched through coda_model.hub (the test's
Hub-shaped server), or one line saying why not."""

from __future__ import annotations

import subprocess
import sys

from hubkit import REFERENCE, FakeHub, hub_env, needs_reference

pytestmark = needs_reference


def finetune(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "training.finetune", *args],
                          capture_output=True, text=True, env=env, timeout=300)


def test_base_hub_id_is_fetched_or_refused_in_one_line(tmp_path):
    with FakeHub() as hub:
        hub.add("org/tiny", REFERENCE)
        env = hub_env(hub, tmp_path / "hf")
        missing = finetune("--base", "org/missing", "--data", str(tmp_path / "none"),
                           "--out", str(tmp_path / "o"), env=env)
        fetched = finetune("--base", "org/tiny", "--data", str(tmp_path / "none"),
                           "--out", str(tmp_path / "o"), env=env)
    assert missing.returncode == 2
    assert missing.stderr.strip().splitlines()[-1] == (
        "python -m training.finetune: error: --base org/missing: no such model on the Hub "
        "(404) and no folder of that name here: check the id")
    # the base came down and passed its checks: the next problem named is the data
    assert fetched.returncode == 2 and "--data" in fetched.stderr.strip().splitlines()[-1]
    assert list((tmp_path / "hf" / "hub" / "models--org--tiny").rglob("model.safetensors"))
