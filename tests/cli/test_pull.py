"""``coda-lsp pull ID`` and ``--model ID``: the real huggingface_hub client against the
Hub-shaped test server; every failure is one line naming the cause and the fix."""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

import pytest
from hubkit import REFERENCE, FakeHub, coda_lsp, hub_env, needs_reference

pytestmark = needs_reference


@pytest.fixture(scope="module")
def hub():
    with FakeHub() as hub:
        hub.add("org/tiny", REFERENCE)
        hub.add("org/private", REFERENCE, private=True)
        hub.add("org/gated", REFERENCE, gated=True)
        yield hub


def one_line(done) -> str:
    """The one error line (huggingface_hub's progress bars may come before it)."""
    assert done.returncode == 2, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.startswith("coda-lsp:")]
    assert len(lines) == 1 and done.stderr.rstrip().endswith(lines[0]), done.stderr
    return lines[0]


def test_pull_prints_the_folder_then_works_offline_with_no_request(hub, tmp_path):
    env = hub_env(hub, tmp_path / "hf")
    done = coda_lsp("pull", "org/tiny", env=env)
    assert done.returncode == 0, done.stderr
    folder = Path(done.stdout.strip())
    assert (folder / "model.safetensors").is_file()
    asked = len(hub.requests)
    offline = coda_lsp("pull", "org/tiny", env={**env, "HF_HUB_OFFLINE": "1"})
    assert offline.returncode == 0, offline.stderr
    assert Path(offline.stdout.strip()) == folder and len(hub.requests) == asked


def test_offline_without_the_cache_says_how_to_fetch_it(hub, tmp_path):
    env = hub_env(hub, tmp_path / "hf", HF_HUB_OFFLINE="1")
    line = one_line(coda_lsp("pull", "org/tiny", env=env))
    assert line == ("coda-lsp: org/tiny is not in the cache and HF_HUB_OFFLINE=1: fetch it "
                    "once online with `coda-lsp pull org/tiny`")


@pytest.mark.parametrize("ref, needle", [
    ("org/private", "the Hub answered 401 (private, or no such repository): log in "
                    "(`hf auth login`) or set HF_TOKEN"),
    ("org/gated", "org/gated is gated: accept its terms on the Hub page"),
    ("org/missing", "org/missing: no such model on the Hub (404)"),
    ("org/tiny@v9", "no revision 'v9' in org/tiny: give an existing branch, tag or commit"),
])
def test_each_hub_refusal_is_one_line_with_its_fix(hub, tmp_path, ref, needle):
    assert needle in one_line(coda_lsp("pull", ref, env=hub_env(hub, tmp_path / "hf")))


def test_a_token_opens_the_private_repo_and_a_wrong_one_is_named(hub, tmp_path):
    env = hub_env(hub, tmp_path / "hf", HF_TOKEN=hub.token)
    assert coda_lsp("pull", "org/private", env=env).returncode == 0
    wrong = hub_env(hub, tmp_path / "hf2", HF_TOKEN="hf_wrong")
    assert one_line(coda_lsp("pull", "org/private", env=wrong)) == (
        "coda-lsp: org/private: the Hub refused the token (401): set a valid HF_TOKEN or log "
        "in again (`hf auth login`)")


def test_a_corrupt_cached_file_is_refused_and_force_fetches_it_again(hub, tmp_path):
    env = hub_env(hub, tmp_path / "hf")
    folder = Path(coda_lsp("pull", "org/tiny", env=env).stdout.strip())
    blob = (folder / "model.safetensors").resolve()  # the cache's blob behind the link
    blob.write_bytes(blob.read_bytes()[:-4096])
    line = one_line(coda_lsp("pull", "org/tiny", env=env))
    assert "model.safetensors is incomplete" in line
    assert line.endswith("run `coda-lsp pull org/tiny --force`")
    (tmp_path / "x.py").write_text("x = 1\n")
    fill = coda_lsp("fill", "--model", "org/tiny", f"{tmp_path / 'x.py'}:1:1", env=env)
    assert "model.safetensors is incomplete" in one_line(fill)  # never loaded
    assert coda_lsp("pull", "org/tiny", "--force", env=env).returncode == 0
    assert coda_lsp("pull", "org/tiny", env=env).returncode == 0


def test_fill_takes_a_hub_id(hub, tmp_path):
    source = tmp_path / "x.py"
    source.write_text("def add(a, b):\n    return <FILL>\n")
    done = coda_lsp("fill", "--model", "org/tiny", "--steps", "2", "--holes", str(source),
                    env=hub_env(hub, tmp_path / "hf"))
    assert done.returncode in (0, 1), done.stderr  # the tiny reference model may fill nothing
    assert "span(s) in" in done.stderr


def dead_endpoint() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"  # closed: connections are refused


def test_no_network_uses_the_cache_and_without_it_says_so(hub, tmp_path):
    env = hub_env(hub, tmp_path / "hf")
    folder = coda_lsp("pull", "org/tiny", env=env).stdout.strip()
    down = {**env, "HF_ENDPOINT": dead_endpoint()}
    cached = coda_lsp("pull", "org/tiny", env=down)
    assert cached.returncode == 0 and cached.stdout.strip() == folder, cached.stderr
    line = one_line(coda_lsp("pull", "org/tiny", env={**down, "HF_HOME": str(tmp_path / "e")}))
    assert line.startswith("coda-lsp: org/tiny: cannot reach the Hub and it is not cached (")
    assert line.endswith("check the network, then `coda-lsp pull org/tiny`")


@pytest.fixture
def small_disk(tmp_path):
    """An 8 MB tmpfs (root only): a real 'no space left on device'."""
    mount = tmp_path / "small"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mount)],
                      capture_output=True).returncode != 0:
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    yield mount
    subprocess.run(["umount", str(mount)], check=False)


def test_a_full_disk_is_one_line_naming_the_cache(hub, small_disk):
    line = one_line(coda_lsp("pull", "org/tiny", env=hub_env(hub, small_disk / "hf")))
    assert line.startswith("coda-lsp: org/tiny: no space left on the disk of the HF cache (")
    assert "free space or point HF_HOME at a larger disk" in line
    assert not list(small_disk.rglob("*.incomplete"))
