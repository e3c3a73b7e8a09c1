"""``python -m training.ship RUN_OUT``: install a budgeted run's export as the shipped model.

A ``training.gpu_run`` output folder (a GPU session's ``$OUT``, or a CPU run's ``--out``) holds
``model/`` (config + bf16 weights), ``corpus_manifest.json`` and ``report.json``.  Shipping:

1. refuse a run that did not finish, or whose weights predict held-out code worse than the
   shipped ones on ``training.eval.probe`` (the same rows and masks for both, run here; the run's
   own evaluation, drawn at random on its machine, is reported but too noisy to decide);
   run as ``python scripts/ship_model.py RUN``, the held-out span fills through the server's
   own fill path decide instead (``fills_judge``: refused if their edit similarity is lower;
   twice a probe-better run wrote no better fills, and a run aimed at the fills may move the
   probe the other way), the probe only reported; ``--force`` ships anyway;
2. replace the weights and config of ``--model`` (default ``model/``), keeping its tokenizer
   files (runs never change the tokenizer), and check the result loads;
3. keep provenance beside it: ``corpus_manifest.json`` (per package: version, licence, files,
   tokens, sha256; earlier runs' manifests kept as ``corpus_manifest.run<N>.json``), the run's
   loss curve ``loss.run<N>.png`` and one more entry in ``training_runs.json`` (the report
   without its metric rows);
4. with ``scripts/ship_model.py``, serve the candidate through ``bench_lsp.py`` and record its
   typing p50/p95 (warned about past ``TYPING_BUDGET_MS``, not refused);
5. print the model card's section for this run (markdown), to paste into ``MODEL_CARD.md``.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from training.errors import UsageError, main_guarded

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[1]
WEIGHT_GLOBS = ("*.safetensors", "model.safetensors.index.json")
# (report key, label, lower is better)
OBJECTIVE = (("masked_ce", "masked CE (mixed objective)", True),
             ("fim_masked_ce", "FIM masked CE", True),
             ("ce_sigma0.05", "CE, 5 % masked", True),
             ("top1_sigma0.05", "top-1, 5 % masked", False),
             ("ce_sigma0.3", "CE, 30 % masked", True),
             ("top1_sigma0.3", "top-1, 30 % masked", False))


class ShipError(UsageError):
    """A run that cannot or should not be shipped, with the reason."""


def read_run(run: Path) -> tuple[dict, dict]:
    try:
        report = json.loads((run / "report.json").read_text())
        manifest = json.loads((run / "corpus_manifest.json").read_text())
    except (OSError, ValueError) as exc:
        raise ShipError(f"{run}: not a finished training.gpu_run output ({exc})") from None
    if not (run / "model" / "config.json").is_file():
        raise ShipError(f"{run}/model has no config.json")
    return report, manifest


def regressions(report: dict) -> list[str]:
    """Held-out objective figures that got worse between the run's two evaluations."""
    before, after = report.get("eval_before") or {}, report.get("eval_after") or {}
    worse = []
    for key, label, lower in OBJECTIVE:
        if key in before and key in after and (after[key] > before[key]) == lower \
                and after[key] != before[key]:
            worse.append(f"{label} {before[key]:.3f} → {after[key]:.3f}")
    return worse


Judge = Callable[[Path, Path], tuple[dict, dict]]


def probe_judge(model: Path, candidate: Path) -> tuple[dict, dict]:
    """``training.eval.probe`` of the shipped model and the candidate, on the same rows."""
    from training.eval import probe
    results = probe.compare([model, candidate], tokenizer_dir=model)
    return results[str(model)], results[str(candidate)]


# The held-out fill evaluation the model card reports (about 3 minutes a model on 2 cores).
FILL_EVAL = dict(tasks=("heldout",), steps=(8,), lengths=("server",), limit=400, seed=7,
                 per_file=16)
FILL_METRICS = ("exact", "similarity", "parses")


def stage(candidate: Path, model: Path, folder: Path) -> Path:
    """A loadable folder: the candidate's weights and config beside the shipped tokenizer
    files (runs export no tokenizer; they never change it)."""
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = [p for p in model.iterdir() if p.is_file() and p.name != "config.json"
                 and not any(p.match(g) for g in WEIGHT_GLOBS)]
    weights = [p for g in WEIGHT_GLOBS for p in candidate.glob(g)]
    for src in [*tokenizer, candidate / "config.json", *weights]:
        (folder / src.name).symlink_to(src.resolve())
    return folder


