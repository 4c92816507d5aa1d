"""detectron2 models as first-class citizens: their structures flatten by name, their traces generalise.

Used by the engine only where detectron2 is already imported (a detectron2 model means it is);
this package never imports detectron2 itself.

- **Structures.** ``Instances`` flattens to its fields by name plus ``image_size`` (a tensor
  leaf, so a traced graph computes it from the input); ``Boxes``, ``RotatedBoxes``, ``BitMasks``,
  ``ROIMasks`` and ``Keypoints`` to their one tensor (field ``tensor``), ``ImageList``
  to ``tensor`` and ``image_sizes``. They are registered with ``torch.utils._pytree``, so leaves
  are named ``out.0.instances.pred_boxes.tensor`` and ``load()`` rebuilds named records.
- **len().** detectron2's ROI heads call ``len(instances)``, which a trace turns into a
  constant (the proposal and detection counts of the export sample). Its own
  ``TracingAdapter`` patches ``len`` in those modules to call ``__len__``, which the tracer
  follows; the engine does the same while it runs the model.
- **TracingAdapter.** A model already wrapped in detectron2's ``TracingAdapter`` returns a flat
  tuple; its outputs are rebuilt with the adapter's own ``outputs_schema``, so
  they too are named and compared as detections.
- **PanopticFPN** is exported without its panoptic merge, whose ``segments_info`` holds Python
  ints: the artifact returns ``sem_seg`` and ``instances``, and the host runs detectron2's
  ``combine_semantic_and_instance_outputs`` on them.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from typing import Any, ClassVar

import torch
import torch.utils._pytree as pytree
from torch import nn

__all__ = ["register_structures", "support"]

_STRUCTURES = "detectron2.structures"
# (class name, attribute holding the tensor) of the structures that wrap one tensor
_TENSOR_WRAPPERS = (("Boxes", "tensor"), ("RotatedBoxes", "tensor"), ("BitMasks", "tensor"),
                    ("ROIMasks", "tensor"), ("Keypoints", "tensor"))  # fmt: skip


@contextlib.contextmanager
def support(module: nn.Module) -> Iterator[nn.Module]:
    """For the export of ``module``: detectron2's structures registered, ``len`` traceable, a ``TracingAdapter`` named.

    Yields ``module`` itself where detectron2 is not imported.
    """
    if _STRUCTURES not in sys.modules:
        yield module
        return
    register_structures()
    with _traceable_len() if "detectron2.modeling" in sys.modules else contextlib.nullcontext():
        yield _prepared(module)


def register_structures() -> None:
    """Register detectron2's structures with ``torch.utils._pytree`` (once; a no-op where they are registered)."""
    structures = sys.modules[_STRUCTURES]
    for name, attribute in _TENSOR_WRAPPERS:
        cls = getattr(structures, name, None)
        if cls is not None and cls not in pytree.SUPPORTED_NODES:
            _register_wrapper(cls, attribute)
    instances, image_list = structures.Instances, structures.ImageList
    if instances not in pytree.SUPPORTED_NODES:
        pytree.register_pytree_node(
            instances, _flatten_instances, _unflatten_instances,
            flatten_with_keys_fn=_with_keys(_flatten_instances), serialized_type_name=_name(instances),
        )  # fmt: skip
    if image_list not in pytree.SUPPORTED_NODES:
        pytree.register_pytree_node(
            image_list, _flatten_image_list, lambda children, _: image_list(children[0], children[1]),
            flatten_with_keys_fn=_with_keys(_flatten_image_list), serialized_type_name=_name(image_list),
        )  # fmt: skip


