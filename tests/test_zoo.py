"""The model zoo rows of the coverage table (slow: run with ``-m slow``)."""

from __future__ import annotations

import pytest

pytest.importorskip("torchvision")

from coverage_table import ROWS, run_row  # tools/docs/coverage_table.py, on the path via conftest

# Rows that do not meet the targets yet (docs/coverage.md says why); strict, so a fix shows up as XPASS.
KNOWN_FAILURES = {
    "swin_t (dynamic resolution)": "trace bakes Swin's window padding and shift switch; the scripted graph holds"
    " aten::copy, which ONNX lacks; the dynamo graph fails in ONNX Runtime (swin_t at fixed 224 passes)",
}


def _params(rows):
    return [
        pytest.param(row, id=row.name, marks=[pytest.mark.xfail(strict=True, reason=KNOWN_FAILURES[row.name])])
        if row.name in KNOWN_FAILURES else pytest.param(row, id=row.name)
        for row in rows
    ]  # fmt: skip


DENSE = [row for row in ROWS if row.kind in ("classification", "segmentation")]


@pytest.mark.slow
@pytest.mark.parametrize("row", _params(DENSE))
def test_dense_rows_verify_in_onnx_and_torchscript_at_two_batches_and_resolutions(tmp_path, row):
    cells = run_row(row, tmp_path)["cells"]
    for key in (("trace", "torchscript"), ("auto", "onnx")):
        artifact = cells[key]
        assert artifact["ok"], (key, artifact["error"])
        assert artifact["checks_passed"] == len(artifact["checks"]) >= 2  # the synthetic one where the model runs it
        batches = {check[0][0] for check in artifact["checked_shapes"][:2]}  # the export and the second sample
        resolutions = {tuple(check[0][2:]) for check in artifact["checked_shapes"][:2]}
        assert len(batches) == 2
        assert len(resolutions) == (1 if "fixed" in row.note else 2)


DETECTION = [row for row in ROWS if row.kind == "detection"]


@pytest.mark.slow
@pytest.mark.parametrize("row", _params(DETECTION))
def test_detection_rows_verify_with_detections_present(tmp_path, row, record_property):
    cells = run_row(row, tmp_path)["cells"]
    for key in (("trace", "torchscript"), ("script", "torchscript"), ("auto", "onnx")):
        artifact = cells[key]
        assert artifact["ok"], (key, artifact["error"])
        record_property(f"{key[0]}-{key[1]} detections", artifact["detections"])  # in --junitxml
        print(f"{row.name} {key[0]} {key[1]}: {artifact['detections']}")  # with -s
        assert artifact["detections"]["matched"] > 0, key
        assert len({tuple(check[0]) for check in artifact["checked_shapes"][:2]}) == 2  # two image resolutions
    scripted = cells[("script", "torchscript")]
    assert {len(check) for check in scripted["checked_shapes"]} == {1, 2, 3}  # batches of 1, 2 and 3 images
