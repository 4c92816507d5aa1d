"""`lightning-deploy serve --engine ray`: a Ray Serve application on a real Ray cluster the command starts.

One node, every process on the loopback (``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``, set by the command);
two replicas; every wait bounded; every process the server started gone at the end.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time

import httpx
import psutil
import pytest
from models import StructuredModel, structured_sample
from servers import (
    ENV,
    answering,
    assert_close,
    check_triton_client,
    concurrent_clients,
    failures_after_kill,
    free_port,
    off_loopback,
    serve_cli,
    structured_request,
    wait_until,
)

from lightning_deploy import export

pytest.importorskip("ray.serve")


def _marked(marker):
    found = []
    for process in psutil.process_iter():
        try:
            if process.environ().get("LIGHTNING_DEPLOY_TEST_MARKER") == marker:
                found.append(process)
        except (psutil.AccessDenied, psutil.NoSuchProcess, psutil.ZombieProcess):
            continue
    return found


def _replicas(marker):
    replicas = []
    for process in _marked(marker):
        try:
            if "ServeReplica" in " ".join(process.cmdline()):
                replicas.append(process)
        except (psutil.NoSuchProcess, psutil.ZombieProcess):
            continue
    return replicas


def test_two_ray_replicas_answer_like_load_survive_a_killed_replica_and_stop_on_sigterm(tmp_path):
    export(StructuredModel(), structured_sample(), tmp_path, "mlp", formats=["onnx"])
    manifest = tmp_path / "mlp.export.json"
    port, marker = free_port(), f"ray-{os.getpid()}"
    log = (tmp_path / "ray.log").open("w")
    process = subprocess.Popen(
        [*serve_cli(manifest, "--engine", "ray", "--replicas", "2", "--max-batch-size", "4", "--batch-timeout",
                    "0.005"), "--port", str(port)],
        cwd=tmp_path, env={**ENV, "LIGHTNING_DEPLOY_TEST_MARKER": marker}, stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(answering(f"{url}/health", process, tmp_path / "ray.log"), 180, "the Ray application's /health")
        wait_until(lambda: len(_replicas(marker)) == 2, 60, "two replicas")

        assert not (failures := concurrent_clients(url)), failures[:3]  # 8 clients, every answer equal to eager's
        assert not (outside := off_loopback(_marked(marker))), outside  # every Ray process on the loopback only
        check_triton_client(f"127.0.0.1:{port}", manifest)  # Triton's client through the Open Inference Protocol

        # one replica killed: at most one failed request, the replica replaced, answers right after
        victim = _replicas(marker)[0]
        assert failures_after_kill(url, victim) <= 1
        wait_until(lambda: len(_replicas(marker)) == 2 and victim.pid not in {p.pid for p in _replicas(marker)}, 120,
              "the killed replica replaced")  # fmt: skip
        body, expected = structured_request(rows=2, seed=99)
        assert_close(httpx.post(f"{url}/predict", json=body, timeout=60).json(), expected)

        # SIGTERM to the whole process group, as systemd's stop and `kill -- -PGID` send it: Ray's own processes
        # get it too, and the command still ends every process (it waited 41 s for Serve's controller before)
        stopped = time.monotonic()
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(60)
        wait_until(lambda: not _marked(marker), 60, "every Ray process of the server gone")
        assert time.monotonic() - stopped < 30, time.monotonic() - stopped
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        for leftover in _marked(marker):
            leftover.kill()
        log.close()
