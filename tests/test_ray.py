"""`lightning-deploy serve --engine ray`: a Ray Serve application on a real Ray cluster the command starts.

One node, every process on the loopback (``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``, set by the command);
two replicas; every wait bounded; every process the server started gone at the end.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time

import httpx
import numpy as np
import psutil
import pytest
import tritonclient.http as triton
from models import StructuredModel, structured_sample
from servers import ENV, assert_close, free_port, serve_cli, structured_request

from lightning_deploy import export, load

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


def _wait(condition, seconds, what):
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"not within {seconds} s: {what}"
        time.sleep(0.5)


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

        def up():
            assert process.poll() is None, (tmp_path / "ray.log").read_text()[-3000:]
            try:
                return httpx.get(f"{url}/health", timeout=5).status_code == 200
            except httpx.HTTPError:
                return False

        _wait(up, 180, "the Ray application's /health")
        _wait(lambda: len(_replicas(marker)) == 2, 60, "two replicas")

        # 8 concurrent clients, every answer equal to eager's (requests made first: building the model seeds torch)
        failures = []
        requests = {seed: [structured_request(rows=1 + (seed + n) % 4, seed=seed * 10 + n) for n in range(6)]
                    for seed in range(8)}  # fmt: skip

        def client(seed):
            with httpx.Client(timeout=60) as http:
                for body, expected in requests[seed]:
                    try:
                        assert_close(http.post(f"{url}/predict", json=body).json(), expected)
                    except AssertionError as err:
                        failures.append(str(err))

        threads = [threading.Thread(target=client, args=(seed,)) for seed in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        assert not failures, failures[:3]

        # Triton's client through the Open Inference Protocol
        x = np.random.default_rng(0).standard_normal((3, 8)).astype(np.float32)
        mask = np.ones(3, np.float32)
        inputs = [triton.InferInput("batch.x", [3, 8], "FP32"), triton.InferInput("batch.mask", [3], "FP32")]
        inputs[0].set_data_from_numpy(x, binary_data=False)
        inputs[1].set_data_from_numpy(mask, binary_data=False)
        got = triton.InferenceServerClient(f"127.0.0.1:{port}").infer("mlp", inputs).as_numpy("out.logits")
        want = load(manifest).outputs_by_name({"x": x, "mask": mask})["out.logits"]
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)

        # one replica killed: at most one failed request, the replica replaced, answers right after
        victim = _replicas(marker)[0]
        victim.send_signal(signal.SIGKILL)
        failed = 0
        body, expected = structured_request(rows=2, seed=99)
        for _ in range(20):
            answer = httpx.post(f"{url}/predict", json=body, timeout=60)
            failed += answer.status_code != 200
            if answer.status_code == 200:
                assert_close(answer.json(), expected)
        assert failed <= 1, failed
        _wait(lambda: len(_replicas(marker)) == 2 and victim.pid not in {p.pid for p in _replicas(marker)}, 120,
              "the killed replica replaced")  # fmt: skip
        assert_close(httpx.post(f"{url}/predict", json=body, timeout=60).json(), expected)

        process.send_signal(signal.SIGTERM)
        process.wait(90)
        _wait(lambda: not _marked(marker), 60, "every Ray process of the server gone")
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        for leftover in _marked(marker):
            leftover.kill()
        log.close()
