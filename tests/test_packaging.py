"""A non-editable install carries the shipped model and the grammar queries."""

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
                     "coda_lsp/grammars/languages.toml", "coda_lsp/grammars/python/spans.scm",
                     "coda_lsp/grammars/rust/holes.scm", "coda_model/sampler.py"):
        assert required in names, required