def fills_judge(server_fill, **fill_eval) -> Judge:
    """Judge by held-out span fills through the server's fill path (``server_fill`` as
    ``training.eval.evaluate`` takes it): mean exact match, edit similarity and parse rate of the
    shipped model and the candidate on the same cases."""
    options = {**FILL_EVAL, **fill_eval}

    def judge(model: Path, candidate: Path) -> tuple[dict, dict]:
        from training.eval.evaluate import evaluate
        scores = []
        with tempfile.TemporaryDirectory() as tmp:
            for folder in (model, stage(candidate, model, Path(tmp) / "candidate")):
                result = evaluate(folder, server_fill=server_fill, **options)
                row = next(r for r in result["summary"] if r["system"] == "diffusion")
                scores.append({k: row["tasks"]["heldout"][k] for k in FILL_METRICS})
        return scores[0], scores[1]
    return judge


def install(run: Path, model: Path) -> list[str]:
    """Swap the weights and config; the tokenizer files stay.  Returns the files written."""
    new = [p for g in WEIGHT_GLOBS for p in sorted((run / "model").glob(g))]
    if not any(p.suffix == ".safetensors" for p in new):
        raise ShipError(f"{run}/model has no .safetensors weights")
    for old in [p for g in WEIGHT_GLOBS for p in model.glob(g)]:
        old.unlink()
    written = []
    for src in [run / "model" / "config.json", *new]:
        shutil.copy2(src, model / src.name)
        written.append(src.name)
    return written


def keep_provenance(run: Path, model: Path, report: dict, number: int) -> None:
    """The weights hold every shipped run's data, so each run's manifest stays: the newest is
    ``corpus_manifest.json``, the one before it moves to ``corpus_manifest.run<N-1>.json``.
    The run's loss curve goes beside them as ``loss.run<N>.png`` (skipped without
    matplotlib: the weights matter more than the picture)."""
    current = model / "corpus_manifest.json"
    if current.is_file():
        current.replace(model / f"corpus_manifest.run{number - 1}.json")
    shutil.copy2(run / "corpus_manifest.json", current)
    rows = report.get("metrics") or []
    if not rows:
        return
    try:
        from training.run.metrics import plot_losses
        with tempfile.TemporaryDirectory() as tmp:
            jsonl = Path(tmp) / "metrics.jsonl"
            jsonl.write_text("".join(json.dumps(r) + "\n" for r in rows))
            plot_losses(jsonl, model / f"loss.run{number}.png",
                        title=f"run {number}: {report.get('device', '?')}")
    except (ImportError, KeyError, TypeError, ValueError) as exc:
        log.warning("no loss curve for run %d: %s: %s", number, type(exc).__name__, exc)


def _short(path: str) -> str:
    """A path inside the repository as the repository names it."""
    try:
        return str(Path(path).resolve().relative_to(REPO))
    except ValueError:
        return path


