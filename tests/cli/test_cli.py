"""The command line: one-line startup errors, and the one-shot ``fill``."""

import subprocess
import sys
from pathlib import Path

import pytest

from coda_lsp import cli

AR_BASELINE = Path(__file__).resolve().parents[2] / "benchmarks" / "ar_baseline"


@pytest.mark.parametrize("args, needle", [
    (["--model", "/no/such/dir"], "model folder not found"),
    (["--bogus"], "unrecognized arguments"),
    (["--device", "tpu"], "invalid choice"),
    (["--steps", "0", "--model", "/tmp"], "--steps"),
    (["fill", "file.py"], "expected FILE:LINE:COL"),
    (["--stdio", "--tcp"], "not allowed with argument"),
    (["fill", "a.py:1:1", "--multiline", "sometimes"], "invalid choice"),
    (["--compile", "--device", "cpu", "--model", "/tmp"], "--compile is for CUDA GPUs"),
    (["--remote", "gpu-box:8012"], "--remote must be a coda-lsp http URL"),
    (["http", "--model", "http://gpu-box:8012"], "a coda-lsp http elsewhere is --remote URL"),
    (["--typing-remote", "http://gpu-box:80x"], "--typing-remote must be a coda-lsp http URL"),
])
def test_startup_errors_are_one_line_and_nonzero(capsys, args, needle):
    assert cli.main(args) == cli.EXIT_USAGE
    out, err = capsys.readouterr()
    assert out == ""
    assert needle in err and err.count("\n") == 1


def test_stdio_flag_is_the_default_transport(capsys):
    assert cli.serve_parser().parse_args(["--stdio"]).tcp is False
    # accepted where vscode-languageclient puts it (last): the only problem left is the model
    assert cli.main(["--model", "/no/such/dir", "--stdio"]) == cli.EXIT_USAGE
    assert "model folder not found" in capsys.readouterr().err


def test_model_folder_without_weights(tmp_path, capsys):
    (tmp_path / "config.json").write_text("{}")
    assert cli.main(["--model", str(tmp_path)]) == cli.EXIT_USAGE
    assert "no .safetensors" in capsys.readouterr().err


def test_default_model_dir_is_the_shipped_folder():
    assert cli.default_model_dir().name == "model"


