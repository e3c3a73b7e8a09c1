"""``python -m training.probe MODEL [MODEL ...]``: held-out masked CE, the same for every model.

A training run's own evaluation draws its corruption modes at random over its own held-out
split, with a few batches: two runs' figures are not comparable, and one noisy figure can hide
a real gain.  The probe fixes everything but the weights: the shipped model's held-out stdlib
files (``training.data.corpus.held_out``, never trained on by any of our runs), cut into rows of the
model's trained length, and seeded masks at a few mask rates plus whole masked spans (the
regime an inline fill starts from).  It reports cross-entropy and top-1 over the masked
tokens (output i predicts token i+1, as in training).  ``training.ship`` judges candidates
with it; a few seconds per model on a CPU.
"""

from __future__ import annotations

import argparse
import sys
import sysconfig
from pathlib import Path

import torch
import torch.nn.functional as F

from training.data import corpus
from training.errors import UsageError, main_guarded

SPAN, SPANS_PER_ROW = 8, 8   # the "spans" point: 8 masked runs of 8 tokens per row
# name -> what is masked: each token with probability σ, or whole spans
POINTS: dict[str, float | str] = {"sigma0.05": 0.05, "sigma0.3": 0.3, "sigma0.8": 0.8,
                                  "spans": "spans"}
ROWS, BATCH, SEED = 64, 8, 1234


class ProbeError(UsageError):
    """No held-out text to probe with (checkpoint and tokenizer errors say their path)."""


def heldout_files() -> list[Path]:
    """The shipped model's held-out files of this machine's standard library, sorted."""
    pkg = corpus.stdlib(Path(sysconfig.get_paths()["stdlib"]))
    return [path for path, rel in pkg.files
            if corpus.held_out(corpus.STDLIB_PACKAGE, rel, 0.0)]


def probe_rows(tokenizer, seq_len: int, files: list[Path], rows: int | None = None) -> torch.Tensor:
    """Up to ``rows`` rows of ``seq_len`` tokens, taken from the files in turn so that every
    file counts (a long file alone would otherwise fill the probe)."""
    chunks = []
    for path in files:
        try:
            ids = tokenizer.encode(path.read_text(encoding="utf-8"), allow_special=False)
        except (OSError, UnicodeDecodeError):
            continue
        chunks.append([ids[i:i + seq_len] for i in range(0, len(ids) - seq_len + 1, seq_len)])
    rows = rows or ROWS
    out: list[list[int]] = []
    depth = 0
    while len(out) < rows and any(depth < len(c) for c in chunks):
        out += [c[depth] for c in chunks if depth < len(c)]
        depth += 1
    if not out:
        raise ProbeError(f"no held-out file is {seq_len} tokens long: nothing to probe with")
    return torch.tensor(out[:rows])


def masks(shape: tuple[int, int], point: str | float, seed: int = SEED) -> torch.Tensor:
    """The seeded mask of one probe point: independent tokens at rate σ, or whole spans."""
    g = torch.Generator().manual_seed(seed)
    n, length = shape
    if point == "spans":
        mask = torch.zeros(shape, dtype=torch.bool)
        slots = (length - 1) // SPAN   # non-overlapping slots after position 0
        for row in range(n):
            for s in torch.randperm(slots, generator=g)[:SPANS_PER_ROW].tolist():
                mask[row, 1 + s * SPAN: 1 + (s + 1) * SPAN] = True
        return mask
    mask = torch.rand(shape, generator=g) < float(point)
    mask[:, 0] = False   # position 0 has no output before it to predict it
    return mask


@torch.inference_mode()
def masked_ce(model, rows: torch.Tensor, mask: torch.Tensor, mask_id: int) -> tuple[float, float]:
    """Mean CE and top-1 accuracy over the masked tokens (output i scored against token i+1),
    on the model's device and under the caller's autocast; ``training.gpu_run`` uses it too."""
    device = next(model.parameters()).device
    total, correct, count = 0.0, 0, 0
    for b in range(0, len(rows), BATCH):
        ids, m = rows[b:b + BATCH].long().to(device), mask[b:b + BATCH].to(device)
        noisy = torch.where(m, torch.full_like(ids, mask_id), ids)
        hidden = model.hidden_states(noisy)[:, :-1]
        chosen = m[:, 1:]
        logits = model.lm_head(hidden[chosen]).float()
        target = ids[:, 1:][chosen]
        total += F.cross_entropy(logits, target, reduction="sum").item()
        correct += int((logits.argmax(-1) == target).sum())
        count += int(chosen.sum())
    return total / max(1, count), correct / max(1, count)


def points() -> list[str]:
    return list(POINTS)


def trained_length(model_dir: Path) -> int:
    """The probe's row length for a model: its trained length, at most 512."""
    from coda_model.checkpoint import read_config
    return min(512, read_config(Path(model_dir)).max_position_embeddings or 512)


def probe(model_dir: Path, rows: torch.Tensor, mask_id: int) -> dict[str, float]:
    """``{"ce_sigma0.05": …, "top1_sigma0.05": …, …, "ce_spans", "top1_spans", "ce_mean"}``;
    ``ce_mean`` averages the CE points: the figure ``training.ship`` compares."""
    from coda_model import load_model

    model = load_model(model_dir, dtype="float32")
    out: dict[str, float] = {}
    for name, point in POINTS.items():
        ce, top1 = masked_ce(model, rows, masks(tuple(rows.shape), point), mask_id)
        out[f"ce_{name}"], out[f"top1_{name}"] = ce, top1
    out["ce_mean"] = sum(out[f"ce_{n}"] for n in points()) / len(points())
    return out


def compare(models: list[Path], tokenizer_dir: Path | None = None) -> dict[str, dict]:
    """Every model on the same rows and masks (rows as long as the first model's length)."""
    from coda_model import load_tokenizer

    seq_len = [trained_length(m) for m in models][0]   # every folder checked before any work
    tokenizer = load_tokenizer(tokenizer_dir or models[0])
    rows = probe_rows(tokenizer, seq_len, heldout_files())
    return {str(m): probe(m, rows, tokenizer.mask_id) for m in models}


def table(results: dict[str, dict[str, float]]) -> str:
    """Markdown: one row per model, CE / top-1 per probe point."""
    head = "| model | " + " | ".join(f"{p} CE / top-1" for p in points()) + " | mean CE |"
    lines = [head, "|---" * (len(points()) + 2) + "|"]
    for name, r in results.items():
        cells = " | ".join(f"{r[f'ce_{p}']:.3f} / {r[f'top1_{p}']:.3f}" for p in points())
        lines.append(f"| {name} | {cells} | {r['ce_mean']:.3f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.probe",
                                description=__doc__.splitlines()[0])
    p.add_argument("models", type=Path, nargs="+", help="model folders (same tokenizer)")
    p.add_argument("--tokenizer", type=Path, default=None,
                   help="tokenizer folder (default: the first model's)")
    p.add_argument("-v", "--verbose", action="store_true", help="tracebacks for errors")
    args = p.parse_args(argv)

    def run(a) -> int:
        print(table(compare(a.models, a.tokenizer)), end="")
        return 0
    return main_guarded(p, args, run)


if __name__ == "__main__":
    sys.exit(main())
