"""The VS Code extension, packaged (.vsix) and installed into a real code-server, driven by
headless Chromium (Playwright): ghost text appears while typing a Python file and Tab inserts
it; "Coda: Fill hole" fills a `...` body (Cancel on its notification stops it); the extension's
key asks for a suggestion by hand; a server that cannot start is reported once, in its own
words, and not restarted; a Hub model's download shows its percent in the status bar. Screenshots go
to artifacts/editors/."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import threading
from pathlib import Path

import editor_tools
import pytest
from hubkit import REFERENCE, FakeHub, hub_env, needs_reference

CODE_SERVER = editor_tools.code_server()
CHROMIUM = editor_tools.chromium()
DRIVER = editor_tools.playwright_driver()
VSIX = editor_tools.vsix()
NODE = editor_tools.node24()

_missing = [
    name
    for name, found in [
        ("code-server", CODE_SERVER),
        ("chromium", CHROMIUM),
        ("playwright-core (tests/editors/driver)", DRIVER),
        ("the packaged extension editors/vscode/coda-lsp.vsix", VSIX),
        ("Node 24", NODE),
    ]
    if not found
]
pytestmark = pytest.mark.skipif(
    bool(_missing), reason=f"missing {', '.join(_missing)} ({editor_tools.SETUP_HINT})"
)

TIMEOUT_S = 240
SAMPLE = "import os\n\n\ndef main():\n    path = os.getcwd()\n"
TYPED = "    total ="
HOLE = "def answer():\n    ...\n\n\nprint(answer())\n"


class CodeServer:
    """code-server on a free loopback port, in its own process group (killed as a tree)."""

    def __init__(self, workspace: Path, home: Path, server_cmd: list[str], coda_settings: dict,
                 env_extra: dict):
        self.user_data = home / "user-data"
        self.extensions = home / "extensions"
        settings_dir = self.user_data / "User"
        settings_dir.mkdir(parents=True)
        user_settings = _user_settings(server_cmd, coda_settings)
        (settings_dir / "settings.json").write_text(json.dumps(user_settings))
        common = [f"--user-data-dir={self.user_data}", f"--extensions-dir={self.extensions}"]
        # code-server's launcher runs `node` from PATH: it must be Node 24.
        path = os.pathsep.join([str(Path(NODE).parent), os.environ.get("PATH", "")])
        env = {**os.environ, **env_extra, "PATH": path}
        install = subprocess.run(
            [CODE_SERVER, *common, "--install-extension", str(VSIX)],
            capture_output=True, text=True, timeout=TIMEOUT_S, env=env,
        )
        assert install.returncode == 0, (install.stdout + install.stderr)[-3000:]
        self.port = editor_tools.free_port()
        self.output: list[str] = []
        self._listening = threading.Event()
        self.process = subprocess.Popen(
            [CODE_SERVER, *common, "--bind-addr", f"127.0.0.1:{self.port}", "--auth", "none",
             "--disable-telemetry", "--disable-update-check", "--disable-workspace-trust",
             str(workspace)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            text=True, env=env, start_new_session=True,
        )
        threading.Thread(target=self._read_output, daemon=True).start()
        if not self._listening.wait(TIMEOUT_S):
            self.close()
            raise RuntimeError("code-server did not start:\n" + "".join(self.output))

    def _read_output(self) -> None:
        for line in self.process.stdout:
            self.output.append(line)
            if "HTTP server listening" in line:
                self._listening.set()

    def close(self) -> None:
        editor_tools.kill_tree(self.process)


def _user_settings(server_cmd: list[str], coda_settings: dict) -> dict:
    return {
        **{f"coda.{name}": value for name, value in coda_settings.items()},
        "coda.server.command": server_cmd,
        "coda.steps": 4,  # sent as initializationOptions; the test checks it arrives
        "editor.inlineSuggest.enabled": True,
        "editor.quickSuggestions": {"other": "off", "comments": "off", "strings": "off"},
        "editor.suggestOnTriggerCharacters": False,
        "editor.autoClosingBrackets": "never",
        "workbench.startupEditor": "none",
        "workbench.tips.enabled": False,
        "workbench.enableExperiments": False,
        "extensions.ignoreRecommendations": True,
        "security.workspace.trust.enabled": False,
        "telemetry.telemetryLevel": "off",
        "update.mode": "none",
        "files.autoSave": "off",
        "chat.disableAIFeatures": True,
        "workbench.secondarySideBar.defaultVisibility": "hidden",
    }


def _drive(code_server: CodeServer, workspace: Path, screenshots: Path, **scenario) -> dict:
    """Run one driver scenario (tests/editors/driver/vscode.mjs) and return what it saw."""
    request = {
        "url": f"http://127.0.0.1:{code_server.port}/?folder={workspace}",
        "chromium": CHROMIUM,
        "workspace": str(workspace),
        "screenshots": str(screenshots),
        "timeoutMs": TIMEOUT_S * 1000 // 2,
        **scenario,
    }
    driver = subprocess.Popen(
        [NODE, str(DRIVER / "vscode.mjs"), json.dumps(request)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )
    try:
        out, err = driver.communicate(timeout=TIMEOUT_S * 2)
    finally:
        editor_tools.kill_tree(driver)  # the browser too, should the driver have died
    assert driver.returncode == 0, err
    seen = json.loads(out.strip().splitlines()[-1])
    assert seen.get("ok"), json.dumps(seen, indent=1) + "".join(code_server.output[-40:])
    return seen


def test_ghost_text_tab_and_fill_hole(server, tmp_path, artifacts_dir):
    workspace = tmp_path / "workspace"
    workspace.mkdir()
    (workspace / "sample.py").write_text(SAMPLE)
    (workspace / "hole.py").write_text(HOLE)
    screenshots = artifacts_dir / f"vscode-{server.name}"
    screenshots.mkdir(parents=True, exist_ok=True)
    standin_log = tmp_path / "standin.jsonl"
    code_server = CodeServer(workspace, tmp_path / "home", server.command, server.settings,
                             {"CODA_STANDIN_LOG": str(standin_log)})
    try:
        seen = _drive(code_server, workspace, screenshots, scenario="edit",
                      completionFile="sample.py", typed=TYPED, holeFile="hole.py", holeLine=2)
    finally:
        code_server.close()

    ghost = seen["ghostText"]
    assert ghost.strip(), seen
    after_tab = seen["afterTab"]
    assert after_tab.startswith(SAMPLE + TYPED), after_tab
    inserted = after_tab[len(SAMPLE + TYPED):]
    # What VS Code showed is what Tab inserted (modulo how multi-line ghost text is rendered).
    assert "".join(inserted.split()) == "".join(ghost.split())

    after_fill = seen["afterFill"]
    assert after_fill.startswith("def answer():\n")
    assert after_fill.rstrip().endswith("print(answer())")
    assert after_fill != HOLE

    if server.is_standin:
        assert inserted == " coda_value = 42"
        assert after_fill == HOLE.replace("...", "return 42")
        sent = [json.loads(line) for line in standin_log.read_text().splitlines()]
        init = next(entry["payload"] for entry in sent if entry["kind"] == "initializationOptions")
        assert init["steps"] == 4 and init["enabled"] is True
        assert not any(key.startswith(("server", "trace")) for key in init)
        assert " ms" in seen["statusAfterCompletion"]  # the status bar shows the latency
        # Toggle completions reached the server as workspace/didChangeConfiguration.
        changes = [entry["payload"] for entry in sent if entry["kind"] == "didChangeConfiguration"]
        assert changes and changes[-1] == {"coda": {**init, "enabled": False}}
    assert "completions off" in seen["statusAfterToggle"]
    assert (screenshots / "vscode-ghost-text.png").is_file()


def test_trigger_key_asks_for_a_suggestion(tmp_path, artifacts_dir):
    """The key the extension binds (README.md) shows ghost text where nothing was typed."""
    workspace = tmp_path / "workspace"
    workspace.mkdir()
    (workspace / "sample.py").write_text(SAMPLE)
    standin_log = tmp_path / "standin.jsonl"
    code_server = CodeServer(workspace, tmp_path / "home", editor_tools.standin_server_command(),
                             {}, {"CODA_STANDIN_LOG": str(standin_log)})
    try:
        seen = _drive(code_server, workspace, artifacts_dir, scenario="manualTrigger",
                      completionFile="sample.py", triggerLine=5, triggerKey="Control+Alt+Space")
    finally:
        code_server.close()
    assert seen["ghostText"] == " coda_value = 42"
    sent = [json.loads(line) for line in standin_log.read_text().splitlines()]
    asked = [entry["payload"] for entry in sent if entry["kind"] == "inlineCompletion"]
    # Asked for by hand (triggerKind Invoked = 1) at the end of `    path = os.getcwd()`.
    assert {"line": 4, "character": len("    path = os.getcwd()"), "triggerKind": 1} in asked
    assert "`Ctrl+Alt+Space`" in (editor_tools.REPO / "editors/vscode/README.md").read_text()


def test_bad_model_path_is_reported_once_and_not_restarted(tmp_path, artifacts_dir):
    """A server that exits at startup: one error toast, one line naming the setting to change,
    "Show log" on it, no restart loop, one toast (not two) after a restart that fails again,
    nothing in the log but the server's line and ours; once
    the cause is fixed and the server runs, the toast is gone."""
    bad_model = tmp_path / "no-such-model"
    path = os.pathsep.join([str(editor_tools.REPO), os.environ.get("PYTHONPATH", "")])
    env = {"PYTHONPATH": path}
    server = [sys.executable, "-m", "coda_lsp"]
    direct = subprocess.run([*server, "--model", str(bad_model)], capture_output=True,
                            text=True, timeout=60, env={**os.environ, **env})
    assert direct.returncode != 0 and direct.stderr.strip(), direct
    server_line = direct.stderr.strip().splitlines()[-1]

    starts = tmp_path / "starts.log"
    wrapper = tmp_path / "coda-lsp"  # counts the starts, then is the real server
    wrapper.write_text(f'#!/bin/sh\necho start >> {shlex.quote(str(starts))}\n'
                       f'exec {shlex.join(server)} "$@"\n')
    wrapper.chmod(0o755)
    workspace = tmp_path / "workspace"
    workspace.mkdir()
    home = tmp_path / "home"
    code_server = CodeServer(workspace, home, [str(wrapper)],
                             {"server.modelPath": str(bad_model)}, env)
    # The fix: a server that starts (the stand-in, which ignores --model), then a restart.
    fixed = f"#!/bin/sh\nexec {shlex.join(editor_tools.standin_server_command())}\n"
    try:
        seen = _drive(code_server, workspace, artifacts_dir, scenario="startupError",
                      quietMs=5000, againCommand="Coda: Restart server",
                      recoverFiles={str(wrapper): fixed},
                      recoverCommand="Coda: Restart server")
    finally:
        code_server.close()
    errors = [n for n in seen["notifications"] if n["severity"] == "error"]
    assert len(errors) == 1, seen["notifications"]
    message = errors[0]["message"]
    # The server's own line (without --model, with the setting the extension named for it)
    assert "model folder not found" in server_line and "--model DIR" in server_line
    assert message == (f"coda-lsp: the server did not start: model folder not found: {bad_model}"
                       " (set coda.server.modelPath to a model folder)"), message
    assert errors[0]["buttons"] == ["Show log"]
    assert "coda.server.modelPath" in seen["statusAfterError"]
    # Started once, then once more by the restart: no restart loop of its own.
    assert starts.read_text().splitlines() == ["start", "start"]
    assert seen["errorToastsAfterAgain"] == [message], seen  # one toast, not two
    log = _coda_log(home)
    for noise in ("-32097", "Pending response", "    at ", "exited with code",
                  "exited successfully", "Client is not running"):
        assert noise not in log, log
    assert seen["errorToastsAfterRecovery"] == [], seen
    assert "ready" in seen["statusAfterRecovery"]


def _coda_log(home: Path) -> str:
    """The extension's output channel ("Coda") as code-server wrote it to disk."""
    logs = sorted((home / "user-data" / "logs").glob("*/exthost*/coda-lsp.coda-lsp/Coda.log"))
    assert logs, "no Coda.log"
    return "".join(log.read_text() for log in logs)


