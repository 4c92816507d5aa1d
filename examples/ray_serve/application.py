"""A model's artifact as a Ray Serve application, for ``serve build`` / ``serve run`` and KubeRay's RayService.

``serve build application:application -o serve_config.yaml`` writes the config that
``rayservice.yaml`` holds as ``serveConfigV2``. The manifest's path comes from the environment
(``LIGHTNING_DEPLOY_MANIFEST``, set in the config's ``runtime_env``), so the config names no file;
the path must exist on every node (a volume, or a folder baked into the image).
"""

import os

from lightning_deploy.serving.ray import app

application = app(
    os.environ.get("LIGHTNING_DEPLOY_MANIFEST", "/models/model.export.json"),
    replicas={"min_replicas": 1, "max_replicas": 4, "target_ongoing_requests": 4},
    max_batch_size=8,
    batch_wait_timeout_s=0.005,
)
