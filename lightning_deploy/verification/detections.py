"""Detection outputs compared as sets: boxes matched by IoU and score, not position by position.

NMS and top-k keep slightly different sets where scores are nearly tied at the cut-off, and
an untrained detector's ties reorder freely; so a detection set (sibling leaves holding
boxes and scores: torchvision's and detectron2's names) is compared order-insensitively, and
an eager detection may stay unmatched only where its score lies within tolerance of the
cut-off. numpy only.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from lightning_deploy.verification.compare import LeafDiff, compare_leaf, compare_leaves

__all__ = ["DetectionMatch", "compare_detections", "compare_outputs", "detection_groups"]


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
        compare_leaf(names[i], np.asarray(got[i])[got_rows], np.asarray(want[i])[want_rows], atol, rtol)
        if f != "labels" else compare_leaf(names[i], g[f][got_rows], w[f][want_rows], 0.0, 0.0)
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
