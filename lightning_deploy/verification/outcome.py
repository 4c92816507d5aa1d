"""One artifact's verification: each check compared leaf by leaf, folded into one outcome.

The export (``exporting/verifying/verify.py``, eager outputs in hand) and ``verify()`` on another machine
(eager outputs from the golden samples) compare by the same rules: the same leaf paths, every
leaf within ``atol + rtol * scale`` (``compare.py``), detection sets as sets (``detections.py``).
numpy only.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from lightning_deploy.verification.compare import LeafDiff
from lightning_deploy.verification.detections import compare_outputs

__all__ = ["Verification"]


@dataclasses.dataclass
class Verification:
    """The outcome of running an artifact at every check."""

    ok: bool
    runtime: str
    max_abs_diff: float | None = 0.0
    max_rel_diff: float | None = 0.0
    checked_shapes: list[list[list[int]]] = dataclasses.field(default_factory=list)
    error: str | None = None
    detections: dict[str, int] | None = None  # matched/unmatched counts, for outputs with boxes and scores
    vacuous: list[str] = dataclasses.field(default_factory=list)  # leaves whose scale is within the tolerance
    checks: list[dict[str, Any]] = dataclasses.field(default_factory=list)  # one record per check, in order
    skipped: list[dict[str, Any]] = dataclasses.field(default_factory=list)  # checks not run here, and why

    @property
    def checks_passed(self) -> int:
        """How many checks matched eager."""
        return sum(1 for check in self.checks if check["ok"])

    def failed(self, source: str, shapes: list, text: str) -> None:
        """A check where the artifact raised: recorded; the first failure is the verification's error."""
        self.checked_shapes.append(shapes)
        self.checks.append({"source": source, "shapes": shapes, "ok": False, "error": text[:2000]})
        if self.ok:
            self.ok = False
            self.error = f"{self.runtime} failed at the {source}, input shapes {shapes}: {text}"

    def compared(
        self,
        source: str,
        shapes: list,
        got: Mapping[str, Any],
        want: Mapping[str, np.ndarray],
        atol: float,
        rtol: float,
    ) -> None:
        """Compare one check's outputs by leaf name (``got`` as arrays the runtime gave) and record it."""
        self.checked_shapes.append(shapes)
        self._record(source, shapes, self._compare(got, want, atol, rtol), atol, rtol)

    def _compare(self, got: Mapping[str, Any], want: Mapping[str, np.ndarray], atol: float,
                 rtol: float) -> list[LeafDiff]:  # fmt: skip
        """The same leaf paths, then the leaves' values; detection counts add up."""
        names = list(want)
        missing, extra = [n for n in names if n not in got], [n for n in got if n not in want]
        if missing or extra:
            reason = f"the structure differs from eager: leaves missing {missing[:5]}, unexpected {extra[:5]}"
            return [LeafDiff("out", False, float("inf"), float("inf"), 0.0, reason)]
        diffs, counts = compare_outputs(names, [np.asarray(got[n]) for n in names], [want[n] for n in names],
                                        atol, rtol)  # fmt: skip
        if counts is not None:
            self.detections = self.detections or {"matched": 0, "unmatched": 0}
            for key, value in counts.items():
                self.detections[key] += value
        return diffs

    def _record(self, source: str, shapes: list, diffs: Sequence[LeafDiff], atol: float, rtol: float) -> None:
        """Record one check and fold it into the totals; the first failing check's message is the error."""
        failed = [d for d in diffs if not d.ok]
        finite = [d for d in diffs if d.reason is None]
        record: dict[str, Any] = {
            "source": source,
            "shapes": shapes,
            "ok": not failed,
            "max_abs_diff": max((d.max_abs for d in finite), default=0.0),
            "max_rel_diff": max((d.max_rel for d in finite), default=0.0),
        }
        for diff in diffs:
            self.max_abs_diff = max(self.max_abs_diff, diff.max_abs)
            self.max_rel_diff = max(self.max_rel_diff, diff.max_rel)
            if diff.vacuous(atol, rtol) and diff.name not in self.vacuous:
                self.vacuous.append(diff.name)
        if failed:
            record["error"] = "; ".join(d.describe(atol, rtol) for d in failed)
            if self.ok:
                self.ok = False
                self.error = f"mismatch in {self.runtime} at the {source}, input shapes {shapes}: {record['error']}"
        self.checks.append(record)
