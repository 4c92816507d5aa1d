"""Manifests from elsewhere: paths that lead out of the folder, damaged JSON, random mutations (hypothesis).

Every outcome of ``load()`` on a mutated manifest is a working model or a ``LoadError``; a
working model called with the real sample returns or raises ``StructureError`` (naming the
leaf). Nothing else escapes: no ``KeyError``/``TypeError`` from the schema code, no runtime's
own exception.
"""

from __future__ import annotations

import copy
import json
import os
import shutil

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from models import StructuredModel, structured_sample

from lightning_deploy import LoadError, StructureError, export, load

FORMATS = ["onnx", "torchscript"]
FUZZ_CASES = 1000
OUTCOMES = {"loaded and ran": 0, "LoadError": 0, "StructureError on call": 0}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hostile")
    export(StructuredModel().eval(), structured_sample(2), folder, "model", formats=FORMATS)
    return folder, json.loads((folder / "model.export.json").read_text())


def _write(folder, manifest) -> None:
    (folder / "model.export.json").write_text(json.dumps(manifest), encoding="utf-8")


@pytest.mark.parametrize(
    "path",
    ["/etc/passwd", "../model.onnx", "../../x.onnx", "sub/model.onnx", "..", "", "model.onnx\x00.txt", 7, None],
)
def test_paths_that_leave_the_folder_are_refused(exported, tmp_path, path):
    source, manifest = exported
    folder = tmp_path / "copy"
    shutil.copytree(source, folder)
    hostile = copy.deepcopy(manifest)
    hostile["artifacts"][0]["path"] = path
    _write(folder, hostile)
    with pytest.raises(LoadError, match=r"path .* is not a plain file name in the manifest's folder"):
        load(folder / "model.export.json", format="onnx")


def test_a_symlink_leading_out_is_refused(exported, tmp_path):
    source, _ = exported
    folder = tmp_path / "copy"
    shutil.copytree(source, folder)
    outside = tmp_path / "elsewhere.onnx"
    shutil.copy(folder / "model.onnx", outside)
    (folder / "model.onnx").unlink()
    os.symlink(outside, folder / "model.onnx")
    with pytest.raises(LoadError, match=r"is a symlink that leads out of"):
        load(folder / "model.export.json", format="onnx")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda m: m.update(manifest_version=99), r"manifest_version 99 is not one this package reads"),
        (lambda m: m.update(artifacts={"onnx": 1}), r"'artifacts' is not a list"),
        (lambda m: m["artifacts"][0].update(format="tensorrt"), r"has format 'tensorrt', not one of"),
        (lambda m: m["inputs"].update(shapes="big"), r"'inputs' has bad shapes"),
        (lambda m: m["inputs"]["schema"].pop("call"), r"'inputs' has no valid 'call'"),
        (lambda m: m["outputs"]["schema"]["tree"].update(kind="banana"), r"output: the manifest's schema has a node"),
        (lambda m: m["artifacts"][0].update(side_files_sha256={"../x": "0"}), r"side file '\.\./x' is not a plain"),
        (lambda m: m["artifacts"][0].update(files=1), r"has 'files' that is not a list of file names"),
        (lambda m: m["artifacts"][0].update(files=["../x"]), r"file '\.\./x' is not a plain file name"),
        (lambda m: m["inputs"].update(dtypes=["", "float32"]), r"'inputs' has bad dtypes \(one per leaf, each one of"),
    ],
)
def test_damaged_manifests_get_a_load_error_naming_the_key(exported, tmp_path, change, message):
    source, manifest = exported
    folder = tmp_path / "copy"
    shutil.copytree(source, folder)
    hostile = copy.deepcopy(manifest)
    change(hostile)
    _write(folder, hostile)
    with pytest.raises(LoadError, match=message):
        load(folder / "model.export.json", format="onnx")


def test_a_manifest_that_is_not_an_object_is_refused(exported, tmp_path):
    folder = tmp_path / "copy"
    shutil.copytree(exported[0], folder)
    (folder / "model.export.json").write_text("[1, 2]")
    with pytest.raises(LoadError, match=r"a manifest is a JSON object, this is a list"):
        load(folder / "model.export.json")


# --- fuzzing: random mutations of a real manifest -----------------------------------------------

HOSTILE_VALUES = st.one_of(
    st.none(), st.booleans(), st.integers(-3, 10**6), st.floats(allow_nan=True), st.text(max_size=12),
    st.sampled_from(["../model.onnx", "/etc/passwd", "model.torchscript.pt", "model.onnx", "onnx", "torchscript",
                     "float32", "int64", "tensor", "dict", "native", "cuda", "cpu", "batch", "x"]),
    st.lists(st.integers(-1, 5), max_size=4), st.dictionaries(st.text(max_size=4), st.integers(), max_size=2),
)  # fmt: skip


def _paths(value, prefix=()):
    """Every path into a JSON value (keys of objects, indices of lists)."""
    yield prefix
    if isinstance(value, dict):
        for key, child in value.items():
            yield from _paths(child, (*prefix, key))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            yield from _paths(child, (*prefix, index))


