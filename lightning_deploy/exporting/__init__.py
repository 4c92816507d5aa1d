"""Making artifacts: the engine, its plan, the eager reference, flattening, the methods, verification, derivatives.

Sits on ``artifact`` and ``runtime`` (every artifact is verified through ``load()``'s own
path); knows nothing of Lightning.
"""
