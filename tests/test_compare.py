"""Leaf and detection comparisons on real arrays."""

from __future__ import annotations

import numpy as np

from lightning_deploy.verification.compare import compare_leaves
from lightning_deploy.verification.detections import compare_detections, detection_groups

NAMES = ["out.0.boxes", "out.0.labels", "out.0.scores"]
KINDS = ["boxes", "labels", "scores"]


def _detections(n=6, seed=0):
    rng = np.random.default_rng(seed)
    top_left = rng.uniform(0, 200, (n, 2))
    boxes = np.concatenate([top_left, top_left + rng.uniform(20, 80, (n, 2))], 1).astype(np.float32)
    scores = np.sort(rng.uniform(0.1, 1.0, n))[::-1].astype(np.float32)
    return [boxes, rng.integers(1, 5, n), scores]


def test_leaf_tolerance_is_relative_to_the_leaf_scale():
    want = np.array([1e6, 1.0, -2e6], np.float32)
    (ok,) = compare_leaves(["out"], [want + np.array([500.0, 0, 0], np.float32)], [want], 1e-4, 1e-3)
    assert ok.ok and ok.max_abs == 500.0 and np.isclose(ok.max_rel, 500.0 / 2e6)
    (bad,) = compare_leaves(["out"], [want + np.array([0, 0, 5000.0], np.float32)], [want], 1e-4, 1e-3)
    assert not bad.ok and "max abs diff 5e+03" in bad.describe(1e-4, 1e-3)
    (shape,) = compare_leaves(["out"], [want[:2]], [want], 1e-4, 1e-3)
    assert not shape.ok and "shape [2], expected [3]" in shape.describe(1e-4, 1e-3)


def test_detection_groups_found_by_sibling_names():
    names = ["out.0.boxes", "out.0.labels", "out.0.scores", "out.1.boxes", "out.1.scores", "aux.boxes"]
    assert detection_groups(names) == {
        "out.0": {"boxes": 0, "labels": 1, "scores": 2}, "out.1": {"boxes": 3, "scores": 4}
    }  # fmt: skip
    detectron2 = ["out.0.instances.image_size", "out.0.instances.pred_boxes.tensor", "out.0.instances.scores",
                  "out.0.instances.pred_classes", "out.0.instances.pred_masks"]  # fmt: skip
    assert detection_groups(detectron2) == {
        "out.0.instances": {"boxes": 1, "scores": 2, "labels": 3, "masks": 4}
    }  # fmt: skip


def test_detections_in_another_order_match():
    want = _detections()
    order = np.random.default_rng(1).permutation(6)
    got = [leaf[order] for leaf in want]
    result = compare_detections(NAMES, KINDS, got, want, 1e-4, 1e-3)
    assert result.matched == 6 and result.unmatched == 0
    assert all(d.ok for d in result.diffs)


def test_a_moved_box_fails_and_names_the_leaf():
    want = _detections()
    got = [leaf.copy() for leaf in want]
    got[0][2, 0] += 3.0  # 3 px, well beyond atol + rtol * ~280 px
    result = compare_detections(NAMES, KINDS, got, want, 1e-4, 1e-3)
    failed = [d for d in result.diffs if not d.ok]
    assert [d.name for d in failed] == ["out.0.boxes"] and np.isclose(failed[0].max_abs, 3.0, atol=1e-4)


def test_unmatched_detection_allowed_only_at_the_cut_off():
    want = _detections()
    dropped_last = [leaf[:-1] for leaf in want]  # the lowest score: a near-tie at the cut-off
    at_cutoff = compare_detections(NAMES, KINDS, dropped_last, want, 1e-4, 1e-3)
    assert at_cutoff.unmatched == 1 and all(d.ok for d in at_cutoff.diffs)
    dropped_first = [leaf[1:] for leaf in want]  # the best detection missing: a real difference
    far = compare_detections(NAMES, KINDS, dropped_first, want, 1e-4, 1e-3)
    assert far.unmatched == 1 and not all(d.ok for d in far.diffs)
    assert any("without a match" in (d.reason or "") for d in far.diffs)


def test_empty_detection_sets_agree():
    empty = [np.zeros((0, 4), np.float32), np.zeros(0, np.int64), np.zeros(0, np.float32)]
    result = compare_detections(NAMES, KINDS, empty, empty, 1e-4, 1e-3)
    assert result.matched == 0 and result.unmatched == 0 and all(d.ok for d in result.diffs)


def test_zero_area_boxes_match_by_coordinates_within_tolerance():
    want = _detections()
    want[0][:2, 2] = want[0][:2, 0]  # two boxes clipped to zero width at a border
    want[2][:2] = [0.97, 0.96]  # ... holding the best scores, far from the cut-off
    order = np.random.default_rng(1).permutation(6)
    same = compare_detections(NAMES, KINDS, [leaf[order] for leaf in want], want, 1e-4, 1e-3)
    assert same.matched == 6 and all(d.ok for d in same.diffs)
    moved = [leaf.copy() for leaf in want]
    moved[0][0, [0, 2]] += 3.0  # a zero-area box 3 px away is another box
    result = compare_detections(NAMES, KINDS, moved, want, 1e-4, 1e-3)
    assert result.matched == 5 and not all(d.ok for d in result.diffs)


def test_boolean_leaves_match_where_few_elements_differ():
    """A thresholded mask: one edge pixel flipped by rounding passes, a band of them fails, naming the share."""
    want = np.zeros((100, 100), bool)
    want[20:60, 30:70] = True
    edge = want.copy()
    edge[20, 30] = False
    (ok,) = compare_leaves(["out.masks"], [edge], [want], 1e-4, 1e-3)
    assert ok.ok and ok.max_abs == 1.0 and ok.max_rel == 1e-4
    band = want.copy()
    band[20:22] = False
    (bad,) = compare_leaves(["out.masks"], [band], [want], 1e-4, 1e-3)
    assert not bad.ok and "0.008 of its elements differ" in bad.describe(1e-4, 1e-3)


def test_matched_detection_masks_keep_their_boolean_comparison():
    names, kinds = [*NAMES, "out.0.masks"], [*KINDS, "masks"]
    boxes, labels, scores = _detections()
    masks = np.zeros((len(scores), 64, 64), bool)
    masks[:, 10:40, 10:40] = True
    edge = masks.copy()
    edge[0, 10, 10] = False  # one pixel at an edge, as rounding at the 0.5 threshold flips it
    result = compare_detections(names, kinds, [boxes, labels, scores, edge], [boxes, labels, scores, masks], 1e-4, 1e-3)
    assert all(d.ok for d in result.diffs) and result.matched == len(scores)
