"""From an artifact to a service: LitServe, the request codec, Triton model repositories, flat files for C++.

Sits on ``runtime`` and ``artifact``; never imports the export side or Lightning.
"""
