"""Compare exported outputs with eager ones, leaf by leaf, each against its own scale.

A leaf matches when ``max|got - want| <= atol + rtol * max|want|`` (DESIGN.md: random-weight
networks have huge outputs, so an element-wise relative tolerance would fail at float32
precision). NaNs match NaNs in the same places; boolean leaves match where at most ``rtol`` of
their elements differ. numpy only, so ``load`` can share it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from lightning_deploy.schema import Record

__all__ = ["LeafDiff", "compare_leaves", "compare_outputs", "named_leaves"]


@dataclasses.dataclass(frozen=True)
class LeafDiff:
    """How one output leaf compared."""

    name: str
    ok: bool
    max_abs: float
    max_rel: float
    scale: float
    reason: str | None = None

    def vacuous(self, atol: float, rtol: float) -> bool:
        """Whether the comparison proved nothing: the tolerance admits an all-zero output (e.g. scale ~1e-16)."""
        return self.reason is None and self.scale <= atol + rtol * self.scale

    def describe(self, atol: float, rtol: float) -> str:
        """One line naming the leaf, the differences and the tolerances."""
        if self.reason:
            return f"output '{self.name}': {self.reason}"
        return (
            f"output '{self.name}': max abs diff {self.max_abs:.3g} > atol {atol:g} + rtol {rtol:g}"
            f" * scale {self.scale:.3g} (max diff relative to scale {self.max_rel:.3g})"
        )


def compare_leaves(
    names: Sequence[str], got: Sequence[np.ndarray], want: Sequence[np.ndarray], atol: float, rtol: float
) -> list[LeafDiff]:
    """Compare each pair of leaves; returns one :class:`LeafDiff` per name."""
    if len(got) != len(want):
        return [LeafDiff("*", False, float("inf"), float("inf"), 0.0, f"{len(got)} outputs, expected {len(want)}")]
    return [_compare(name, np.asarray(g), np.asarray(w), atol, rtol) for name, g, w in zip(names, got, want)]


def compare_outputs(
    names: Sequence[str], got: Sequence[np.ndarray], want: Sequence[np.ndarray], atol: float, rtol: float
) -> tuple[list[LeafDiff], dict[str, int] | None]:
    """Compare output leaves by name: detection sets order-insensitively, every other leaf element-wise.

    Returns the differences and, where there are detection sets, their matched and unmatched counts.
    """
    groups = detection_groups(names)
    grouped = {i for fields in groups.values() for i in fields.values()}
    plain = [i for i in range(len(names)) if i not in grouped]
    diffs = compare_leaves([names[i] for i in plain], [got[i] for i in plain], [want[i] for i in plain], atol, rtol)
    counts = {"matched": 0, "unmatched": 0} if groups else None
    for fields in groups.values():
        indices = list(fields.values())
        match = compare_detections([names[i] for i in indices], list(fields), [got[i] for i in indices],
                                   [want[i] for i in indices], atol, rtol)  # fmt: skip
        diffs.extend(match.diffs)
        counts["matched"] += match.matched
        counts["unmatched"] += match.unmatched
    return diffs, counts


def named_leaves(value: Any, prefix: str) -> dict[str, Any]:
    """The leaves of a structured value by path (``out.logits``, ``out.parts.0.first``), ``None`` left out.

    The paths are those that ``torch.utils._pytree`` key paths give on the export side: dict keys,
    sequence indices, named tuple and dataclass fields, and a :class:`Record`'s or mapping's keys.
    """
    found: dict[str, Any] = {}
    _collect(value, prefix, found)
    return found


def _collect(value: Any, path: str, found: dict[str, Any]) -> None:
    if value is None:
        return
    if isinstance(value, (Record, Mapping)):
        children: Any = value.items()
    elif isinstance(value, tuple) and hasattr(value, "_fields"):
        children = zip(value._fields, value)
    elif isinstance(value, (list, tuple)):
        children = enumerate(value)
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        children = ((f.name, getattr(value, f.name)) for f in dataclasses.fields(value))
    else:
        found[path] = value
        return
    for key, child in children:
        _collect(child, f"{path}.{key}", found)


def _compare(name: str, got: np.ndarray, want: np.ndarray, atol: float, rtol: float) -> LeafDiff:
    if got.shape != want.shape:
        return LeafDiff(
            name, False, float("inf"), float("inf"), 0.0, f"shape {list(got.shape)}, expected {list(want.shape)}"
        )
    if want.size == 0:
        return LeafDiff(name, True, 0.0, 0.0, 0.0)
    if want.dtype == np.bool_ and got.dtype == np.bool_:
        return _compare_binary(name, got, want, rtol)
    got64, want64 = got.astype(np.float64), want.astype(np.float64)
    nan_got, nan_want = np.isnan(got64), np.isnan(want64)
    if not np.array_equal(nan_got, nan_want):
        return LeafDiff(name, False, float("nan"), float("nan"), 0.0, "NaNs in different places")
    finite = ~nan_want
    diff = np.abs(got64[finite] - want64[finite])
    max_abs = float(diff.max(initial=0.0))
    scale = float(np.abs(want64[finite]).max(initial=0.0))
    max_rel = max_abs / scale if scale > 0 else (0.0 if max_abs == 0 else float("inf"))
    ok = bool(max_abs <= atol + rtol * scale)
    return LeafDiff(name, ok, max_abs, max_rel, scale)


def _compare_binary(name: str, got: np.ndarray, want: np.ndarray, rtol: float) -> LeafDiff:
    """Boolean leaves (thresholded masks) match where at most ``rtol`` of their elements differ.

    A value at the threshold (a mask's edge, pasted by bilinear interpolation) flips with float
    rounding, and a flipped element differs by the whole scale: no element-wise tolerance fits.
    ``max_rel`` is the share of elements that differ; ``max_abs`` 1 where any does.
    """
    share = float(np.count_nonzero(got != want)) / want.size
    reason = None if share <= rtol else f"{share:.3g} of its elements differ (more than rtol {rtol:g})"
    return LeafDiff(name, share <= rtol, float(share > 0), share, 1.0, reason)


@dataclasses.dataclass
class DetectionMatch:
    """How one set of detections (``boxes``, ``scores``, ``labels``, ...) compared."""

    diffs: list[LeafDiff]
    matched: int
    unmatched: int


def detection_groups(names: Sequence[str]) -> dict[str, dict[str, int]]:
    """Output leaves that form detection sets: siblings holding boxes and scores.

    torchvision names them ``boxes``, ``scores``, ``labels``; detectron2's ``Instances``
    ``pred_boxes`` (a ``Boxes``, whose leaf is ``pred_boxes.tensor``), ``scores``, ``pred_classes``.
    Returns ``{prefix: {field: leaf index}}`` by torchvision's field names, e.g.
    ``{"out.0": {"boxes": 0, "labels": 1, "scores": 2}}``.
    """
    by_prefix: dict[str, dict[str, int]] = {}
    for index, name in enumerate(names):
        for suffix, field in _DETECTION_FIELDS.items():
            if name.endswith("." + suffix):
                by_prefix.setdefault(name[: -len(suffix) - 1], {})[field] = index
                break
    return {prefix: fields for prefix, fields in by_prefix.items() if {"boxes", "scores"} <= set(fields)}


# leaf name suffix -> field, longest first where one ends another
_DETECTION_FIELDS = {
    "pred_boxes.tensor": "boxes", "pred_classes": "labels", "pred_masks": "masks", "pred_keypoints": "keypoints",
    "pred_keypoint_heatmaps": "keypoint_heatmaps", "boxes": "boxes", "scores": "scores", "labels": "labels",
    "masks": "masks", "keypoints_scores": "keypoints_scores", "keypoints": "keypoints",
}  # fmt: skip
_MIN_IOU = 0.5


def compare_detections(
    names: Sequence[str],
    kinds: Sequence[str],
    got: Sequence[np.ndarray],
    want: Sequence[np.ndarray],
    atol: float,
    rtol: float,
) -> DetectionMatch:
    """Compare two sets of detections regardless of order; ``kinds`` say what each leaf holds (``boxes``, ...).

    Each eager detection is matched to an unmatched exported one with the same label, IoU of
    at least 0.5 and the closest score; matched rows of every leaf are then compared with
    the usual scale-relative tolerance. A detection may stay unmatched only when its score
    lies within tolerance of the cut-off (the lowest score either runtime kept): NMS and
    top-k may keep different members of a near-tie there. Nothing is loosened.
    """
    fields = {kind: index for index, kind in enumerate(kinds)}
    g = {f: np.asarray(got[i], dtype=np.float64) for f, i in fields.items()}
    w = {f: np.asarray(want[i], dtype=np.float64) for f, i in fields.items()}
    box_tol = atol + rtol * float(np.abs(w["boxes"]).max(initial=0.0))
    pairs = _match(g, w, fields, box_tol)
    score_tol = atol + rtol * float(np.abs(w["scores"]).max(initial=0.0))
    kept = np.concatenate([w["scores"], g["scores"]])
    cutoff = float(kept.min()) if kept.size else 0.0
    lonely_want = [i for i in range(len(w["scores"])) if i not in {a for a, _ in pairs}]
    lonely_got = [j for j in range(len(g["scores"])) if j not in {b for _, b in pairs}]
    far = [float(s) for s in (*w["scores"][lonely_want], *g["scores"][lonely_got]) if abs(s - cutoff) > score_tol]
    want_rows = [a for a, _ in pairs]
    got_rows = [b for _, b in pairs]
    # matched rows compared in their own dtypes (boolean masks by the share of pixels that differ)
    diffs = [
        _compare(names[i], np.asarray(got[i])[got_rows], np.asarray(want[i])[want_rows], atol, rtol)
        if f != "labels" else _compare(names[i], g[f][got_rows], w[f][want_rows], 0.0, 0.0)
        for f, i in fields.items()
    ]  # fmt: skip
    if far:
        reason = (
            f"{len(far)} detection(s) without a match whose scores {far[:5]} are not within {score_tol:.3g}"
            f" of the cut-off {cutoff:.4g} ({len(pairs)} matched)"
        )
        diffs.append(LeafDiff(names[fields["scores"]], False, float("inf"), float("inf"), 0.0, reason))
    return DetectionMatch(diffs, matched=len(pairs), unmatched=len(lonely_want) + len(lonely_got))


def _match(
    got: dict[str, np.ndarray], want: dict[str, np.ndarray], fields: dict[str, int], box_tol: float
) -> list[tuple[int, int]]:
    """Greedy matching, highest eager score first: same label, IoU >= 0.5, closest score.

    Boxes of zero area (clipped to the image border) have no IoU with each other; they are
    candidates when their coordinates agree within ``box_tol``, the tolerance of the boxes leaf.
    """
    free = set(range(len(got["scores"])))
    pairs = []
    want_boxes, got_boxes = want["boxes"].reshape(-1, 4), got["boxes"].reshape(-1, 4)
    iou = _iou(want_boxes, got_boxes)
    close = np.abs(want_boxes[:, None, :] - got_boxes[None, :, :]).max(-1, initial=0.0) <= box_tol
    overlaps = np.where(np.isnan(iou), close, iou >= _MIN_IOU)
    for i in np.argsort(-want["scores"], kind="stable"):
        candidates = [
            j for j in free
            if overlaps[i, j] and ("labels" not in fields or got["labels"][j] == want["labels"][i])
        ]  # fmt: skip
        if candidates:
            j = min(candidates, key=lambda c: abs(got["scores"][c] - want["scores"][i]))
            free.discard(j)
            pairs.append((int(i), int(j)))
    return pairs


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of boxes given as (x1, y1, x2, y2); NaN where both boxes have zero area."""
    top_left = np.maximum(a[:, None, :2], b[None, :, :2])
    bottom_right = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(bottom_right - top_left, 0, None).prod(-1)
    area = lambda boxes: np.clip(boxes[:, 2:] - boxes[:, :2], 0, None).prod(-1)  # noqa: E731
    union = area(a)[:, None] + area(b)[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), np.nan)
