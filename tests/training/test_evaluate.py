"""The evaluation harness: sandbox, metrics, held-out spans, and one end-to-end tiny run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from testkit import SAMPLE_CODE

from coda_lsp.core.fim import best_fill
from training.data import heldout
from training.data.heldout import Example
from training.data.packing import Document
from training.eval import evaluate, sandbox
from training.eval import report as eval_report

BENCH = Path(__file__).resolve().parents[2].parent / "shared" / "benchmarks" / \
    "humaneval-infilling"
needs_bench = pytest.mark.skipif(not BENCH.is_dir(),
                                 reason=f"{BENCH} (../shared, HumanEval-Infilling) is absent")


# ------------------------------------------------------------------------------ sandbox

def test_a_passing_program_passes():
    out = sandbox.run_python("assert 1 + 1 == 2\n", timeout=10)
    assert out.passed and out.status == sandbox.PASSED and out.returncode == 0


def test_a_failing_program_fails_with_its_error():
    out = sandbox.run_python("assert 1 + 1 == 3, 'arithmetic'\n", timeout=10)
    assert out.status == sandbox.FAILED and not out.passed
    assert "AssertionError" in out.stderr


def test_an_infinite_loop_times_out():
    out = sandbox.run_python("while True:\n    pass\n", timeout=1.0)
    assert out.status == sandbox.TIMEOUT
    assert out.seconds < 5


def test_a_memory_hog_is_stopped():
    out = sandbox.run_python("x = bytearray(2 * 1024 ** 3)\n", timeout=10, memory_mb=256)
    assert out.status == sandbox.FAILED
    assert "MemoryError" in out.stderr


def test_the_program_runs_isolated_in_a_temporary_directory():
    source = (
        "import os, sys\n"
        "assert os.path.basename(os.getcwd()).startswith('coda-sandbox-'), os.getcwd()\n"
        "assert os.listdir('.') == ['program.py'], os.listdir('.')\n"
        "assert os.environ['HOME'] == os.getcwd()\n"
        "assert sys.flags.isolated\n"
        "assert not any(k.lower().endswith('_proxy') and k != 'no_proxy' for k in os.environ)\n"
        "open('scratch.txt', 'w').write('x')\n"
    )
    out = sandbox.run_python(source, timeout=10)
    assert out.passed, out.stderr


@pytest.mark.skipif(not sandbox.network_isolation(), reason="no network namespace here")
def test_the_program_has_no_network():
    source = ("import socket\n"
              "s = socket.socket()\n"
              "s.settimeout(2)\n"
              "s.connect(('1.1.1.1', 53))\n")
    out = sandbox.run_python(source, timeout=10)
    assert out.status == sandbox.FAILED
    assert "OSError" in out.stderr or "unreachable" in out.stderr.lower()


# ------------------------------------------------------------------------------ metrics

@pytest.mark.parametrize("fill, truth, expected", [
    ("abc", "abc", 1.0),
    ("", "", 1.0),
    ("abc", "abd", 2 / 3),
    ("kitten", "sitting", 1 - 3 / 7),
    ("", "return x", 0.0),
    ("x + 1", "x+1", 1 - 2 / 5),
])
def test_edit_similarity_on_hand_examples(fill, truth, expected):
    assert heldout.edit_similarity(fill, truth) == pytest.approx(expected)
    assert heldout.edit_similarity(truth, fill) == pytest.approx(expected)


def test_exact_match_ignores_only_trailing_whitespace():
    assert heldout.exact_match("return a + b\n", "return a + b")
    assert heldout.exact_match("x = 1", "x = 1")
    assert not heldout.exact_match(" return a + b", "return a + b")
    assert not heldout.exact_match("return a+b", "return a + b")


def _doc(text: str = SAMPLE_CODE.split("function")[0]) -> Document:
    return Document("sample/mod.py", text, "python", True)


def test_heldout_examples_are_server_spans_that_rebuild_the_file(tiny_model_dir):
    from coda_model import load_tokenizer

    tok = load_tokenizer(tiny_model_dir)
    doc = _doc()
    found = heldout.heldout_examples([doc], tok, per_file=5, seed=1)
    assert 1 <= len(found) <= 5
    for ex in found:
        assert ex.prefix + ex.middle + ex.suffix == doc.text
        assert ex.middle.strip() and "\n" not in ex.middle.rstrip("\n")   # inline spans
        assert heldout.parses(ex, ex.middle)
    assert found == heldout.heldout_examples([doc], tok, per_file=5, seed=1)   # seeded


def test_parses_flags_a_fill_that_breaks_the_syntax():
    ex = Example("heldout", "x#0", "def add(a, b):\n    return ", "a + b", "\n",
                 kind="expression")
    assert heldout.parses(ex, "a - b")
    assert not heldout.parses(ex, "a + (b")


# ------------------------------------------------------------------------------ end to end

def test_the_server_row_needs_the_servers_fill_path(tiny_model_dir, capsys):
    with pytest.raises(ValueError, match="bench_infilling"):
        evaluate.evaluate(tiny_model_dir, lengths=("server",), examples=[])
    with pytest.raises(SystemExit):
        evaluate.main(["--model", str(tiny_model_dir), "--lengths", "server",
                       "--tasks", "heldout"])
    assert "bench_infilling.py" in capsys.readouterr().err


def test_the_server_row_offers_what_fill_between_ranks_first(tiny_model_dir):
    from coda_lsp.core import fim
    from coda_lsp.core.engine import Engine
    from coda_lsp.core.settings import Settings
    from coda_model import load_model, load_tokenizer

    model, tok = load_model(tiny_model_dir), load_tokenizer(tiny_model_dir)
    fill = fim.best_fill(model, tok)
    prefix, suffix = "def add(a, b):\n    return ", "\n"
    outcome = fim.fill_between(Engine(model, tok), prefix, suffix, Settings(), 2)
    assert fill(prefix, suffix, 2) == (outcome.fills[0].text if outcome.fills else "")


def test_a_middle_that_ends_its_line_is_typed_on_a_blank_line():
    ex = Example("single-line", "t", "def f(x):\n", "    return x\n", "\nprint(f(1))\n")
    typed = evaluate.as_typed(ex)
    assert (typed.prefix, typed.middle, typed.suffix) == \
        ("def f(x):\n", "    return x", "\n\nprint(f(1))\n")
    assert typed.prefix + typed.middle + typed.suffix == ex.prefix + ex.middle + ex.suffix
    mid_line = Example("heldout", "h", "x = ", "f(1)\n", "y = 2\n")
    assert evaluate.as_typed(mid_line) == mid_line   # the newline is not the user's to keep


@pytest.mark.parametrize("prefix, expected", [
    ("def f(x):\n    y = x + 1\n", "    y = x + 1"),          # a blank line: the whole line
    ("def f(x):\n    y = x + 1\n\n    ", "y = x + 1"),        # from the cursor's column on
    ("def f(x):\n    y = x + 1\n    return y * 2", ""),       # the line above is shorter
    ("first line", ""),                                           # nothing above
])
def test_the_previous_line_floor_copies_from_the_cursor_column(prefix, expected):
    assert evaluate.previous_line(prefix) == expected


def _examples(tiny_model_dir) -> list[Example]:
    from coda_model import load_tokenizer

    tok = load_tokenizer(tiny_model_dir)
    held = heldout.heldout_examples([_doc()], tok, per_file=2, seed=0)
    return evaluate.humaneval_examples(BENCH, "single-line", 3, seed=0) + held


@pytest.fixture
def one_thread():
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)   # tiny matmuls: threads only add synchronisation
    yield
    torch.set_num_threads(before)


@needs_bench
def test_the_harness_runs_end_to_end_on_a_tiny_checkpoint(tiny_model_dir, tmp_path, one_thread):
    # Short contexts and a short AR cap: the run checks plumbing, not quality.
    result = evaluate.evaluate(tiny_model_dir, ar_dir=tiny_model_dir, steps=(1, 2),
                               lengths=("true", "half", "double", "server"), out=tmp_path,
                               examples=_examples(tiny_model_dir), timeout=5,
                               prefix_tokens=48, suffix_tokens=16, ar_min_new=8,
                               server_fill=best_fill)
    lines = result["table"].splitlines()
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    assert header == ["model", "steps", "masks", "single-line pass@1", "heldout EM",
                      "heldout ES", "heldout parses", "ms/infill"]
    body = [[c.strip() for c in line.strip("|").split("|")] for line in lines[2:]
            if line.startswith("| ")]
    assert [row[:3] for row in body] == [
        ["diffusion", "1", "true"], ["diffusion", "2", "true"],
        ["diffusion", "1", "half"], ["diffusion", "2", "half"],
        ["diffusion", "1", "double"], ["diffusion", "2", "double"],
        ["diffusion", "1", "server"], ["diffusion", "2", "server"],
        ["AR (PSM, greedy, KV cache)", "—", "—"], ["empty fill (floor)", "—", "—"],
        ["copy previous line (floor)", "—", "—"]]
    assert all(len(row) == len(header) for row in body)
    for row in result["summary"]:
        assert 0.0 <= row["tasks"]["single-line"]["pass@1"] <= 1.0
        assert 0.0 <= row["tasks"]["heldout"]["similarity"] <= 1.0
    png = tmp_path / "quality_latency.png"
    assert png.is_file() and png.read_bytes()[:4] == b"\x89PNG"
    assert (tmp_path / "table.md").read_text().count("| diffusion |") == 8
    fills = [json.loads(line) for line in (tmp_path / "fills.jsonl").read_text().splitlines()]
    assert len(fills) == 11 * len(_examples(tiny_model_dir))
    # The server path offers what fim.fill_between ranks first: text, never the raw canvas.
    assert all("<|" not in f["text"] for f in fills if f["masks"] == "server")


@needs_bench
def test_the_cli_runs_a_ci_sized_subset(tiny_model_dir, tmp_path, capsys, one_thread):
    code = evaluate.main(["--model", str(tiny_model_dir), "--ar-model", "none",
                          "--tasks", "random-span", "--limit", "2", "--steps", "1",
                          "--lengths", "true", "--out", str(tmp_path), "--timeout", "5",
                          "--prefix-tokens", "48", "--suffix-tokens", "16"])
    assert code == 0
    out = capsys.readouterr().out
    assert "| diffusion | 1 | true |" in out and "random-span pass@1" in out
    assert (tmp_path / "quality_latency.png").is_file()


def test_a_run_folder_resolves_to_its_latest_checkpoint(tiny_model_dir, tmp_path):
    import shutil

    ckpt = tmp_path / "run" / "checkpoints" / "step-000010"
    shutil.copytree(tiny_model_dir, ckpt)
    (tmp_path / "run" / "checkpoints" / "latest").write_text("step-000010\n")
    assert evaluate.resolve_model_dir(tmp_path / "run") == ckpt
    assert evaluate.resolve_model_dir(tiny_model_dir) == tiny_model_dir
    with pytest.raises(FileNotFoundError):
        evaluate.resolve_model_dir(tmp_path)


def test_the_table_lists_only_the_tasks_that_ran():
    fills = [evaluate.Fill("diffusion", 4, "true", "heldout", "a", "x", 10.0, None, True, 1.0,
                           True),
             evaluate.Fill("ar", None, "-", "heldout", "a", "y", 30.0, None, False, 0.0, False)]
    table = eval_report.markdown_table(eval_report.summarize(fills))
    assert "pass@1" not in table
    assert "| diffusion | 4 | true | 1.000 | 1.000 | 1.000 | 10 |" in table
    assert "| AR (PSM, greedy, KV cache) | — | — | 0.000 | 0.000 | 0.000 | 30 |" in table