def card_section(report: dict, manifest: dict, judged: tuple[dict, dict] | None = None,
                 filled: tuple[dict, dict] | None = None, typing: dict | None = None) -> str:
    """The run as MODEL_CARD.md describes runs: data, compute, held-out objective."""
    cal, data = report.get("calibration") or {}, report.get("data") or {}
    recipe = report.get("recipe") or {}
    train = recipe.get("train") or {}
    optim = recipe.get("optim") or {}
    pkgs = sorted(manifest.get("packages", []), key=lambda p: -p["tokens"])
    grew = report.get("data_growth") or []   # the corpus grew while the run trained on it
    grown = report.get("grown") if "hidden" in (report.get("grown") or {}) \
        and not report["grown"].get("skipped") else None
    train_tokens = grew[-1]["train_tokens"] if grew else data.get("train_tokens", 1)
    lines = [
        f"### Run on {report.get('device', '?')} (torch {report.get('torch', '?')})",
        "",
        f"- Start: `{_short(recipe.get('init_from', '?'))}`"
        + (f", grown from {grown['layers'][0]} × {grown['hidden'][0]} to {grown['layers'][1]} "
           f"× {grown['hidden'][1]} (layers × width, function-preserving: largest logit "
           f"difference {grown['max_logit_gap']:.0e})" if grown else "")
        + f", {report.get('parameters', 0) / 1e6:.2f} M parameters; batch "
        f"{train.get('batch_size')} × {data.get('seq_len')}, AdamW lr "
        f"{optim.get('lr')} ({optim.get('warmup_steps')} warm-up steps, cosine to "
        f"{optim.get('min_lr_ratio')} of it), precision {train.get('precision')}.",
        f"- Data: {manifest['files']:,} files, {manifest['bytes'] / 1e6:.1f} MB, "
        f"{manifest['tokens'] / 1e6:.1f} M tokens from {len(pkgs)} packages (licences: "
        f"{', '.join(manifest.get('licences', []))}); dropped {manifest.get('dropped_files')}; "
        f"decontaminated against {manifest.get('decontamination')}; excluded packages: "
        + (", ".join(f"{p['package']} ({p['reason']})" for p in manifest.get(
            "excluded_packages", [])) or "none") + ".",
        f"- Compute: {report.get('steps')} steps, {report.get('tokens', 0) / 1e6:.1f} M tokens "
        f"({report.get('tokens', 0) / max(1, train_tokens):.2f} passes over the final corpus"
        + (f", which grew from {data.get('train_tokens', 0) / 1e6:.1f} M training tokens at "
           f"the start" if grew else "") + "), "
        f"{report.get('train_seconds', 0) / 60:.1f} min of training at "
        f"{report.get('tokens', 0) / max(1e-9, report.get('train_seconds', 0)):,.0f} tokens/s "
        f"({cal.get('tokens_per_s', 0):,.0f} calibrated at the start), "
        f"≈ {report.get('flops', 0):.2g} FLOPs (6·N·T).",
        "",
        "| held-out objective | before | after |",
        "|---|---|---|",
    ]
    before, after = report.get("eval_before") or {}, report.get("eval_after") or {}
    for key, label, _ in OBJECTIVE:
        if key in before and key in after:
            lines.append(f"| {label} | {before[key]:.3f} | {after[key]:.3f} |")
    if judged:
        from training.eval.probe import points
        lines += ["", "| held-out probe (`training.eval.probe`), CE / top-1 | before | after |",
                  "|---|---|---|"]
        for p in points():
            lines.append(f"| {p} | {judged[0][f'ce_{p}']:.3f} / {judged[0][f'top1_{p}']:.3f} | "
                         f"{judged[1][f'ce_{p}']:.3f} / {judged[1][f'top1_{p}']:.3f} |")
        lines.append(f"| mean CE | {judged[0]['ce_mean']:.3f} | {judged[1]['ce_mean']:.3f} |")
    if filled:
        lines += ["", f"| held-out fills ({FILL_EVAL['limit']} spans, server path) | before | "
                  "after |", "|---|---|---|"]
        for key in FILL_METRICS:
            lines.append(f"| {key} | {filled[0][key]:.3f} | {filled[1][key]:.3f} |")
    if typing:
        over = typing_over_budget(typing)
        lines += ["", f"Typing (`bench_lsp.py --steps 8`, this machine): p50 "
                  f"{typing['p50_ms']:.0f} ms, p95 {typing['p95_ms']:.0f} ms, cold start "
                  f"{typing.get('cold_s', 0):.1f} s, peak RSS {typing.get('rss_mb', 0):.0f} MB"
                  + (f" — OVER THE BUDGET ({'; '.join(over)})" if over else
                     " (within p50 ≤ 100 / p95 ≤ 200 ms).")]
        if typing.get("automatic_bar"):
            lines += ["", automatic_bar_line(typing["automatic_bar"])]
    lines += ["", "| package | version | licence | files | tokens |", "|---|---|---|---|---|"]
    for p in pkgs[:12]:
        lines.append(f"| {p['package']} | {p['version']} | {p['licence']} | {p['files']} | "
                     f"{p['tokens'] / 1e6:.2f} M |")
    if len(pkgs) > 12:
        rest = pkgs[12:]
        lines.append(f"| {len(rest)} more | | | {sum(p['files'] for p in rest)} | "
                     f"{sum(p['tokens'] for p in rest) / 1e6:.2f} M |")
    return "\n".join(lines) + "\n"


TYPING_BUDGET_MS = {"p50_ms": 100.0, "p95_ms": 200.0}  # issue 11, bench_lsp.py --steps 8
# The automatic bar was set (session 11) to hide the least sure ~30 % of typing offers; a model
# whose confidences sit elsewhere shows far more or far fewer, and the bar should be measured
# again (benchmarks/bench_threshold.py).
SHOWN_RANGE = (0.5, 0.9)


def automatic_bar_off(row: dict) -> bool:
    return not SHOWN_RANGE[0] <= row["shown"] <= SHOWN_RANGE[1]


def automatic_bar_line(row: dict) -> str:
    lo, hi = SHOWN_RANGE
    return (f"Ghost text while typing (`bench_threshold.py`, {row['spans']} held-out spans): "
            f"automaticConfidenceThreshold {row['bar']} shows {row['shown']:.0%} of the offers "
            f"(ES {row['es_shown']:.3f} of those shown, {row['es_hidden']:.3f} of those hidden; "
            f"{row['exact_kept']} of {row['exact_at_base']} exact offers kept)"
            + (f" — OUTSIDE {lo:.0%}–{hi:.0%}: measure the bar again with "
               "benchmarks/bench_threshold.py." if automatic_bar_off(row) else "."))