def test_a_missing_server_command_names_the_path_and_the_fix(tmp_path, artifacts_dir):
    missing = tmp_path / "no-such-dir" / "coda-lsp"
    workspace = tmp_path / "workspace"
    workspace.mkdir()
    code_server = CodeServer(workspace, tmp_path / "home", [str(missing)], {}, {})
    try:
        seen = _drive(code_server, workspace, artifacts_dir, scenario="startupError",
                      quietMs=1000)
    finally:
        code_server.close()
    errors = [n for n in seen["notifications"] if n["severity"] == "error"]
    assert [n["message"] for n in errors] == [
        f"coda-lsp: coda.server.command runs {missing}, which does not exist: set "
        'coda.server.command to the full path of coda-lsp, e.g. ["/path/to/.venv/bin/coda-lsp"]'
    ], seen["notifications"]
    assert errors[0]["buttons"] == ["Show log"]
    assert "ENOENT" not in _coda_log(tmp_path / "home")


BROKEN_HOLE = "def add(a, b):\n    ...  # broken\n"


@pytest.mark.parametrize("choice", [None, "Fill anyway"])
def test_a_refused_fill_leaves_the_buffer_and_fill_anyway_applies(tmp_path, artifacts_dir,
                                                                    choice):
    """The server refuses a hole whose every candidate adds a syntax error (the stand-in, as
    the server): the buffer stays as it was and the warning offers "Fill anyway (…)", which
    applies the best rejected fill."""
    workspace = tmp_path / "workspace"
    workspace.mkdir()
    (workspace / "broken.py").write_text(BROKEN_HOLE)
    log = tmp_path / "standin.jsonl"
    code_server = CodeServer(workspace, tmp_path / "home", editor_tools.standin_server_command(),
                             {}, {"CODA_STANDIN_LOG": str(log)})
    try:
        seen = _drive(code_server, workspace, artifacts_dir, scenario="refusedFill",
                      holeFile="broken.py", holeLine=2, choice=choice)
    finally:
        code_server.close()
    assert seen["refusal"] == ("coda-lsp: no fill for this hole: 3 candidate(s): 3 added a "
                               "syntax error")
    assert seen["refusalButtons"][0] == "Fill anyway (adds a syntax error)", seen
    assert seen["dirtyBeforeChoice"] == 0  # the buffer as it was
    if choice:
        assert seen["afterChoice"] == BROKEN_HOLE.replace("...", "elif a ==")