def fill(capsys, *args):
    code = cli.main(["fill", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_fill_prints_the_file_diffs_and_writes_in_place(tiny_model_dir, tmp_path, capsys):
    src = tmp_path / "a.py"
    src.write_text("def add(a, b):\n    return \n\n\ndef sub(a, b):\n    ...\n")
    model = ["--model", str(tiny_model_dir), "--steps", "2"]
    code, out, err = fill(capsys, f"{src}:2:12", *model)
    assert code in (0, 1) and "filled" in err
    assert (f"{src}:2:12: not filled: " in err) == (code == cli.EXIT_NOTHING)  # and why
    assert out.startswith("def add(a, b):\n    return ")
    code, out, _ = fill(capsys, str(src), "--holes", "--diff", *model)
    assert code in (0, 1) and ("-    ..." in out) == (code == 0)
    before = src.read_text()
    code, out, _ = fill(capsys, str(src), "--holes", "--write", *model)
    assert out == ""
    assert (src.read_text() != before) == (code == 0)


def test_compile_without_a_gpu_is_refused_in_one_line(tiny_model_dir, tmp_path, capsys):
    """--device auto resolves to this machine's CPU: the load says why, in one line."""
    import torch
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    src = tmp_path / "a.py"
    src.write_text(RETURN_HOLE)
    code, out, err = fill(capsys, f"{src}:2:12", "--compile", "--model", str(tiny_model_dir))
    assert code == cli.EXIT_USAGE and out == ""
    assert "--compile is for CUDA GPUs, not cpu" in err and err.count("\n") == 1


def test_multiline_flag_sets_the_default_every_command_starts_from():
    for parser, extra in ((cli.serve_parser, []), (cli.fill_parser, ["a.py:1:1"]),
                          (cli.http_parser, [])):
        assert cli.defaults_from(parser().parse_args(extra)).multiline == "auto"
        args = parser().parse_args([*extra, "--multiline", "never"])
        assert cli.defaults_from(args).multiline == "never"


def test_fill_rejects_missing_and_non_utf8_files(tiny_model_dir, tmp_path, capsys):
    code, _, err = fill(capsys, "/no/file.py:1:1", "--model", str(tiny_model_dir))
    assert code == cli.EXIT_USAGE and "cannot read" in err
    latin = tmp_path / "l.py"
    latin.write_bytes(b"x = '\xe9'\n")
    code, _, err = fill(capsys, f"{latin}:1:1", "--model", str(tiny_model_dir))
    assert code == cli.EXIT_USAGE and "not UTF-8" in err


def test_python_dash_m_entry_point():
    done = subprocess.run([sys.executable, "-m", "coda_lsp", "--model", "/no/such/dir"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == cli.EXIT_USAGE and done.stdout == ""
    assert "model folder not found" in done.stderr


def test_an_autoregressive_model_is_refused_in_one_line(tmp_path, capsys):
    """The AR baseline loads fine as a CodaModel; decoded as diffusion it writes nonsense."""
    src = tmp_path / "a.py"
    src.write_text("x = \n")
    model = ["--model", str(AR_BASELINE)]
    for args in (model, ["fill", f"{src}:1:5", *model]):
        assert cli.main(args) == cli.EXIT_USAGE
        out, err = capsys.readouterr()
        assert out == "" and err.count("\n") == 1
        assert "autoregressive model (objective 'autoregressive-fim')" in err
    assert src.read_text() == "x = \n"
    from coda_lsp.core.engine import Engine
    from coda_model import CheckpointError
    with pytest.raises(CheckpointError, match="autoregressive"):  # in-process callers too
        Engine.load(AR_BASELINE, "cpu")


@pytest.fixture
def model_says(monkeypatch):
    """Replace the model's candidates (text, confidence) for every span; ranking stays real."""
    from coda_lsp.core.engine import Engine, Fill, FillResult

    def says(*candidates):
        fills = [Fill(text, confidence, n + 1) for n, (text, confidence) in enumerate(candidates)]
        monkeypatch.setattr(Engine, "fill",
                            lambda self, job, should_stop=None, **hooks: FillResult(fills))
    return says


RETURN_HOLE = "def add(a, b):\n    return \n"


def test_fill_says_why_nothing_was_filled(tiny_model_dir, tmp_path, capsys, model_says):
    src = tmp_path / "a.py"
    src.write_text(RETURN_HOLE)
    model_says(("", 0.9), (" \n", 0.8), ("a +", 0.6), ("(a", 0.3))
    code, out, err = fill(capsys, f"{src}:2:12", "--model", str(tiny_model_dir))
    assert code == cli.EXIT_NOTHING and out == RETURN_HOLE
    assert err.splitlines() == [
        # the first attempt and two retries (coda_lsp.core.contract), the same candidates each
        f"coda-lsp: {src}:2:12: not filled: 12 candidate(s): 6 were empty, 6 added a syntax "
        "error; best rejected (confidence 0.60, adds a syntax error): 'a +' "
        "(--accept-rejected uses it)",
        f"coda-lsp: filled 0 of 1 span(s) in {src}"]


def test_fill_counts_candidates_under_min_confidence(tiny_model_dir, tmp_path, capsys,
                                                     model_says):
    src = tmp_path / "a.py"
    src.write_text(RETURN_HOLE)
    model_says(("a + b", 0.4), ("", 0.9))
    model = ["--model", str(tiny_model_dir)]
    code, out, err = fill(capsys, f"{src}:2:12", "--min-confidence", "0.5", *model)
    assert code == cli.EXIT_NOTHING and out == RETURN_HOLE
    assert "not filled: 6 candidate(s): 3 were empty, 3 were below the confidence threshold 0.5;" \
        " best rejected (confidence 0.40): 'a + b'" in err
    code, out, err = fill(capsys, f"{src}:2:12", "--min-confidence", "0.3", *model)
    assert code == 0 and out == "def add(a, b):\n    return a + b\n"
    assert err.splitlines() == [f"coda-lsp: filled 1 of 1 span(s) in {src}"]
    code, _, err = fill(capsys, f"{src}:2:12", "--min-confidence", "2", *model)
    assert code == cli.EXIT_USAGE and "--min-confidence" in err


def test_accept_rejected_writes_the_best_rejected_candidate(tiny_model_dir, tmp_path, capsys,
                                                           model_says):
    src = tmp_path / "a.py"
    src.write_text(RETURN_HOLE)
    model_says(("(a", 0.3), ("a +", 0.6), ("", 0.9))
    code, out, err = fill(capsys, f"{src}:2:12", "--accept-rejected", "--write",
                          "--model", str(tiny_model_dir))
    assert code == 0 and out == ""
    assert src.read_text() == "def add(a, b):\n    return a +\n"
    assert f"{src}:2:12: used a rejected candidate (confidence 0.60, adds a syntax error)" in err
    model_says(("", 0.9))  # an empty candidate is never written
    code, _, err = fill(capsys, f"{src}:2:12", "--accept-rejected", "--write",
                        "--model", str(tiny_model_dir))
    assert code == cli.EXIT_NOTHING and src.read_text() == "def add(a, b):\n    return a +\n"
    assert "not filled: 3 candidate(s): 3 were empty\n" in err


def test_fill_holes_reports_each_unfilled_hole_in_file_order(tiny_model_dir, tmp_path, capsys,
                                                             model_says):
    src = tmp_path / "a.py"
    src.write_text("def f():\n    ...\n\n\ndef g():\n    ...\n")
    model_says(("", 0.5))
    code, _, err = fill(capsys, str(src), "--holes", "--model", str(tiny_model_dir))
    assert code == cli.EXIT_NOTHING
    assert [line.split(": ")[1] for line in err.splitlines()[:2]] == [f"{src}:2:5", f"{src}:6:5"]


def test_the_readme_demo_fills_the_stack_hole_with_python(capsys):
    """README's first command, on the shipped model: the hole in ``pop`` gets code that parses
    in place of ``...`` (not yet the right code; model/MODEL_CARD.md says why)."""
    import ast

    repo = Path(__file__).resolve().parents[2]
    stack = repo / "examples" / "stack.py"
    code, out, err = fill(capsys, f"{stack}:13:9", "--model", str(repo / "model"))
    assert code == 0, err
    ast.parse(out)
    assert out != stack.read_text() and "        ...\n" not in out


def test_min_confidence_defaults_to_the_servers_confidence_threshold():
    from coda_lsp.core.settings import Settings

    assert cli.fill_parser().parse_args(["a.py:1:1"]).min_confidence == \
        Settings().confidence_threshold


def test_a_missing_model_names_the_editors_setting(capsys, monkeypatch):
    """An editor that starts the server says which of its settings holds the model folder."""
    assert cli.main(["--model", "/no/such/dir"]) == cli.EXIT_USAGE
    assert "(pass --model DIR)" in capsys.readouterr().err
    monkeypatch.setenv(cli.MODEL_SETTING_ENV, "coda.server.modelPath")
    assert cli.main(["--model", "/no/such/dir"]) == cli.EXIT_USAGE
    err = capsys.readouterr().err
    assert "set coda.server.modelPath to a model folder" in err and "--model" not in err
    assert err.count("\n") == 1


def test_fill_uses_the_fill_model(saying_models, tmp_path, capsys):
    """``coda-lsp fill`` is the fill role's job: --fill-model writes, --model does not."""
    src = tmp_path / "a.py"
    src.write_text("def add(a, b):\n    ...\n")
    code, out, _ = fill(capsys, str(src), "--holes", "--accept-rejected",
                        "--model", str(saying_models["items"]),
                        "--fill-model", str(saying_models["print"]))
    assert code == 0 and "print" in out and "items" not in out
    code, out, _ = fill(capsys, str(src), "--holes", "--accept-rejected", "--model",
                        str(saying_models["items"]))
    assert code == 0 and "items" in out  # no --fill-model: the one model serves both


def test_remote_flags_name_the_roles_and_the_key_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv("CODA_LSP_API_KEY", "from-env")
    args = cli.serve_parser().parse_args(["--remote", "http://gpu-box:8012/"])
    s = cli.defaults_from(args)
    assert (s.fill_remote, s.typing_remote, args.api_key) == ("http://gpu-box:8012", None,
                                                              "from-env")
    args = cli.serve_parser().parse_args(["--typing-remote", "https://gpu-box", "--api-key", "k"])
    assert (cli.defaults_from(args).typing_remote, args.api_key) == ("https://gpu-box", "k")
    text = " ".join(cli.serve_parser().format_help().split())
    assert "--remote URL" in text and "typing stays local" in text
