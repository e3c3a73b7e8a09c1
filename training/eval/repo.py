"""Before/after numbers of a repository fine-tune: infilling on the repo's own held-out files.

The spans are the server's (``training.data.heldout``: ``spans.choose`` at seeded cursors
in the files the data split held out, so never trained on).  Each model fills every span with
the true number of masks at a fixed number of denoising steps; the scores are exact match and
edit similarity, plus the middle's cross-entropy with every middle token masked (one forward
pass; far less noisy than exact match on a demonstration-size model) and per-span win/loss
counts.  A handful of spans measures noise, so a small set is reported with a warning.
"""

from __future__ import annotations

import json
import logging
import math
import random
from pathlib import Path

import torch

from coda_syntax import languages
from training.data import heldout
from training.eval.evaluate import Context, Scorer, run_diffusion
from training.run.progress import progress

log = logging.getLogger(__name__)

MIN_FILES, MIN_SPANS = 3, 30   # below either, a difference of a few points means nothing


def examples_for(docs, tok, *, max_spans: int = 80, seed: int = 0) -> list[heldout.Example]:
    """Up to ``max_spans`` spans spread over the held-out documents (seeded); files in a
    language the server has no grammar for are left out."""
    docs = [d for d in docs if languages.resolve(language_id=d.language) is not None]
    if not docs:
        return []
    per_file = max(4, math.ceil(1.5 * max_spans / len(docs)))
    found = heldout.heldout_examples(docs, tok, per_file=per_file, seed=seed)
    if len(found) > max_spans:
        found = sorted(random.Random(seed).sample(found, max_spans), key=lambda e: e.id)
    return found


def too_small(n_files: int, n_spans: int) -> str | None:
    if n_files >= MIN_FILES and n_spans >= MIN_SPANS:
        return None
    return (f"the held-out set is small ({n_files} files, {n_spans} spans; want at least "
            f"{MIN_FILES} and {MIN_SPANS}): before/after differences of a few points are noise")


def middle_ce(model, tok, ex: heldout.Example, ctx: Context) -> float:
    """Mean CE (nats/token) of the true middle with all of it masked: output i predicts i+1."""
    middle = tok.encode(ex.middle) or [tok.eos_id]
    ids = ctx.prefix + [tok.mask_id] * len(middle) + ctx.suffix
    device = next(model.parameters()).device
    logits = model(torch.tensor([ids], device=device))[0]
    start = len(ctx.prefix) - 1
    return float(torch.nn.functional.cross_entropy(
        logits[start:start + len(middle)].float(), torch.tensor(middle, device=device)))


@torch.no_grad()
def score(model, tok, examples, steps: int = 8, prefix_tokens: int = 256,
          suffix_tokens: int = 96, desc: str = "scoring") -> dict:
    """Exact match and edit similarity of ``model``'s fills; leaves the global RNG untouched
    (a resumed run must draw exactly what an uninterrupted one draws)."""
    was_training = model.training
    model.eval()
    fills, ces = [], []
    bar = progress(len(examples), desc, unit="span")
    with torch.random.fork_rng(devices=[]):
        for ex in examples:
            ctx = Context(tok, ex, prefix_tokens, suffix_tokens,
                          model.config.max_position_embeddings)
            fills += run_diffusion(model, tok, [ex], [ctx], steps, "true", Scorer(10.0, 512))
            ces.append(middle_ce(model, tok, ex, ctx))
            bar.update(1)
    bar.close()
    model.train(was_training)
    n = max(1, len(fills))
    return {"spans": len(fills), "steps": steps,
            "exact_match": sum(f.exact for f in fills) / n,
            "edit_similarity": sum(f.similarity for f in fills) / n,
            "parses": sum(bool(f.parses) for f in fills) / n,
            "middle_ce": sum(ces) / n,
            "ms_per_fill": sum(f.ms for f in fills) / n,
            "per_span": [{"id": f.id, "similarity": f.similarity, "middle_ce": ce}
                         for f, ce in zip(fills, ces, strict=True)]}


def table(rows: dict[str, dict]) -> str:
    lines = ["| model | spans | exact match | edit similarity | fill parses | middle CE |",
             "|---|---|---|---|---|---|"]
    for name, r in rows.items():
        lines.append(f"| {name} | {r['spans']} | {r['exact_match']:.3f} | "
                     f"{r['edit_similarity']:.3f} | {r['parses']:.3f} | {r['middle_ce']:.3f} |")
    return "\n".join(lines)


def wins(before: dict, after: dict) -> str:
    """Per-span comparison: how many spans each score moved up or down on."""
    pairs = list(zip(before["per_span"], after["per_span"], strict=True))
    up = sum(a["similarity"] > b["similarity"] for b, a in pairs)
    down = sum(a["similarity"] < b["similarity"] for b, a in pairs)
    lower = sum(a["middle_ce"] < b["middle_ce"] for b, a in pairs)
    return (f"per span, after vs before: edit similarity up on {up}, down on {down}, same on "
            f"{len(pairs) - up - down}; middle CE lower on {lower} of {len(pairs)}")


def write(out: Path, rows: dict[str, dict], header: str, judged=None) -> str:
    """``eval.json`` and ``eval.md`` in the run folder; returns the markdown.  ``judged``: a
    ``training.eval.verdict.Verdict``, kept in ``eval.json`` under ``"verdict"``."""
    text = f"{header}\n\n{table(rows)}\n"
    if len(rows) == 2:
        text += f"\n{wins(*rows.values())}\n"
    record = dict(rows)
    if judged is not None:
        record["verdict"] = judged.to_dict()
    (out / "eval.json").write_text(json.dumps(record, indent=1) + "\n")
    (out / "eval.md").write_text(text)
    return text
