"""load()'s straight-line call of ONNX and torch artifacts: the same answers, types and errors as its general path."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
import torch.utils._pytree as pytree
from models import Pair, StructuredModel, structured_sample
from torch import nn

from lightning_deploy import StructureError, export, load
from lightning_deploy.runtime.fast_call import Miss


class Nested(nn.Module):
    """Tuple, list, None and named-tuple inputs sharing a batch axis; dict, named tuple, list and None out."""

    def forward(self, pair: tuple, items: list, nothing: None, named: Pair) -> dict:
        first, second = pair
        return {
            "sum": first + second * items[0],
            "named": Pair(named.first * 2, named.second - 1),
            "rows": [items[1].sum(-1)],
            "none": nothing,
        }


def nested_sample(batch: int) -> tuple:
    generator = torch.Generator().manual_seed(batch)
    rand = lambda *shape: torch.randn(*shape, generator=generator)  # noqa: E731
    pair, items = (rand(batch, 4), rand(batch, 4)), [rand(batch, 4), rand(batch, 3)]
    return pair, items, None, Pair(rand(batch, 2), rand(batch, 5))


CASES = {"structured": (StructuredModel, structured_sample), "nested": (Nested, nested_sample)}
SUFFIXES = {"onnx": ".onnx", "torchscript": ".torchscript.pt", "pt2": ".pt2"}


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory):
    folder = tmp_path_factory.mktemp("fast")
    for name, (build, make_sample) in CASES.items():
        export(build(), make_sample(2), folder, name, formats=["onnx", "torchscript", "pt2"])
    return folder


def general_path(model):
    """The same artifact with the straight-line call switched off: load()'s general path only."""
    model._fast = None
    return model


def assert_same(fast, general):
    """Same structure, same types at every node, equal values."""
    fast_leaves, fast_spec = pytree.tree_flatten(fast)
    general_leaves, general_spec = pytree.tree_flatten(general)
    assert fast_spec == general_spec
    assert type(fast) is type(general)
    assert [type(leaf) for leaf in fast_leaves] == [type(leaf) for leaf in general_leaves]
    for got, want in zip(fast_leaves, general_leaves):
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))


@pytest.mark.parametrize("name", CASES)
@pytest.mark.parametrize(("fmt", "arrays"), [("onnx", "torch"), ("onnx", "numpy"), ("torchscript", "torch"),
                                             ("pt2", "torch")])  # fmt: skip
def test_fast_call_matches_the_general_path_and_eager(artifacts, name, fmt, arrays):
    build, make_sample = CASES[name]
    model = load(artifacts / f"{name}{SUFFIXES[fmt]}")
    general = general_path(load(artifacts / f"{name}{SUFFIXES[fmt]}"))
    assert model._fast is not None
    for batch in (2, 5):
        sample = make_sample(batch)
        if arrays == "numpy":
            sample = pytree.tree_map(lambda t: None if t is None else t.numpy(), sample)
        fast = model._fast(*sample)  # the straight-line call itself: it takes this case without falling back
        assert_same(fast, general(*sample))
        assert_same(model(*sample), fast)
        with torch.no_grad():
            want = build().eval()(*make_sample(batch))
        arrays_out = [leaf for leaf in pytree.tree_leaves(fast) if leaf is not None]
        eager_out = [leaf for leaf in pytree.tree_leaves(want) if leaf is not None]
        assert len(arrays_out) == len(eager_out) > 1
        for got, expected in zip(arrays_out, eager_out):
            assert isinstance(got, torch.Tensor if arrays == "torch" else np.ndarray)
            np.testing.assert_allclose(np.asarray(got), expected.numpy(), rtol=1e-4, atol=1e-5)


def test_calls_it_does_not_take_get_the_general_answer_or_error(artifacts):
    model = load(artifacts / "nested.onnx")
    general = general_path(load(artifacts / "nested.onnx"))
    (first, second), items, _, named = nested_sample(3)
    refused = {
        "needs grad": ((first.clone().requires_grad_(True), second), items, None, named),
        "mixed numpy and torch": ((first.numpy(), second), items, None, named),
        "a dict for a named tuple": ((first, second), items, None, named._asdict()),
    }
    for sample in refused.values():
        with pytest.raises(Exception):  # noqa: B017 - the straight-line call refuses it, whatever the reason
            model._fast(*sample)
        assert_same(model(*sample), general(*sample))
    # a list where a tuple was exported is taken, as the general path takes it
    as_lists = ([first, second], list(items), None, named)
    assert_same(model._fast(*as_lists), general(*as_lists))
    assert_same(model((first, second), items, nothing=None, named=named), general((first, second), items, None, named))
    wrong_batch = ((first, second[:2]), items, None, named)
    with pytest.raises(StructureError, match="disagree on dim"):
        model(*wrong_batch)
    with pytest.raises(StructureError, match="the model was exported with None here"):
        model((first, second), items, first, named)
    with pytest.raises(StructureError, match=r"extra \['extra'\]"):
        load(artifacts / "structured.onnx")({**structured_sample(3)[0], "extra": first})