def typing_over_budget(latency: dict) -> list[str]:
    return [f"{key[:3]} {latency[key]:.0f} ms > {limit:.0f}"
            for key, limit in TYPING_BUDGET_MS.items() if latency.get(key, 0) > limit]


def ship(run: Path, model: Path, force: bool = False, judge: Judge | None = None,
         fills: Judge | None = None, latency: Callable[[Path], dict] | None = None) -> str:
    """latency(folder) -> {"p50_ms", "p95_ms", ...}: the candidate's typing latency on this
    machine (scripts/ship_model.py runs bench_lsp.py). Recorded and, over the budget, warned
    about, not refused: a busy machine's p95 is noise, and a grown model's shape was measured
    before its run was planned (benchmarks/bench_sizes.py)."""
    report, manifest = read_run(run)
    if report.get("status") != "done" and not force:
        raise ShipError(f"{run}: the run's status is {report.get('status')!r}, not 'done' "
                        "(--force ships its last export)")
    worse = regressions(report)
    if worse:
        log.warning("the run's own evaluation got worse on: %s", "; ".join(worse))
    judged = (judge or probe_judge)(model, run / "model")
    before, after = judged[0]["ce_mean"], judged[1]["ce_mean"]
    probe_worse = (f"training.eval.probe mean CE {before:.3f} → {after:.3f}"
                   if after > before else None)
    filled = fills(model, run / "model") if fills else None
    if filled is None:   # the probe decides
        if probe_worse and not force:
            raise ShipError(f"the run predicts held-out code worse than {model}: "
                            f"{probe_worse} (--force ships anyway)")
    else:   # what users see decides; the probe is reported
        if probe_worse:
            log.warning("the probe finds the run worse (%s); the held-out fills decide",
                        probe_worse)
        if filled[1]["similarity"] < filled[0]["similarity"] and not force:
            raise ShipError(f"the run fills held-out spans worse than {model}: edit "
                            f"similarity {filled[0]['similarity']:.3f} → "
                            f"{filled[1]['similarity']:.3f}, exact {filled[0]['exact']:.3f} → "
                            f"{filled[1]['exact']:.3f} (--force ships anyway)")
    typing = None
    if latency is not None:
        with tempfile.TemporaryDirectory() as tmp:
            typing = latency(stage(run / "model", model, Path(tmp) / "candidate"))
        over = typing_over_budget(typing)
        if over:
            log.warning("the run types over the budget on this machine: %s", "; ".join(over))
        if typing.get("automatic_bar") and automatic_bar_off(typing["automatic_bar"]):
            log.warning("the automatic bar shows %.0f%% of typing offers: measure it again "
                        "(benchmarks/bench_threshold.py)", 100 * typing["automatic_bar"]["shown"])
    install(run, model)
    from coda_model import load_model
    load_model(model)   # fails here, not in an editor, if the folder does not load
    history = model / "training_runs.json"
    runs = json.loads(history.read_text()) if history.is_file() else []
    keep_provenance(run, model, report, len(runs) + 1)
    runs.append({**{k: v for k, v in report.items() if k != "metrics"},
                 "probe": {"before": judged[0], "after": judged[1]},
                 **({"fills": {"before": filled[0], "after": filled[1]}} if filled else {}),
                 **({"typing": typing} if typing else {})})
    history.write_text(json.dumps(runs, indent=1) + "\n")
    return card_section(report, manifest, judged, filled, typing)


def main(argv: list[str] | None = None, server_fill=None,
         typing_latency: Callable[[Path], dict] | None = None) -> int:
    """``server_fill`` (given by scripts/ship_model.py, which may import the server) makes the
    held-out fills the judge; the probe then only warns. ``typing_latency`` (from there too)
    measures the candidate's typing latency for the record."""
    p = argparse.ArgumentParser(prog="scripts/ship_model.py" if server_fill else
                                "python -m training.ship",
                                description=__doc__.splitlines()[0])
    p.add_argument("run", type=Path, help="a training.gpu_run --out folder")
    p.add_argument("--model", type=Path, default=REPO / "model")
    p.add_argument("--force", action="store_true",
                   help="ship an unfinished run, or one the held-out probe finds worse")
    p.add_argument("-v", "--verbose", action="store_true", help="tracebacks for errors")
    args = p.parse_args(argv)

    def run(a) -> int:
        fills = fills_judge(server_fill) if server_fill else None
        print(ship(a.run, a.model, a.force, fills=fills, latency=typing_latency), end="")
        return 0
    return main_guarded(p, args, run)


if __name__ == "__main__":
    sys.exit(main())