def test_invoked_suggestions_cycle_with_vscodes_own_keys(tmp_path, artifacts_dir):
    """Asked for by hand, the server's candidates (best first) are cycled with VS Code's own
    next/previous keys (Alt+] / Alt+[), and Tab takes the one shown. (A fill that replaces a
    hole's `...` is not shown as ghost text by VS Code; "Coda: Fill hole" is the way there.)"""
    workspace = tmp_path / "workspace"
    workspace.mkdir()
    (workspace / "sample.py").write_text(SAMPLE)
    code_server = CodeServer(workspace, tmp_path / "home", editor_tools.standin_server_command(),
                             {}, {})
    try:
        seen = _drive(code_server, workspace, artifacts_dir, scenario="cycle",
                      completionFile="sample.py", triggerLine=5, triggerKey="Control+Alt+Space")
    finally:
        code_server.close()
    first, second, third = (" coda_value = 42", " coda_value = 41", " coda_value = 40")
    assert seen["shown"] == [first, second, third, first, third], seen
    assert seen["afterAccept"] == SAMPLE.rstrip("\n") + third + "\n", seen["afterAccept"]


PICK_HOLE = "def add(a, b):\n    ...\n"
PASSING = [["return a + b", 0.9], ["return a - b", 0.8]]  # both parse, both over the bar