@st.composite
def mutated(draw, manifest):
    """A copy of ``manifest`` with one to three values replaced, deleted or duplicated."""
    manifest = copy.deepcopy(manifest)
    for _ in range(draw(st.integers(1, 3))):
        paths = [p for p in _paths(manifest) if p]
        path = draw(st.sampled_from(paths))
        parent = manifest
        for key in path[:-1]:
            parent = parent[key]
        action = draw(st.sampled_from(["replace", "delete", "swap"]))
        if action == "delete" and isinstance(parent, dict):
            del parent[path[-1]]
        elif action == "swap":
            other = draw(st.sampled_from(paths))
            source = manifest
            for key in other:
                source = source[key] if isinstance(source, (dict, list)) else source
            parent[path[-1]] = copy.deepcopy(source)
        else:
            parent[path[-1]] = draw(HOSTILE_VALUES)
    return manifest


def _outcome(folder, hostile, fmt, sample) -> str:
    """Write ``hostile``, load it and call it with the real sample: which of the allowed outcomes it had.

    Any other exception propagates and fails the test.
    """
    _write(folder, hostile)
    try:
        model = load(folder / "model.export.json", format=fmt)
    except LoadError:
        return "LoadError"
    try:
        model(sample)
    except StructureError:
        return "StructureError on call"
    return "loaded and ran"


def test_fuzzed_manifests_load_or_raise_load_error(exported, tmp_path_factory, reliability):
    source, manifest = exported
    folder = tmp_path_factory.mktemp("fuzz") / "copy"
    shutil.copytree(source, folder)
    (sample,) = structured_sample(3)

    @settings(max_examples=FUZZ_CASES, deadline=None, derandomize=True, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])  # fmt: skip
    @given(data=st.data())
    def check(data):
        hostile = data.draw(mutated(manifest))
        fmt = data.draw(st.sampled_from([None, *FORMATS]))
        OUTCOMES[_outcome(folder, hostile, fmt, sample)] += 1

    check()
    assert sum(OUTCOMES.values()) == FUZZ_CASES
    assert OUTCOMES["LoadError"] > FUZZ_CASES // 4 and OUTCOMES["loaded and ran"] > 0, OUTCOMES
    reliability[f"fuzzed manifests (hypothesis, 1-3 mutations of a real one, {FUZZ_CASES} cases)"] = (
        f"0 unexpected exceptions: {OUTCOMES['loaded and ran']} loaded and ran, {OUTCOMES['LoadError']} LoadError,"
        f" {OUTCOMES['StructureError on call']} loaded and refused the sample with StructureError"
    )
    (folder / "model.export.json").unlink()
    torch.testing.assert_close(
        load(source / "model.export.json")(sample).logits, StructuredModel()(sample).logits, atol=1e-5, rtol=1e-4
    )  # fmt: skip  (the real manifest still works)


CALL_NAMES = st.one_of(
    st.sampled_from(["batch", "x", "", "a b", "1x", "def", "lambda", "p0", "call", "Miss", ")", "batch'"]),
    st.text(max_size=6),
)


@st.composite
def mutated_call(draw, manifest):
    """A copy of ``manifest`` whose ``inputs.schema.call`` (forward's parameters) was changed."""
    manifest = copy.deepcopy(manifest)
    call = manifest["inputs"]["schema"]["call"]
    parameters = call["parameters"]
    action = draw(st.sampled_from(["drop", "add", "rename", "reorder", "empty", "special"]))
    if action == "drop" and parameters:
        parameters.pop(draw(st.integers(0, len(parameters) - 1)))
    elif action == "add":
        parameters.insert(draw(st.integers(0, len(parameters))), draw(CALL_NAMES))
    elif action == "rename" and parameters:
        parameters[draw(st.integers(0, len(parameters) - 1))] = draw(CALL_NAMES)
    elif action == "reorder":
        parameters.reverse()
    elif action == "empty":
        parameters.clear()
    else:
        call[draw(st.sampled_from(["var_positional", "var_keyword"]))] = draw(st.one_of(st.none(), CALL_NAMES))
    return manifest


def test_fuzzed_call_sections_load_or_raise_load_error(exported, tmp_path_factory):
    """``forward``'s parameters as the manifest records them feed the straight-line call's source: no foreign error."""
    source, manifest = exported
    folder = tmp_path_factory.mktemp("fuzz-call") / "copy"
    shutil.copytree(source, folder)
    (sample,) = structured_sample(3)
    outcomes = {"loaded and ran": 0, "LoadError": 0, "StructureError on call": 0}

    @settings(max_examples=200, deadline=None, derandomize=True, database=None,
              suppress_health_check=[HealthCheck.too_slow])  # fmt: skip
    @given(data=st.data())
    def check(data):
        hostile = data.draw(mutated_call(manifest))
        outcomes[_outcome(folder, hostile, data.draw(st.sampled_from(FORMATS)), sample)] += 1

    check()
    assert sum(outcomes.values()) == 200 and outcomes["LoadError"] > 0, outcomes