@pytest.mark.parametrize("fmt", ["torchscript", "pt2"])
def test_torch_runtimes_take_only_what_the_general_path_would_run_unchanged(artifacts, fmt):
    """Numpy, another dtype, a wrong static dim, leaves that need grad: the general path's answer or its error."""
    model = load(artifacts / f"nested{SUFFIXES[fmt]}")
    general = general_path(load(artifacts / f"nested{SUFFIXES[fmt]}"))
    (first, second), items, _, named = nested_sample(3)
    as_numpy = pytree.tree_map(lambda t: None if t is None else t.numpy(), ((first, second), items, None, named))
    for sample in [as_numpy, ((first.clone().requires_grad_(True), second), items, None, named)]:
        with pytest.raises(Miss):
            model._fast(*sample)
        assert_same(model(*sample), general(*sample))
    grad_out = model((first.clone().requires_grad_(True), second), items, None, named)
    assert not grad_out["sum"].requires_grad  # run without recording autograd, like the fast path
    with pytest.raises(StructureError, match=r"input 'pair\.0': dtype float64"):
        model((first.double(), second), items, None, named)
    with pytest.raises(StructureError, match=r"input 'pair\.1': shape \[3, 5\] does not fit"):
        model((first, torch.randn(3, 5)), items, None, named)
    with pytest.raises(StructureError, match="disagree on dim"):
        model((first, second[:2]), items, None, named)
    out = model._fast((first, second), items, None, named)  # the straight-line call itself
    assert not out["sum"].requires_grad and out["none"] is None
    torch.testing.assert_close(out["sum"], first + second * items[0])


def test_torch_imported_after_load_gets_torch_tensors_back(artifacts):
    """A process that loads with numpy first and imports torch later still gets torch out for torch in."""
    script = textwrap.dedent(
        f"""
        import sys
        import numpy as np
        from lightning_deploy import load
        model = load({str(artifacts / "structured.onnx")!r})
        assert "torch" not in sys.modules
        x, mask = np.ones((3, 8), np.float32), np.ones(3, np.float32)
        numpy_out = model({{"x": x, "mask": mask}})
        import torch
        torch_out = model({{"x": torch.from_numpy(x), "mask": torch.from_numpy(mask)}})
        assert type(numpy_out.logits) is np.ndarray and type(torch_out.logits) is torch.Tensor
        np.testing.assert_array_equal(torch_out.logits.numpy(), numpy_out.logits)
        model._fast(*[{{"x": torch.from_numpy(x), "mask": torch.from_numpy(mask)}}])  # now the fast path's
        print("ok")
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "ok"


def test_field_names_that_are_no_attribute_names_are_written_as_strings():
    """Record fields such as ``lambda`` or ``0`` (a pytree node's keys) cannot appear in source as names."""
    from lightning_deploy.artifact.structure import Structure
    from lightning_deploy.runtime.fast_call import Miss, compile_call

    tensor = lambda name: {"kind": "tensor", "name": name}  # noqa: E731
    record = {"kind": "record", "class": "somewhere.Out", "fields": ["lambda", "0"]}
    record["items"] = [tensor("a"), tensor("b")]
    outputs = Structure(record, root="output")
    inputs = {"kind": "tuple", "items": [tensor("x")]}
    double = lambda names, feed, options: [feed["x"], feed["x"] * 2]  # noqa: E731 - the session's run, by hand
    call = compile_call(["x"], inputs, record, [(0, "x")], ["a", "b"], double, None, [], [], outputs.class_of)
    out = call(np.ones(3, np.float32))
    assert type(out) is outputs.class_of(record)
    np.testing.assert_array_equal(out["lambda"], np.ones(3))
    np.testing.assert_array_equal(out[1], np.full(3, 2.0))
    keyword_input = {"kind": "tuple", "items": [{**record, "items": [tensor("x"), tensor("y")]}]}
    with pytest.raises(Miss, match="'lambda' is no attribute name"):
        compile_call(["r"], keyword_input, record, [(0, "x")], ["a", "b"], double, None, [], [], outputs.class_of)


def test_a_dropped_model_frees_its_session_at_once(artifacts):
    """No reference cycle keeps a session (and its ONNX Runtime threads) alive until the garbage collector runs."""
    import gc
    import os

    threads = lambda: len(os.listdir("/proc/self/task"))  # noqa: E731 - Linux: one entry per thread
    gc.collect()
    gc.disable()
    try:
        model = load(artifacts / "structured.onnx", threads=2)
        model(*structured_sample(3))
        with_session = threads()
        del model
        after = threads()
    finally:
        gc.enable()
    assert after < with_session, (with_session, after)
