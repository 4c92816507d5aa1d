"""`lightning-deploy predict`: every row of a Parquet file (or .npz files) through load(), into Parquet, in order."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from models import StructuredModel, structured_sample
from servers import ENV

from lightning_deploy import export, load

ROWS = 5_000


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    folder = tmp_path_factory.mktemp("predict")
    export(StructuredModel(), structured_sample(), folder, "mlp", formats=["onnx"])
    rng = np.random.default_rng(0)
    x = rng.standard_normal((ROWS, 8)).astype(np.float32)
    mask = (rng.random(ROWS) > 0.3).astype(np.float32)
    table = pa.table({"batch.x": pa.FixedShapeTensorArray.from_numpy_ndarray(x), "batch.mask": mask,
                      "note": pa.array(["ignored"] * ROWS)})  # fmt: skip
    pq.write_table(table, folder / "rows.parquet", row_group_size=1_000)
    return folder, x, mask


def _predict(*args):
    return subprocess.run([sys.executable, "-m", "lightning_deploy.cli", "predict", *map(str, args)],
                          capture_output=True, text=True, timeout=300, env=ENV)  # fmt: skip


def _columns(path):
    table = pq.read_table(path)
    out = {}
    for name in table.column_names:
        column = table.column(name).combine_chunks()
        out[name] = column.to_numpy_ndarray() if isinstance(column.type, pa.FixedShapeTensorType) else column.to_numpy()
    return out


def test_every_parquet_row_comes_out_once_in_order_equal_to_load(exported, tmp_path):
    folder, x, mask = exported
    done = _predict(folder / "mlp.export.json", "--input", folder / "rows.parquet", "--output", tmp_path / "out",
                    "--batch-size", 64)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    got = _columns(tmp_path / "out" / "predictions.parquet")
    np.testing.assert_array_equal(got["row"], np.arange(ROWS))
    want = load(folder / "mlp.export.json").run_leaves({"batch.x": x, "batch.mask": mask})
    assert [c for c in got if c != "row"] == list(want)
    for name, values in want.items():
        np.testing.assert_allclose(got[name], values, rtol=1e-5, atol=1e-6, err_msg=name)
    eager = StructuredModel().eval()({"x": torch.from_numpy(x[:7]), "mask": torch.from_numpy(mask[:7])})
    np.testing.assert_allclose(got["out.logits"][:7], eager.logits.detach().numpy(), rtol=1e-4, atol=1e-5)


def test_a_folder_of_npz_files_gives_the_same_rows(exported, tmp_path):
    folder, x, mask = exported
    parts = tmp_path / "parts"
    parts.mkdir()
    for index, (start, stop) in enumerate([(0, 1_234), (1_234, 3_000), (3_000, ROWS)]):
        np.savez(parts / f"part-{index}.npz", **{"batch.x": x[start:stop], "batch.mask": mask[start:stop]})
    from_npz = _predict(folder / "mlp.export.json", "--input", parts, "--output", tmp_path / "npz", "--batch-size",
                        500)  # fmt: skip
    assert from_npz.returncode == 0, from_npz.stderr[-2000:]
    from_parquet = _predict(folder / "mlp.export.json", "--input", folder / "rows.parquet", "--output",
                            tmp_path / "parquet")  # fmt: skip
    assert from_parquet.returncode == 0, from_parquet.stderr[-2000:]
    a, b = _columns(tmp_path / "npz" / "predictions.parquet"), _columns(tmp_path / "parquet" / "predictions.parquet")
    assert list(a) == list(b)
    for name in a:
        np.testing.assert_allclose(a[name], b[name], rtol=1e-6, atol=1e-7, err_msg=name)


def test_wrong_columns_and_a_model_without_a_batch_are_refused_naming_the_fix(exported, tmp_path):
    folder, x, _ = exported
    pq.write_table(pa.table({"x": pa.FixedShapeTensorArray.from_numpy_ndarray(x)}), tmp_path / "bad.parquet")
    bad = _predict(folder / "mlp.export.json", "--input", tmp_path / "bad.parquet", "--output", tmp_path / "o")
    assert bad.returncode == 2 and "no column ['batch.x', 'batch.mask']" in bad.stderr, bad.stderr
    assert not (tmp_path / "o" / "predictions.parquet").exists()
    export(torch.nn.Linear(8, 2), torch.randn(2, 8), tmp_path, "fixed", formats=["onnx"], dynamic_batch=False)
    fixed = _predict(tmp_path / "fixed.export.json", "--input", folder / "rows.parquet", "--output", tmp_path / "f")
    assert fixed.returncode == 2 and "dynamic_batch=True" in fixed.stderr, fixed.stderr


def test_the_ray_engine_gives_the_local_engines_rows_on_a_real_ray_instance(exported, tmp_path):
    """Ray Data's actors (2, each with load()'s artifact) on Ray started here, on the loopback, then stopped."""
    pytest.importorskip("ray.data")
    folder, _, _ = exported
    files = {}
    for engine in ("local", "ray"):
        done = _predict(folder / "mlp.export.json", "--input", folder / "rows.parquet", "--output", tmp_path / engine,
                        "--engine", engine, "--batch-size", 256, "--actors", 2)  # fmt: skip
        assert done.returncode == 0, done.stderr[-3000:]
        files[engine] = _columns(tmp_path / engine / "predictions.parquet")
    assert list(files["ray"]) == list(files["local"])
    for name, values in files["local"].items():
        np.testing.assert_allclose(files["ray"][name], values, rtol=1e-6, atol=1e-7, err_msg=name)
