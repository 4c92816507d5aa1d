"""Verifying what the export made: the checks (samples), the eager reference, each artifact through ``load()``.

``checks.py`` chooses the samples (the export sample, a second shape, a synthetic one, the
user's data), ``eager.py`` runs the module on them, ``verify.py`` opens each artifact as
``load()`` does and compares, ``latency.py`` times the verified ones, ``accuracy.py`` measures a
lower-precision artifact's top-1 and ``golden.py`` writes the checks that travel. The rules
they compare by are the torch-free ``lightning_deploy.verification``'s.
"""
