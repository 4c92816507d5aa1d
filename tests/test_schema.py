"""The plain-JSON schema: pytree specs described, and rebuilt without torch."""

from __future__ import annotations

import collections
import json

import pytest
import torch
from models import Pair, Prediction

from lightning_deploy import ConfigurationError, ExportError
from lightning_deploy.artifact.structure import Structure
from lightning_deploy.exporting.adapters import flatten_tree


def _round_trip(value, root="out"):
    tree, tensors = flatten_tree(value, root, "value", ExportError)
    schema = json.loads(json.dumps(tree.schema))  # plain JSON all the way
    structure = Structure(schema["tree"])
    assert structure.names == list(tree.names)
    assert [t is s for t, s in zip(structure.flatten(value), tensors)] == [True] * len(tensors)
    return structure.unflatten(list(tensors)), tree


def test_nested_round_trip_keeps_every_container():
    a, b, c = torch.ones(1), torch.zeros(2), torch.full((3,), 2.0)
    value = Prediction(a, {"k": [b, None], "o": collections.OrderedDict(z=c)}, [Pair(a, b)], None)
    rebuilt, tree = _round_trip(value)
    assert tree.names == ("out.logits", "out.stats.k.0", "out.stats.o.z", "out.parts.0.first", "out.parts.0.second")
    assert isinstance(rebuilt, Prediction) and rebuilt.missing is None
    assert rebuilt.stats["k"][1] is None and rebuilt.stats["o"]["z"] is c
    assert isinstance(rebuilt.parts[0], Pair) and rebuilt.parts[0].second is b


def test_unknown_classes_are_rebuilt_as_look_alikes():
    node = {
        "kind": "namedtuple",
        "class": "gone.module.Thing",
        "fields": ["a", "b"],
        "items": [{"kind": "tensor", "name": "out.a"}, {"kind": "none"}],
    }
    thing = Structure(node).unflatten([1.0])
    assert type(thing).__name__ == "Thing" and thing.a == 1.0 and thing.b is None


def test_single_tensor_is_named_by_its_root():
    rebuilt, tree = _round_trip(torch.ones(2))
    assert tree.names == ("out",)
    assert isinstance(rebuilt, torch.Tensor)


def test_unsupported_container_is_named():
    value = frozenset({1, 2})  # not a pytree node: a leaf that is not a tensor
    with pytest.raises(ConfigurationError, match=r"leaf 'x.a' is a frozenset"):
        flatten_tree({"x": {"a": value}}, None, "input_sample", ConfigurationError)


def test_a_scripted_dict_matches_an_eager_ordered_dict():
    eager = collections.OrderedDict(out=torch.ones(2), aux=torch.zeros(1))
    tree, _ = flatten_tree(eager, "out", "value", ExportError)
    scripted = {"out": torch.full((2,), 3.0), "aux": torch.ones(1)}
    assert [t.tolist() for t in tree.tensors(scripted)] == [[3.0, 3.0], [1.0]]
    with pytest.raises(ExportError, match="structure changed"):
        tree.tensors({"out": torch.ones(2)})
