"""Shared fixtures: a tiny random CoDA checkpoint built once per session in a temp dir."""

from pathlib import Path

import pytest
from testkit import build_checkpoint


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    return build_checkpoint(tmp_path_factory.mktemp("models") / "tiny")