def _name(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _with_keys(flatten: Any) -> Any:
    def flatten_with_keys(value: Any) -> tuple[list[tuple[Any, Any]], Any]:
        children, fields = flatten(value)
        return [(pytree.MappingKey(f), c) for f, c in zip(fields, children)], fields

    return flatten_with_keys


def _register_wrapper(cls: type, attribute: str) -> None:
    def flatten(value: Any) -> tuple[list[Any], Any]:
        return [getattr(value, attribute)], [attribute]

    pytree.register_pytree_node(
        cls, flatten, lambda children, _: cls(children[0]),
        flatten_with_keys_fn=_with_keys(flatten), serialized_type_name=_name(cls),
    )  # fmt: skip


def _flatten_instances(instances: Any) -> tuple[list[Any], list[str]]:
    """``image_size`` first (as a tensor: under tracing detectron2 computes it from the input), then the fields."""
    fields = instances.get_fields()
    height, width = instances.image_size
    if isinstance(height, torch.Tensor) or isinstance(width, torch.Tensor):
        size = torch.stack([torch.as_tensor(height), torch.as_tensor(width)])
    else:
        size = torch.tensor([height, width])
    return [size, *fields.values()], ["image_size", *fields]


def _unflatten_instances(children: list[Any], fields: list[str]) -> Any:
    size = children[0]
    image_size = tuple(int(s) for s in size) if isinstance(size, torch.Tensor) else size
    return sys.modules[_STRUCTURES].Instances(image_size, **dict(zip(fields[1:], children[1:])))


def _flatten_image_list(images: Any) -> tuple[list[Any], list[str]]:
    return [images.tensor, images.image_sizes], ["tensor", "image_sizes"]


@contextlib.contextmanager
def _traceable_len() -> Iterator[None]:
    """detectron2's own ``patch_builtin_len``: ``len(instances)`` followed by a trace, not baked in."""
    from detectron2.export.torchscript_patch import patch_builtin_len

    with patch_builtin_len():
        yield


class _StructuredTracingAdapter(nn.Module):
    """A ``TracingAdapter`` whose flat outputs are rebuilt by its ``outputs_schema`` (its graph is unchanged)."""

    def __init__(self, adapter: nn.Module) -> None:
        super().__init__()
        self.adapter = adapter

    def forward(self, *args: torch.Tensor) -> Any:
        """Run the adapter and rebuild its outputs (``Instances`` and the rest)."""
        flat = self.adapter(*args)
        return self.adapter.outputs_schema(flat)


class _PanopticWithoutMerge(nn.Module):
    """``PanopticFPN`` returning ``sem_seg`` and ``instances`` per image, without the panoptic merge.

    The merge (``combine_semantic_and_instance_outputs``) builds ``segments_info`` of Python
    ints and bools, which no graph can return; it runs on the host, on what this returns.
    The rest is ``PanopticFPN.inference`` as detectron2 writes it.
    """

    # What the manifest records of the substitution (the engine reads ``substitution`` of any module it exports).
    substitution: ClassVar[dict[str, Any]] = {
        "exported": "PanopticFPN.inference without its panoptic merge",
        "dropped": ["panoptic_seg"],
        "host_step": (
            "detectron2.modeling.meta_arch.panoptic_fpn.combine_semantic_and_instance_outputs(instances,"
            " sem_seg.argmax(0), overlap_threshold, stuff_area_thresh, instances_score_thresh), with the"
            " thresholds of cfg.MODEL.PANOPTIC_FPN.COMBINE, per image"
        ),
        "why": "the merge's segments_info holds Python ints and bools, which no graph can return",
    }

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, batched_inputs: list[dict[str, torch.Tensor]]) -> list[dict[str, Any]]:
        """``[{"sem_seg": Tensor, "instances": Instances}]``, one per image, at each input's size."""
        from detectron2.modeling.postprocessing import detector_postprocess, sem_seg_postprocess

        model = self.model
        images = model.preprocess_image(batched_inputs)
        features = model.backbone(images.tensor)
        sem_seg_results, _ = model.sem_seg_head(features, None)
        proposals, _ = model.proposal_generator(images, features, None)
        detector_results, _ = model.roi_heads(images, features, proposals, None)
        results = []
        for sem_seg, detections, inputs, size in zip(sem_seg_results, detector_results, batched_inputs,
                                                     images.image_sizes):  # fmt: skip
            height, width = inputs.get("height", size[0]), inputs.get("width", size[1])
            results.append({"sem_seg": sem_seg_postprocess(sem_seg, size, height, width),
                            "instances": detector_postprocess(detections, height, width)})  # fmt: skip
        return results


def _prepared(module: nn.Module) -> nn.Module:
    """``module``; a ``TracingAdapter`` with structured outputs; a ``PanopticFPN`` without the host-side merge."""
    flatten = sys.modules.get("detectron2.export.flatten")
    if flatten is not None and isinstance(module, flatten.TracingAdapter):
        return _same_mode(_StructuredTracingAdapter(module), module)
    panoptic = sys.modules.get("detectron2.modeling.meta_arch.panoptic_fpn")
    if panoptic is not None and isinstance(module, panoptic.PanopticFPN):
        return _same_mode(_PanopticWithoutMerge(module), module)
    return module


def _same_mode(wrapper: nn.Module, module: nn.Module) -> nn.Module:
    """``wrapper`` in ``module``'s mode, by its own flag only.

    ``.train(mode)`` would reset every submodule's too, and a ``TracingAdapter`` (training mode,
    as every new module) around a model in eval mode is how detectron2 builds one.
    """
    wrapper.training = module.training
    return wrapper
