"""Did the fine-tune help?  A paired comparison on the held-out spans, said in one line.

Both models fill the same spans, so the per-span difference in edit similarity is the honest
measure: its mean and standard error.  The fine-tune helped when the mean gain is above one
standard error (a difference inside the noise is not a gain) and the share of fills that parse
fell by no more than ``PARSE_TOLERANCE``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

PARSE_TOLERANCE = 0.02


@dataclass(frozen=True)
class Verdict:
    spans: int
    es_before: float
    es_after: float
    diff: float            # mean of after − before per span
    se: float              # its standard error
    parse_before: float
    parse_after: float
    helped: bool
    why: str

    def line(self) -> str:
        head = "the fine-tune helped" if self.helped else "the fine-tune did NOT help"
        return (f"{head}: edit similarity {self.es_before:.3f} -> {self.es_after:.3f} "
                f"(paired {self.diff:+.3f} ± {self.se:.3f} over {self.spans} spans), fills that "
                f"parse {self.parse_before:.3f} -> {self.parse_after:.3f}; {self.why}")

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def paired(before: list[float], after: list[float]) -> tuple[float, float]:
    """Mean and standard error of the per-item differences."""
    d = [a - b for b, a in zip(before, after, strict=True)]
    n = len(d)
    if n == 0:
        return 0.0, 0.0
    mean = sum(d) / n
    if n == 1:
        return mean, 0.0
    var = sum((x - mean) ** 2 for x in d) / (n - 1)
    return mean, math.sqrt(var / n)


def judge(before: dict, after: dict, parse_tolerance: float = PARSE_TOLERANCE) -> Verdict:
    """``before``/``after``: ``training.eval.repo.score`` results over the same spans."""
    ids_b = [s["id"] for s in before["per_span"]]
    if ids_b != [s["id"] for s in after["per_span"]]:
        raise ValueError("before and after were scored on different spans")
    diff, se = paired([s["similarity"] for s in before["per_span"]],
                      [s["similarity"] for s in after["per_span"]])
    parse_drop = before["parses"] - after["parses"]
    if diff <= 0:
        why = "edit similarity did not rise"
    elif diff <= se:
        why = "the gain is within one standard error (noise)"
    elif parse_drop > parse_tolerance:
        why = f"fewer fills parse (down {parse_drop:.3f}, more than {parse_tolerance})"
    else:
        why = "gain beyond one standard error, parse rate kept"
    helped = diff > 0 and diff > se and parse_drop <= parse_tolerance
    return Verdict(len(ids_b), before["edit_similarity"], after["edit_similarity"], diff, se,
                   before["parses"], after["parses"], helped, why)
