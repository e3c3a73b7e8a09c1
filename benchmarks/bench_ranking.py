"""Ranking when the first length guess is wrong: which candidate a hole fill offers.

For held-out spans (``training.data.heldout``), the candidate mask counts are the server's three
factors (0.5, 1, 2) around a base length that is the true token count of the span, half of it
or double it. The candidates are decoded once per base, as ``Engine.fill`` decodes a hole
(same sampler) in two commit orders: the reference's (most confident first, padding included)
and the engine's (``SamplerConfig.stop_weight``: padding last). Each ranking then picks one:

- ``canvas``: the mean confidence over the whole canvas, padding included (before issue 11);
- ``fill``: the mean confidence over the fill's own tokens (``InfillCandidate.fill_confidence``);
- ``fill+fluent``: that, with stuttering fills ranked last (``engine.rank``, the server).

Every ranking puts fills that add syntax errors last and drops empty ones. Prints exact match,
edit similarity to the span's code, the share that parses, the share with nothing to offer,
and the mean length of the offered fill (tokens) against the truth's, all from one run, plus
the share of offered fills the default confidence threshold would hide and their edit
similarity (against the others'). A measurement, not a test.

    python benchmarks/bench_ranking.py [--model DIR] [--spans 40] [--threads 1]
"""

from __future__ import annotations

import argparse
import dataclasses
import random
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # run from a checkout

from coda_lsp.cli import default_model_dir  # noqa: E402
from coda_lsp.core import prompt  # noqa: E402
from coda_lsp.core.engine import STOP_WEIGHT, Engine, Fill, rank, tidy  # noqa: E402
from coda_lsp.core.settings import Settings  # noqa: E402
from coda_model import infill  # noqa: E402
from coda_syntax import languages, spans  # noqa: E402
from training.data import heldout  # noqa: E402
from training.run import recipes  # noqa: E402

BASES = {"true": 1.0, "half": 0.5, "double": 2.0}
FACTORS = (0.5, 1.0, 2.0)  # coda_syntax.text.estimate_lengths' factors around its guess
ORDERS = {"reference": 1.0, "stops last": STOP_WEIGHT}  # SamplerConfig.stop_weight


def errors_then_confidence(fills: list[Fill], errors_of) -> list[Fill]:
    """Non-empty fills, those that parse first, then by the confidence they carry."""
    kept = [Fill(f.text, f.confidence, f.length, errors_of(f.text)) for f in fills
            if f.text.strip()]
    return sorted(kept, key=lambda f: (f.errors > 0, -f.confidence))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", type=Path, default=default_model_dir())
    p.add_argument("--spans", type=int, default=40)
    p.add_argument("--per-file", type=int, default=4)
    p.add_argument("--steps", type=int, default=Settings().fill_hole_steps)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    engine = Engine.load(args.model, device="cpu")
    tok, settings = engine.tokenizer, Settings()
    docs = heldout.heldout_documents(recipes.get("default_model_cpu").data)
    found = heldout.heldout_examples(docs, tok, per_file=args.per_file, seed=args.seed)
    examples = random.Random(args.seed).sample(found, min(args.spans, len(found)))
    rankings = {"canvas": errors_then_confidence, "fill": errors_then_confidence,
                "fill+fluent": lambda fills, errors: rank(fills, 0.0, errors)}
    rows: dict[tuple[str, str], list[tuple[str, float, int]]] = {}
    true_tokens = []
    for ex in examples:
        source = (ex.prefix + ex.middle + ex.suffix).encode("utf-8")
        start = len(ex.prefix.encode("utf-8"))
        syn = spans.Syntax(languages.resolve(language_id=ex.language), source)
        errors = spans.error_counter(syn, spans.Span(start, start + len(ex.middle.encode()),
                                                     ex.kind, ()))
        errors_of = lambda t, errors=errors: errors(t.encode("utf-8"))  # noqa: E731
        true_len = max(1, len(tok.encode(ex.middle)))
        true_tokens.append(true_len)
        window = settings.context_tokens * prompt.CHARS_PER_TOKEN + 1
        for base, scale in BASES.items():
            lengths = sorted({max(1, round(true_len * scale * f)) for f in FACTORS})
            pr = prompt.build(tok, ex.prefix[-window:], ex.suffix[:window], lengths,
                              engine.context_budget(settings), settings.max_middle_tokens)
            for order, weight in ORDERS.items():
                config = dataclasses.replace(engine.sampler(settings, args.steps),
                                             stop_weight=weight)
                with torch.inference_mode():
                    cands = infill(engine.model, tok, pr.prefix_ids, pr.suffix_ids, pr.lengths,
                                   config)
                texts = [tidy(c.text, ex.suffix, "\n", ex.prefix) for c in cands]
                by = {"canvas": [Fill(t, c.mean_confidence, c.length)
                                 for t, c in zip(texts, cands, strict=True)]}
                by["fill"] = by["fill+fluent"] = [Fill(t, c.fill_confidence, c.length)
                                                  for t, c in zip(texts, cands, strict=True)]
                for name, ranking in rankings.items():
                    ranked = ranking(by[name], errors_of)
                    best = ranked[0] if ranked else None
                    rows.setdefault((base, order, name), []).append(
                        (best.text if best else "", best.confidence if best else 0.0,
                         best.errors if best else 0))
    print(f"model={args.model} spans={len(examples)} steps={args.steps} "
          f"threads={args.threads} truth: mean {statistics.mean(true_tokens):.1f} tokens")
    threshold = settings.confidence_threshold
    print(f"{'base length':12} {'order':11} {'ranking':12} {'EM':>6} {'ES':>6} {'parses':>7} "
          f"{'nothing':>8} {'tokens':>7}   under {threshold}: {'share':>5} {'ES':>5} (over: ES)")
    for (base, order, name), picks in rows.items():
        pairs = [(t, ex) for (t, _, _), ex in zip(picks, examples, strict=True)]
        em = statistics.mean(heldout.exact_match(t, ex.middle) for t, ex in pairs)
        es = statistics.mean(heldout.edit_similarity(t, ex.middle) for t, ex in pairs)
        offered = [(t, c, e, ex) for (t, c, e), ex in zip(picks, examples, strict=True) if t]
        parses = mean_or_0([e == 0 for _, _, e, _ in offered])
        tokens = mean_or_0([len(tok.encode(t)) for t, _, _, _ in offered])
        under = [heldout.edit_similarity(t, ex.middle) for t, c, _, ex in offered if c < threshold]
        over = [heldout.edit_similarity(t, ex.middle) for t, c, _, ex in offered if c >= threshold]
        print(f"{base:12} {order:11} {name:12} {em:>6.3f} {es:>6.3f} {parses:>7.3f} "
              f"{1 - len(offered) / len(picks):>8.3f} {tokens:>7.1f}   {'':>9} "
              f"{len(under) / max(1, len(offered)):>5.2f} {mean_or_0(under):>5.3f} "
              f"({mean_or_0(over):.3f})")


def mean_or_0(values: list) -> float:
    return statistics.mean(values) if values else 0.0

if __name__ == "__main__":
    main()
