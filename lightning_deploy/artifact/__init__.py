"""The contract on disk: the schema of nested inputs and outputs, the manifest and its checks, crash-safe files.

Needs only the standard library and numpy, so that everything above it (the runtime, the
serving side, ``lightning-deploy show``) reads an artifact without torch or Lightning.
"""
