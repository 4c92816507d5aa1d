"""Comparing artifacts with eager, at export and anywhere later: the rules, the golden samples, ``verify``.

Sits on ``runtime`` and ``artifact`` and imports neither torch nor onnx, so that an artifact
is re-checked on a deployment machine with only numpy and its runtime installed.
"""
