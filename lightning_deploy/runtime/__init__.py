"""Running artifacts: ``load()``, :class:`ExportedModel`, the call paths, device placement, one backend per runtime.

Imports nothing from the export side or Lightning; for ONNX, not even torch.
"""