def test_several_passing_fills_are_picked_from_a_quick_pick(tmp_path, artifacts_dir,
                                                            tiny_model_dir):
    """The real server with a scripted model (tests/scripted_coda.py) whose two fills both pass
    the contract: "Coda: Fill hole" shows them, best first and preselected, and applies
    nothing; Esc leaves the buffer as it was; Down + Enter applies the second."""
    workspace = tmp_path / "workspace"
    workspace.mkdir()
    (workspace / "add.py").write_text(PICK_HOLE)
    scripted = [sys.executable, str(editor_tools.REPO / "tests" / "scripted_coda.py"),
                "--model", str(tiny_model_dir), "--device", "cpu"]
    code_server = CodeServer(workspace, tmp_path / "home", scripted, {"fillHoleSteps": 4},
                             {"CODA_SCRIPT": json.dumps({"fills": PASSING})})
    try:
        seen = _drive(code_server, workspace, artifacts_dir, scenario="pickedFill",
                      holeFile="add.py", holeLine=2, pick=1)
    finally:
        code_server.close()
    assert seen["title"] == "coda-lsp: 2 fills pass for this hole", seen
    rows = seen["rows"]
    assert len(rows) == 2 and rows[0].startswith("return a + b"), rows
    assert "confidence 0.90" in rows[0] and "(best)" in rows[0], rows
    assert rows[1].startswith("return a - b") and "confidence 0.80" in rows[1], rows
    assert seen["focused"] == rows[0]  # the best, preselected
    assert seen["dirtyWhilePicking"] == 0 and seen["dirtyAfterEscape"] == 0, seen
    assert seen["chosen"] == rows[1]
    assert seen["afterPick"] == PICK_HOLE.replace("...", "return a - b")


