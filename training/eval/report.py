"""Aggregate evaluation fills into rows, a markdown table and the quality-vs-latency PNG.

One summary row per configuration (system, steps, masks) with, per task, the mean of each
metric; ``ms`` is the mean wall time per infill over all of the row's fills.  No model here.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

HE_TASKS = ("single-line", "multi-line", "random-span")
TEXT_TASKS = ("heldout", "unseen")   # scored against the text: exact, similarity, parses
MASK_ORDER = {"true": 0, "half": 1, "double": 2, "server": 3, "-": 4}
SYSTEMS = {"diffusion": "diffusion", "ar": "AR (PSM, greedy, KV cache)",
           "empty": "empty fill (floor)", "previous-line": "copy previous line (floor)"}
SYSTEM_ORDER = {"diffusion": 0, "ar": 1, "empty": 2, "previous-line": 3}


def summarize(fills) -> list[dict]:
    groups: dict[tuple, list] = defaultdict(list)
    for f in fills:
        groups[(f.system, f.steps, f.masks)].append(f)
    rows = []
    for (system, steps, masks), group in groups.items():
        row = {"system": system, "steps": steps, "masks": masks, "n": len(group),
               "ms": sum(f.ms for f in group) / len(group), "tasks": {}}
        by_task: dict[str, list] = defaultdict(list)
        for f in group:
            by_task[f.task].append(f)
        for task, tf in by_task.items():
            metrics = {"exact": _mean([f.exact for f in tf]),
                       "similarity": _mean([f.similarity for f in tf]),
                       "ms": _mean([f.ms for f in tf])}
            if task in TEXT_TASKS:
                metrics["parses"] = _mean([f.parses for f in tf])
            else:
                metrics["pass@1"] = _mean([f.passed for f in tf])
            row["tasks"][task] = metrics
        rows.append(row)
    rows.sort(key=lambda r: (SYSTEM_ORDER.get(r["system"], 9), MASK_ORDER.get(r["masks"], 9),
                             r["steps"] or 0))
    return rows


def _mean(values) -> float:
    return sum(float(v) for v in values) / len(values) if values else float("nan")


def columns(summary: list[dict]) -> list[tuple[str, str, str]]:
    """(header, task, metric) for every metric present, HumanEval tasks first."""
    tasks = {t for row in summary for t in row["tasks"]}
    cols = [(f"{t} pass@1", t, "pass@1") for t in HE_TASKS if t in tasks]
    for t in TEXT_TASKS:
        if t in tasks:
            cols += [(f"{t} EM", t, "exact"), (f"{t} ES", t, "similarity"),
                     (f"{t} parses", t, "parses")]
    return cols


def markdown_table(summary: list[dict], counts: dict[str, int] | None = None) -> str:
    cols = columns(summary)
    header = ["model", "steps", "masks", *[c[0] for c in cols], "ms/infill"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in summary:
        cells = [SYSTEMS.get(row["system"], row["system"]),
                 str(row["steps"]) if row["steps"] is not None else "—", row["masks"]
                 if row["masks"] != "-" else "—"]
        for _, task, metric in cols:
            value = row["tasks"].get(task, {}).get(metric)
            cells.append("" if value is None else f"{value:.3f}")
        cells.append(f"{row['ms']:.0f}")
        lines.append("| " + " | ".join(cells) + " |")
    if counts:
        lines.append("")
        lines.append("examples per task: " + ", ".join(f"{t} {n}" for t, n in counts.items()))
    return "\n".join(lines)


def headline(row: dict) -> dict[str, float]:
    """The plotted qualities: mean HumanEval pass@1 over its tasks, held-out ES and EM."""
    out = {}
    he = [row["tasks"][t]["pass@1"] for t in HE_TASKS if t in row["tasks"]]
    if he:
        out["HumanEval-Infilling pass@1 (mean of tasks)"] = sum(he) / len(he)
    if "heldout" in row["tasks"]:
        out["held-out edit similarity"] = row["tasks"]["heldout"]["similarity"]
        out["held-out exact match"] = row["tasks"]["heldout"]["exact"]
    return out


def plot(summary: list[dict], path: str | Path, title: str = "") -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(dict.fromkeys(k for row in summary for k in headline(row)))
    fig, axes = plt.subplots(1, max(1, len(names)), figsize=(5 * max(1, len(names)), 4),
                             dpi=110, squeeze=False)
    styles = {"true": ("#157", "-"), "half": ("#c50", "--"), "double": ("#5a2", ":"),
              "server": ("#000", "-.")}
    for ax, name in zip(axes[0], names, strict=False):
        for masks, (color, ls) in styles.items():
            pts = [(r["ms"], headline(r)[name], r["steps"]) for r in summary
                   if r["system"] == "diffusion" and r["masks"] == masks and name in headline(r)]
            if not pts:
                continue
            pts.sort()
            ax.plot([p[0] for p in pts], [p[1] for p in pts], ls, marker="o", ms=4, color=color,
                    label=f"diffusion, {masks} length")
            for x, y, s in pts:
                ax.annotate(str(s), (x, y), textcoords="offset points", xytext=(3, 3),
                            fontsize=7, color=color)
        for r in summary:
            if r["system"] == "ar" and name in headline(r):
                ax.plot([r["ms"]], [headline(r)[name]], "*", ms=12, color="#a2a",
                        label="AR baseline (greedy)")
            if r["system"] in ("empty", "previous-line") and name in headline(r):
                ax.axhline(headline(r)[name], color="#888" if r["system"] == "empty" else "#b88",
                           lw=0.8, ls="-.", label=SYSTEMS[r["system"]])
        ax.set_xscale("log")
        ax.set_xlabel("ms per infill (log; labels: diffusion steps)")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    path = Path(path)
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    tmp.replace(path)
    return path
