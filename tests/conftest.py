"""Shared fixtures: a tiny random CoDA checkpoint built once per session in a temp dir."""

from pathlib import Path

import pytest
from testkit import build_checkpoint


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    return build_checkpoint(tmp_path_factory.mktemp("models") / "tiny")


@pytest.fixture(scope="session")
def saying_models(tmp_path_factory) -> dict[str, Path]:
    """Three checkpoints told apart by what they write: "items", " print", " Stack" over and
    over (two-model routing: which model answered)."""
    from testkit import build_saying_checkpoint

    root = tmp_path_factory.mktemp("saying")
    return {"items": build_saying_checkpoint(root / "typing", "items"),
            "print": build_saying_checkpoint(root / "fill", "\u0120print", seed=1),
            "Stack": build_saying_checkpoint(root / "newfill", "\u0120Stack", seed=2)}
