"""The command line: one-line startup errors, and the one-shot ``fill``."""

import subprocess
import sys
from pathlib import Path

import pytest

from coda_lsp import cli

AR_BASELINE = Path(__file__).resolve().parent.parent / "benchmarks" / "ar_baseline"


@pytest.mark.parametrize("args, needle", [
    (["--model", "/no/such/dir"], "model folder not found"),
    (["--bogus"], "unrecognized arguments"),
    (["--device", "tpu"], "invalid choice"),
    (["--steps", "0", "--model", "/tmp"], "--steps"),
    (["fill", "file.py"], "expected FILE:LINE:COL"),
    (["--stdio", "--tcp"], "not allowed with argument"),
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
    assert out.startswith("def add(a, b):\n    return ")
    code, out, _ = fill(capsys, str(src), "--holes", "--diff", *model)
    assert code in (0, 1) and ("-    ..." in out) == (code == 0)
    before = src.read_text()
    code, out, _ = fill(capsys, str(src), "--holes", "--write", *model)
    assert out == ""
    assert (src.read_text() != before) == (code == 0)


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
    from coda_lsp.engine import Engine
    from coda_model import CheckpointError
    with pytest.raises(CheckpointError, match="autoregressive"):  # in-process callers too
        Engine.load(AR_BASELINE, "cpu")
