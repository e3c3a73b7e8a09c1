"""Training checkpoints: a servable CoDA folder plus the trainer state, swapped in atomically.

Layout under ``<run>/checkpoints/``::

    step-000600/            config.json, model.safetensors, tokenizer files  (load_model reads it)
                            trainer_state.safetensors + .json  (optimizer, scheduler, data
                            position, RNG, step; no pickle: see state_io.py)
    latest                  the name of the newest complete checkpoint
    corrupt-step-000800/    one that could not be read at resume, set aside (kept, not used)

A checkpoint is written into a hidden temporary folder and renamed into place, and ``latest``
is replaced last, so a kill at any moment leaves the previous checkpoint intact.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path

from coda_model import save_model
from training.run import state_io

log = logging.getLogger(__name__)

STATE = "trainer_state.json"


def _write_text_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def save_checkpoint(root: str | Path, step: int, model, tokenizer_dir, state: dict,
                    keep: int = 2, extra=None) -> Path:
    """Write ``root/step-NNNNNN`` and point ``root/latest`` at it; keep the newest ``keep``.
    ``extra(folder)`` adds files to the checkpoint before it is swapped in (LoRA adapters)."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{step:06d}"
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=root))
    os.chmod(tmp, 0o755)   # mkdtemp makes it 0700: a checkpoint is for others to serve too
    try:
        save_model(model, tmp / "model", tokenizer_dir=tokenizer_dir)
        for f in (tmp / "model").iterdir():
            os.replace(f, tmp / f.name)
        (tmp / "model").rmdir()
        state_io.save_state(state, tmp)
        if extra is not None:
            extra(tmp)
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _write_text_atomic(root / "latest", final.name + "\n")
    steps = sorted(p for p in root.glob("step-*") if p.is_dir())
    for old in steps[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    log.info("checkpoint %s", final)
    return final


def latest_checkpoint(root: str | Path) -> Path | None:
    pointer = Path(root) / "latest"
    if not pointer.is_file():
        return None
    path = Path(root) / pointer.read_text().strip()
    if not (path / STATE).is_file():
        # Never fall back to a fresh start here: it would overwrite the run's metrics and,
        # after `keep` checkpoints, its real ones (seen with a pre-state_io AR run).
        raise RuntimeError(f"{pointer} names {path.name}, which has no {STATE} (missing, or "
                           f"written by an older version): move {Path(root)} away to start "
                           f"over, or restore the checkpoint")
    return path


def candidates(root: str | Path) -> list[Path]:
    """Checkpoints to resume from, best first: the one ``latest`` names, then older ones."""
    newest = latest_checkpoint(root)
    if newest is None:
        return []
    older = sorted((p for p in Path(root).glob("step-*") if p.is_dir() and p.name < newest.name),
                   reverse=True)
    return [newest, *older]


def set_aside(checkpoint: Path) -> Path:
    """Rename an unreadable checkpoint to ``corrupt-step-N`` (kept for a look) and point
    ``latest`` at the newest one left."""
    aside = checkpoint.with_name(f"corrupt-{checkpoint.name}")
    shutil.rmtree(aside, ignore_errors=True)
    checkpoint.rename(aside)
    left = sorted(p for p in checkpoint.parent.glob("step-*") if p.is_dir())
    pointer = checkpoint.parent / "latest"
    if left:
        _write_text_atomic(pointer, left[-1].name + "\n")
    else:
        pointer.unlink(missing_ok=True)
    return aside


def load_state(checkpoint: str | Path) -> dict:
    """The trainer state of a checkpoint, exactly as it was saved."""
    return state_io.load_state(Path(checkpoint))
