"""The Lightning side: the ``ModelExport`` callback, checkpoint reading and model rebuilding, LightningCLI.

The only part of the package that imports Lightning.
"""
