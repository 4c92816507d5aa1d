"""The model zoo rows of the coverage table (slow: run with ``-m slow``)."""

from __future__ import annotations

import pytest

pytest.importorskip("torchvision")

from coverage_table import ROWS, run_row  # tools/coverage_table.py, on the path via conftest

DENSE = [row for row in ROWS if row.kind in ("classification", "segmentation")]


@pytest.mark.slow
@pytest.mark.parametrize("row", DENSE, ids=[row.name for row in DENSE])
def test_dense_rows_verify_in_onnx_and_torchscript_at_two_batches_and_resolutions(tmp_path, row):
    cells = run_row(row, tmp_path)["cells"]
    for key in (("trace", "torchscript"), ("auto", "onnx")):
        artifact = cells[key]
        assert artifact["ok"], (key, artifact["error"])
        batches = {check[0][0] for check in artifact["checked_shapes"]}
        resolutions = {tuple(check[0][2:]) for check in artifact["checked_shapes"]}
        assert len(batches) == 2
        assert len(resolutions) == (1 if "fixed" in row.note else 2)


DETECTION = [row for row in ROWS if row.kind == "detection"]


@pytest.mark.slow
@pytest.mark.parametrize("row", DETECTION, ids=[row.name for row in DETECTION])
def test_detection_rows_verify_with_detections_present(tmp_path, row):
    cells = run_row(row, tmp_path)["cells"]
    for key in (("trace", "torchscript"), ("script", "torchscript"), ("auto", "onnx")):
        artifact = cells[key]
        assert artifact["ok"], (key, artifact["error"])
        assert artifact["detections"]["matched"] > 0, key
        assert len({tuple(check[0]) for check in artifact["checked_shapes"]}) == 2  # two image resolutions