SCRIPTED = editor_tools.REPO / "tests" / "scripted_coda.py"
HUB_REPO = "org/tiny-reference"


@needs_reference
def test_a_hub_model_downloads_in_the_status_bar_and_cancel_stops_a_fill(tmp_path,
                                                                          artifacts_dir):
    """The real server started with a Hub id (tests/hubkit.py's local Hub, slowed) and a
    scripted slow model (tests/scripted_coda.py): Coda's status item shows the download's
    percent until the model is ready; "Coda: Fill hole" shows a notification whose Cancel
    stops the fill on the server between two steps and leaves the buffer as it was."""
    workspace = tmp_path / "workspace"
    workspace.mkdir()
    (workspace / "hole.py").write_text(HOLE)
    script_log = tmp_path / "script.jsonl"
    screenshots = artifacts_dir / "vscode-download"
    screenshots.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, str(SCRIPTED), "--model", HUB_REPO, "--device", "cpu"]
    with FakeHub() as hub:
        hub.add(HUB_REPO, REFERENCE)
        hub.slow("model.safetensors", 0.3)  # ~6 s for 19.5 MB: the item shows it mid-way
        env = {key: value for key, value in hub_env(hub, tmp_path / "hf").items()
               if key.startswith(("HF_", "OMP_", "MKL_"))}
        env.update(CODA_SCRIPT=json.dumps({"fills": [["return 42", 0.9]], "step_s": 0.25}),
                   CODA_SCRIPT_LOG=str(script_log))
        code_server = CodeServer(workspace, tmp_path / "home", command,
                                 {"fillHoleSteps": 40, "confidenceThreshold": 0.0}, env)
        try:
            seen = _drive(code_server, workspace, screenshots, scenario="downloadThenCancel",
                          holeFile="hole.py", holeLine=2, scriptLog=str(script_log))
        finally:
            code_server.close()
    percents = [int(m[1]) for text in seen["statusTexts"]
                if (m := re.search(r"Coda (\d+) %", text))]
    assert any(0 < p < 100 for p in percents), seen["statusTexts"]
    assert percents == sorted(percents), seen["statusTexts"]
    assert any(f"downloading {HUB_REPO}: " in text and " MB)" in text
               for text in seen["statusTexts"]), seen["statusTexts"]
    assert (screenshots / "vscode-download.png").is_file()
    assert "Cancel" in seen["fillToastButtons"], seen
    assert seen["stopped"]["stopped"] < seen["stopped"]["steps"] == 40, seen["stopped"]
    assert "finished" not in script_log.read_text()
    assert seen["dirtyAfterCancel"] == 0 and "return 42" not in seen["editorText"], seen
    assert seen["errorToasts"] == [], seen
