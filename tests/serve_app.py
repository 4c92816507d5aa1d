"""A user's own LitServer around ExportedModelAPI: `python serve_app.py ARTIFACT PORT`."""

import sys

import litserve as ls

from lightning_deploy.serving.server import ExportedModelAPI

if __name__ == "__main__":  # spawned workers import this file again: build the server only here
    artifact, port = sys.argv[1], int(sys.argv[2])
    api = ExportedModelAPI(artifact, max_batch_size=2, batch_timeout=0.01)
    server = ls.LitServer(api, accelerator="cpu", workers_per_device=1, timeout=60)
    server.run(host="127.0.0.1", port=port, generate_client_file=False, log_level="warning")
