"""The model-from-code file of the MLflow model: MLflow runs it at load to get the ``PythonModel``.

Logging a file rather than a pickled object (MLflow's "models from code") keeps the model
free of pickles; the class itself comes from the package's code shipped with the model.
"""

import mlflow.models

from lightning_deploy.tracking.pyfunc_model import ExportedPyfunc

mlflow.models.set_model(ExportedPyfunc())
