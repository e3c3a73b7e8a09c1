"""A non-editable install carries the shipped model and the grammar queries."""

import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(not (ROOT / "model" / "config.json").is_file(), reason="model/ not built yet")
def test_wheel_contains_model_and_grammars(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "-q", "-w", str(tmp_path), str(ROOT)], check=True, capture_output=True)
    [wheel] = tmp_path.glob("coda_lsp-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for required in ("coda_lsp/model/config.json", "coda_lsp/model/model.safetensors",
                     "coda_lsp/model/tokenizer.json", "coda_lsp/model/MODEL_CARD.md",
                     "coda_syntax/grammars/languages.toml", "coda_syntax/grammars/python/spans.scm",
                     "coda_syntax/grammars/rust/holes.scm", "coda_model/sampler.py",
                     "coda_lsp/core/engine.py", "coda_lsp/lsp/server.py", "coda_lsp/http/wire.py",
                     "training/data/decontam_hashes/humaneval_infilling.json",
                     "training/eval/evaluate.py", "training/evaluate.py"):
        assert required in names, required


def test_install_instructions_do_not_name_a_registry_package():
    """coda-lsp is not on PyPI: the docs and the VS Code "not found" toast say how to install it
    from a checkout (or wheels built from one), never ``pip install coda-lsp``."""
    registry = re.compile(r"pip install\s+(?:-U\s+|--upgrade\s+)?[\"']?coda-lsp\b")
    places = [ROOT / "README.md", *ROOT.glob("editors/*/README.md"),
              *ROOT.glob("editors/vscode/src/*.ts")]
    offenders = [f"{p.relative_to(ROOT)}: {m[0]}" for p in places
                 for m in registry.finditer(p.read_text(encoding="utf-8"))]
    assert not offenders
    assert "pip install /path/to/coda-lsp" in (ROOT / "README.md").read_text(encoding="utf-8")
    toasts = "".join(p.read_text(encoding="utf-8")
                     for p in (ROOT / "editors/vscode/src").glob("*.ts"))
    assert "pip install /path/to/coda-lsp" in toasts


DOC_PATH = re.compile(r"(?<![\w./-])((?:coda_model|coda_syntax|coda_lsp|training|benchmarks|scripts"
                      r"|tests|editors|grammars|model|examples)/[\w./-]*\w)")


def test_paths_named_in_the_docs_exist():
    """Every repository path a document names (`training/run/loop.py`, `tests/core/...`) is
    there, so a move cannot leave the docs pointing at nothing."""
    docs = [ROOT / "README.md", ROOT / "ARCHITECTURE.md", *ROOT.glob("*/README.md"),
            *ROOT.glob("editors/*/README.md"), ROOT / "model" / "MODEL_CARD.md"]
    missing = [f"{doc.relative_to(ROOT)}: {m[1]}" for doc in docs
               for m in DOC_PATH.finditer(doc.read_text(encoding="utf-8"))
               if "<" not in m[1] and not any((ROOT / m[1]).parent.glob(Path(m[1]).name + "*"))]
    assert not missing
