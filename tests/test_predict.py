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
from lightning_deploy.serving.batch_inference import ROW, in_row_order

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
    wide = np.zeros((40, 9), np.float32)  # the model takes [*, 8]: said before any batch runs, on either engine
    pq.write_table(pa.table({"batch.x": pa.FixedShapeTensorArray.from_numpy_ndarray(wide),
                             "batch.mask": np.ones(40, np.float32)}), tmp_path / "wide.parquet")  # fmt: skip
    for engine in ("local", "ray"):
        refused = _predict(folder / "mlp.export.json", "--input", tmp_path / "wide.parquet", "--output", tmp_path / "w",
                           "--engine", engine)  # fmt: skip
        assert refused.returncode == 2, refused.stderr[-2000:]
        assert "input 'batch.x': shape [40, 9] does not fit the exported shape [*, 8]" in refused.stderr, refused.stderr
        assert "Ray" not in refused.stderr  # refused before Ray was started
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


def test_batches_arriving_out_of_order_are_put_back_in_row_order_each_row_once():
    """What Ray Data hands back (seen: a 128 MB file came back from row 420,000): runs, early ones, repeats."""
    rows = np.arange(20)
    arrived = [rows[12:20], rows[0:3], np.concatenate([rows[5:8], rows[3:5]]), rows[0:3], rows[10:14], rows[8:11],
               rows[9:13]]  # fmt: skip
    batches = ({ROW: index, "value": index * 10.0} for index in arrived)
    runs = list(in_row_order(batches))
    written = np.concatenate([run[ROW] for run in runs])
    np.testing.assert_array_equal(written, rows)
    np.testing.assert_array_equal(np.concatenate([run["value"] for run in runs]), rows * 10.0)


@pytest.mark.slow
def test_resnet18_images_at_64x64_on_ray_equal_local_and_load_row_by_row(tmp_path):
    """3,000 images of 3x64x64 (a 147 MB file: above Ray Data's 128 MiB block, where Ray's read lost the order)."""
    pytest.importorskip("ray.data")
    import torchvision

    torch.manual_seed(0)
    export(torchvision.models.resnet18(weights=None).eval(), torch.randn(2, 3, 64, 64), tmp_path, "resnet",
           formats=["onnx"])  # fmt: skip
    manifest = tmp_path / "resnet.export.json"
    name = load(manifest).contract.inputs.names[0]
    images = np.random.default_rng(1).standard_normal((3_000, 3, 64, 64)).astype(np.float32)
    pq.write_table(pa.table({name: pa.FixedShapeTensorArray.from_numpy_ndarray(images)}), tmp_path / "images.parquet",
                   row_group_size=250)  # fmt: skip
    files = {}
    for engine in ("local", "ray"):
        done = _predict(manifest, "--input", tmp_path / "images.parquet", "--output", tmp_path / engine, "--engine",
                        engine, "--batch-size", 64)  # fmt: skip
        assert done.returncode == 0, done.stderr[-3000:]
        files[engine] = _columns(tmp_path / engine / "predictions.parquet")
    want = np.concatenate([load(manifest)(images[i : i + 500]) for i in range(0, 3_000, 500)])
    np.testing.assert_array_equal(files["ray"]["row"], np.arange(3_000))
    (output,) = [c for c in files["local"] if c != "row"]
    np.testing.assert_allclose(files["ray"][output], files["local"][output], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(files["ray"][output], want, rtol=1e-4, atol=1e-4)


def test_any_cut_shuffle_and_repeat_of_the_rows_comes_back_whole_and_in_order():
    random = np.random.default_rng(7)
    for _ in range(300):
        count = int(random.integers(1, 60))
        rows = np.arange(count)
        pieces = np.split(rows, np.sort(random.choice(np.arange(1, count), min(count - 1, 6), replace=False)))
        repeats = [rows[a : int(random.integers(a + 1, count + 1))] for a in random.integers(0, count, 3)]
        arrived = [pieces[i] for i in random.permutation(len(pieces))] + repeats
        random.shuffle(arrived)
        batches = [np.concatenate(arrived[i : i + 2]) for i in range(0, len(arrived), 2)]  # neighbours glued
        runs = list(in_row_order({ROW: batch, "value": -batch} for batch in batches))
        np.testing.assert_array_equal(np.concatenate([run[ROW] for run in runs]), rows)
        np.testing.assert_array_equal(np.concatenate([run["value"] for run in runs]), -rows)
