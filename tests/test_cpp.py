"""The C++ example: build ``infer`` against the wheel's libtorch and run artifacts without Python.

The build (CMake, g++) takes about 15-40 s on 2 cores; its time is printed. Inputs go in and
outputs come back through ``lightning_deploy.serving.flat_files`` at a batch the export never saw.
"""

from __future__ import annotations

import shutil
import subprocess
import sysconfig
import time
from pathlib import Path

import pytest
import torch
from models import StructuredModel, structured_sample

from lightning_deploy import export, load
from lightning_deploy.serving.flat_files import load_outputs, save_inputs

EXAMPLE = Path(__file__).parents[1] / "examples" / "cpp"
pytestmark = pytest.mark.skipif(shutil.which("cmake") is None or shutil.which("g++") is None,
                                reason="needs cmake and g++")  # fmt: skip


@pytest.fixture(scope="module")
def infer(tmp_path_factory) -> Path:
    """``infer``, configured and built in a temporary folder as the docs say."""
    build = tmp_path_factory.mktemp("build")
    start = time.monotonic()
    prefix = f"-DCMAKE_PREFIX_PATH={torch.utils.cmake_prefix_path}"
    for command in (["cmake", "-S", str(EXAMPLE), "-B", str(build), prefix], ["cmake", "--build", str(build)]):
        done = subprocess.run(command, capture_output=True, text=True, timeout=900)
        assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    print(f"\nexamples/cpp configured and built in {time.monotonic() - start:.1f} s")
    return build / "infer"


def _run(infer: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(infer), *map(str, args)], capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def structured(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cpp-artifacts")
    model = StructuredModel().eval()
    manifest = export(model, structured_sample(2), folder, "model", formats=["torchscript", "aoti"])
    assert manifest["ok"], [a["error"] for a in manifest["artifacts"]]
    return model, folder, {a["format"]: a for a in manifest["artifacts"]}


@pytest.mark.parametrize("fmt", ["torchscript", "aoti"])
def test_infer_matches_eager_at_another_batch(infer, structured, tmp_path, fmt):
    model, folder, entries = structured
    (sample,) = structured_sample(5)
    names = save_inputs(folder / "model.export.json", tmp_path / "in.pt", sample)
    assert names == ["batch.x", "batch.mask"]
    done = _run(infer, folder / entries[fmt]["path"], tmp_path / "in.pt", tmp_path / "out.pt")
    assert done.returncode == 0, done.stderr
    got, want = load_outputs(folder / "model.export.json", tmp_path / "out.pt"), model(sample)
    tolerance = entries[fmt]["tolerance"]
    for got_leaf, want_leaf in [(got.logits, want.logits), (got.stats["summary"]["max"], want.stats["summary"]["max"]),
                                (got.parts[1].first, want.parts[1].first)]:  # fmt: skip
        scale = float(want_leaf.abs().max())
        assert float((got_leaf - want_leaf).abs().max()) <= tolerance["atol"] + tolerance["rtol"] * scale
    assert got.missing is None and got.stats["nothing"] is None


def test_infer_errors_are_one_line_and_exit_non_zero(infer, structured, tmp_path):
    _, folder, _ = structured
    torch.save([torch.randn(5, 8)], tmp_path / "one.pt")  # the model takes two input leaves
    cases = [
        (folder / "model.torchscript.pt", tmp_path / "one.pt", "forward"),
        (folder / "model.torchscript.pt", tmp_path / "absent.pt", "absent.pt: cannot open it"),
        (folder / "model.export.json", tmp_path / "one.pt", "expected a .torchscript.pt or .aoti.pt2 artifact"),
    ]
    for artifact, inputs, message in cases:
        done = _run(infer, artifact, inputs, tmp_path / "out.pt")
        assert done.returncode == 1 and message in done.stderr, done.stderr
        assert done.stderr.count("\n") == 1 and done.stderr.startswith("infer: error: ")


@pytest.mark.slow
def test_a_detection_model_runs_in_cpp_with_torchvision_ops(infer, tmp_path):
    torchvision = pytest.importorskip("torchvision")
    from zoo import build_detection

    model = build_detection("fasterrcnn_mobilenet_v3_large_320_fpn")
    images = [torch.rand(3, 240, 320, generator=torch.Generator().manual_seed(1))]
    manifest = export(model, (images,), tmp_path, "frcnn", formats=["torchscript"], method="trace",
                      dynamic_batch=False, dynamic_axes={"images": {1: "height", 2: "width"}})  # fmt: skip
    (entry,) = manifest["artifacts"]
    assert entry["ok"] and "torchvision" in entry["requires"], entry
    image = [torch.rand(3, 256, 288, generator=torch.Generator().manual_seed(2))]
    save_inputs(tmp_path / "frcnn.export.json", tmp_path / "in.pt", image)
    # The wheel's op library (_C_stable.so in torchvision 0.29) links libtorch_python.so, which needs
    # libpython's symbols: both are loaded first (libtorchvision built from source for C++ does not).
    ops = next(Path(torchvision.__file__).parent.glob("_C*.so"))
    libpython = Path(sysconfig.get_config_var("LIBDIR")) / sysconfig.get_config_var("LDLIBRARY")
    libraries = [libpython, Path(torch.__file__).parent / "lib" / "libtorch_python.so", ops]
    without = _run(infer, tmp_path / "frcnn.torchscript.pt", tmp_path / "in.pt", tmp_path / "out.pt")
    assert without.returncode == 1 and "torchvision" in without.stderr  # the op library is needed
    loads = [arg for library in libraries for arg in ("--load-library", library)]
    done = _run(infer, tmp_path / "frcnn.torchscript.pt", tmp_path / "in.pt", tmp_path / "out.pt", *loads)
    assert done.returncode == 0, done.stderr
    (got,) = load_outputs(tmp_path / "frcnn.export.json", tmp_path / "out.pt")
    (want,) = load(tmp_path / "frcnn.torchscript.pt")(image)  # the same program in Python
    assert len(want["scores"]) > 0
    for key in ("boxes", "labels", "scores"):
        torch.testing.assert_close(got[key], want[key], atol=1e-4, rtol=1e-4)
    print(f"\nfasterrcnn in C++: {len(got['scores'])} detections, equal to Python's")


def test_python_helpers_round_trip_without_cpp(structured, tmp_path):
    """save_inputs writes what torch.load reads back as the leaves, in the manifest's order."""
    _, folder, _ = structured
    (sample,) = structured_sample(3)
    save_inputs(folder / "model.torchscript.pt", tmp_path / "in.pt", sample)
    leaves = torch.load(tmp_path / "in.pt", weights_only=True)
    torch.testing.assert_close(leaves[0], sample["x"])
    torch.testing.assert_close(leaves[1], sample["mask"])
