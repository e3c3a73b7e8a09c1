"""JSONL metrics and the loss-curve PNG of a run (nothing here touches the model)."""

from __future__ import annotations

import json
import math
from pathlib import Path


class MetricsLog:
    """Append-only JSONL; on resume, rows past the resumed step are dropped first."""

    def __init__(self, path: str | Path, resume_step: int | None = None) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        rows = read_metrics(self.path) if self.path.exists() else []
        if resume_step is None:
            rows = []
        else:
            rows = [r for r in rows if r.get("step", 0) <= resume_step]
        with self.path.open("w") as f:
            for r in rows:
                f.write(json.dumps(r) + "\n")

    def write(self, row: dict) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps(row) + "\n")


def read_metrics(path: str | Path) -> list[dict]:
    rows = []
    for line in Path(path).read_text().splitlines():
        line = line.strip()
        if line:
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:  # a line cut by a kill
                continue
    return rows


def plot_losses(metrics_path: str | Path, png_path: str | Path, title: str = "") -> None:
    """Train loss (and its running mean) and eval losses against tokens seen."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_metrics(metrics_path)
    train = [r for r in rows if r.get("kind") == "train"]
    evals = [r for r in rows if r.get("kind") == "eval"]
    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    if train:
        x = [r["tokens"] / 1e6 for r in train]
        y = [r["masked_ce"] for r in train]
        ax.plot(x, y, color="#9bb", lw=0.8, label="train masked CE")
        k = max(1, len(y) // 30)
        smooth = [sum(y[max(0, i - k):i + 1]) / len(y[max(0, i - k):i + 1]) for i in range(len(y))]
        ax.plot(x, smooth, color="#157", lw=1.6, label=f"train (running mean of {k + 1})")
    for key, color in (("masked_ce", "#c50"), ("fim_masked_ce", "#5a2")):
        pts = [(r["tokens"] / 1e6, r[key]) for r in evals if key in r and math.isfinite(r[key])]
        if pts:
            ax.plot(*zip(*pts, strict=True), "o-", color=color, ms=3, label=f"eval {key}")
    ax.set_xlabel("training tokens (millions)")
    ax.set_ylabel("cross-entropy on masked tokens (nats)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if train or evals:   # nothing logged yet: an empty plot, no legend warning
        ax.legend()
    fig.tight_layout()
    tmp = Path(png_path).with_suffix(".tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    tmp.replace(png_path)
