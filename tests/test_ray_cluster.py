"""Two Ray nodes in two network namespaces: the Serve application spread over both, and Ray Data batch inference
that outlives a lost worker node.

Each node is a host of its own (``ray_cluster.TwoNodeCluster``); the drivers (``lightning-deploy serve
--engine ray``, ``lightning-deploy predict --engine ray``) run inside the head's namespace, and the test's
clients talk to the head's address on the bridge. Skipped where namespaces cannot be made (not root).
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import warnings
from pathlib import Path

import httpx
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
import yaml
from digits import DigitsMLP
from models import StructuredModel, structured_sample
from ray_cluster import METRICS_PORT, TwoNodeCluster, unavailable
from servers import (
    ENV,
    answering,
    assert_close,
    check_triton_client,
    concurrent_clients,
    failures_after_kill,
    structured_request,
    wait_until,
)
from sklearn.datasets import load_digits

from lightning_deploy import export, load

pytest.importorskip("ray.serve")

ROWS = 100_000
SERVE_PORT = 8000  # inside the head's namespace
SERVE_REQUESTS = "ray_serve_num_http_requests_total{"  # Ray Serve's own counter, by route and status
CLI = (sys.executable, "-m", "lightning_deploy.cli")
EXAMPLE = Path(__file__).parents[1] / "examples" / "ray_serve"


@pytest.fixture(scope="module")
def cluster():
    reason = unavailable()
    if reason:
        pytest.skip(reason)
    with TwoNodeCluster(node_env={"PYTHONPATH": str(EXAMPLE)}) as made:  # application.py, as the image has it
        yield made


@pytest.fixture(scope="module")
def digits_rows(tmp_path_factory):
    """The digits MLP exported to ONNX, and 100,000 rows of digits (each with its own noise) as Parquet."""
    folder = tmp_path_factory.mktemp("digits")
    torch.manual_seed(0)
    export(DigitsMLP().eval(), torch.zeros(4, 64), folder, "digits", formats=["onnx"])
    digits = load_digits().data.astype(np.float32) / 16
    pixels = np.resize(digits, (ROWS, 64)) + np.random.default_rng(0).normal(0, 0.01, (ROWS, 64)).astype(np.float32)
    pq.write_table(pa.table({"pixels": pa.FixedShapeTensorArray.from_numpy_ndarray(pixels)}), folder / "rows.parquet",
                   row_group_size=10_000)  # fmt: skip
    return folder, pixels


def test_two_replicas_one_per_node_answer_like_eager_and_a_killed_replica_is_replaced(cluster, tmp_path):
    export(StructuredModel(), structured_sample(), tmp_path, "mlp", formats=["onnx"])
    log = (tmp_path / "serve.log").open("w")
    process = subprocess.Popen(
        cluster.command("head", *CLI, "serve", str(tmp_path / "mlp.export.json"), "--engine", "ray", "--address",
                        cluster.address, "--replicas", "2", "--host", "0.0.0.0",
                        "--port", str(SERVE_PORT)),
        env=ENV, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    url = f"http://{cluster.ips['head']}:{SERVE_PORT}"
    try:
        wait_until(answering(f"{url}/v2/health/ready", process, tmp_path / "serve.log"), 180, "the application ready")
        replicas = {node: cluster.processes(node, "ServeReplica") for node in cluster.names}
        assert [len(replicas["head"]), len(replicas["worker"])] == [1, 1], replicas

        assert not (failures := concurrent_clients(url)), failures[:3]  # 8 clients, every answer equal to eager's

        def served_by_ray():  # Ray Serve's own metrics, on each node's metrics port: the 48 requests counted
            total = 0.0
            for node in cluster.names:
                with contextlib.suppress(httpx.HTTPError):
                    text = httpx.get(f"http://{cluster.ips[node]}:{METRICS_PORT}/metrics", timeout=5).text
                    total += sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                                 if line.startswith(SERVE_REQUESTS) and 'route="/predict"' in line)  # fmt: skip
            return total >= 48

        wait_until(served_by_ray, 90, "ray_serve_num_http_requests_total counting the requests")

        check_triton_client(f"{cluster.ips['head']}:{SERVE_PORT}", tmp_path / "mlp.export.json", rows=5)

        # the worker node's replica killed: at most one failed request, replaced, answers right after
        victim = replicas["worker"][0]
        assert failures_after_kill(url, victim) <= 1

        def replaced():
            now = [p.pid for node in cluster.names for p in cluster.processes(node, "ServeReplica")]
            return len(now) == 2 and victim.pid not in now

        wait_until(replaced, 120, "the killed replica replaced")
        body, expected = structured_request(rows=3, seed=77)
        for _ in range(4):
            assert_close(httpx.post(f"{url}/predict", json=body, timeout=60).json(), expected)

        # SIGTERM: the command exits and takes its application with it; the cluster stays up
        process.send_signal(signal.SIGTERM)
        assert process.wait(90) == 0
        wait_until(lambda: not any(cluster.processes(node, "ServeReplica") for node in cluster.names), 60,
                   "the application's replicas gone")  # fmt: skip
        assert cluster.alive_nodes() == 2
    finally:
        if process.poll() is None:
            process.kill()
        log.close()


@pytest.mark.parametrize("application", ["serve build's module", "the builder with args"])
def test_a_serve_config_deploys_on_the_cluster_with_serve_run(cluster, tmp_path, application):
    """rayservice.yaml's serveConfigV2 (its manifest path set to this test's), and the same config naming
    ``lightning_deploy.serving.ray:build`` with ``args`` instead of a module, run by Ray's own ``serve run``."""
    export(StructuredModel(), structured_sample(), tmp_path, "mlp", formats=["onnx"])
    service = yaml.safe_load((EXAMPLE / "rayservice.yaml").read_text())
    config = yaml.safe_load(service["spec"]["serveConfigV2"])
    (entry,) = config["applications"]
    if application == "serve build's module":
        entry["runtime_env"]["env_vars"]["LIGHTNING_DEPLOY_MANIFEST"] = str(tmp_path / "mlp.export.json")
    else:
        entry.update(import_path="lightning_deploy.serving.ray:build", runtime_env={},
                     args={"path": str(tmp_path / "mlp.export.json"), "replicas": 2, "max_batch_size": 4})  # fmt: skip
        del entry["deployments"]  # the builder's own settings
    (tmp_path / "serve_config.yaml").write_text(yaml.safe_dump(config))
    log = (tmp_path / "serve_run.log").open("w")
    process = subprocess.Popen(
        cluster.command("head", str(Path(sys.executable).parent / "serve"), "run", str(tmp_path / "serve_config.yaml"),
                        "--address", cluster.address),
        env=ENV, stdout=log, stderr=subprocess.STDOUT, preexec_fn=_terminal_interrupt,
    )  # fmt: skip
    url = f"http://{cluster.ips['head']}:{config['http_options']['port']}"
    try:
        log_file = tmp_path / "serve_run.log"
        wait_until(answering(f"{url}/health", process, log_file), 180, "the config's application", log_file)
        for seed in range(4):
            body, expected = structured_request(rows=1 + seed, seed=seed)
            assert_close(httpx.post(f"{url}/predict", json=body, timeout=60).json(), expected)
        if application == "the builder with args":  # its replicas=2 taken
            wait_until(lambda: sum(len(cluster.processes(node, "ServeReplica")) for node in cluster.names) == 2, 60,
                       "the builder's two replicas")  # fmt: skip
        process.send_signal(signal.SIGINT)  # serve run's Ctrl+C: the application goes
        try:
            process.wait(90)
        except subprocess.TimeoutExpired:  # Ray's own exit past 90 s: say so, then clean up
            tail = log_file.read_text(errors="replace")[-2000:]
            warnings.warn(f"serve run still running 90 s after Ctrl+C; its log ends:\n{tail}", stacklevel=1)
    finally:
        if process.poll() is None:
            process.kill()
            _serve_shutdown(cluster)  # a killed `serve run` leaves its application: the next tests need the CPUs
        log.close()
    wait_until(lambda: not any(cluster.processes(node, "ServeReplica") for node in cluster.names), 60,
               "the application's replicas gone")  # fmt: skip


def _terminal_interrupt() -> None:
    """Ctrl+C as a terminal delivers it: a test run started in the background (``cmd &``, as CI may start it)
    ignores SIGINT, and an ignored signal is inherited through exec, so ``serve run`` would never see it."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _serve_shutdown(cluster) -> None:
    """Ray Serve's own ``serve.shutdown()`` on the cluster: every application and its replicas removed."""
    script = f"import ray; from ray import serve; ray.init(address={cluster.address!r}); serve.shutdown()"
    subprocess.run(cluster.command("head", sys.executable, "-c", script), env=ENV, timeout=120, check=False,
                   capture_output=True)  # fmt: skip


def _predict(cluster, folder, output, *options):
    return subprocess.Popen(
        cluster.command("head", *CLI, "predict", str(folder / "digits.export.json"), "--input",
                        str(folder / "rows.parquet"), "--output", str(output), *options),
        env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def _outputs(path):
    table = pq.read_table(path)
    return table.column("row").to_numpy(), table.column("out").combine_chunks().to_numpy_ndarray()


def test_predict_on_two_nodes_equals_local_and_load_and_survives_the_worker_node_lost_midway(cluster, digits_rows,
                                                                                             tmp_path):  # fmt: skip
    folder, pixels = digits_rows
    want = load(folder / "digits.export.json").run_leaves({"pixels": pixels})["out"]

    local = _predict(cluster, folder, tmp_path / "local", "--batch-size", "1000")
    _, stderr = local.communicate(timeout=300)
    assert local.returncode == 0, stderr[-3000:]
    on_ray = _predict(cluster, folder, tmp_path / "ray", "--engine", "ray", "--address", cluster.address,
                      "--batch-size", "1000")  # fmt: skip
    _, stderr = on_ray.communicate(timeout=300)
    assert on_ray.returncode == 0, stderr[-3000:]
    rows_local, out_local = _outputs(tmp_path / "local" / "predictions.parquet")
    rows_ray, out_ray = _outputs(tmp_path / "ray" / "predictions.parquet")
    np.testing.assert_array_equal(rows_ray, np.arange(ROWS))
    np.testing.assert_array_equal(rows_local, np.arange(ROWS))
    np.testing.assert_allclose(out_ray, out_local, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out_ray, want, rtol=1e-5, atol=1e-6)

    # the worker node lost (every process of its namespace killed) while its actor is running batches
    lost = _predict(cluster, folder, tmp_path / "lost", "--engine", "ray", "--address", cluster.address,
                    "--batch-size", "50")  # fmt: skip
    staged = tmp_path / "lost" / ".predictions.parquet.writing"  # the first batches are written: mid-job
    wait_until(lambda: lost.poll() is None and staged.exists() and cluster.processes("worker", "MapWorker"), 120,
          "an actor on the worker node while rows are being written")  # fmt: skip
    assert cluster.kill("worker") > 0
    assert lost.poll() is None, "the job ended before the node was lost"
    _, stderr = lost.communicate(timeout=300)
    assert lost.returncode == 0, stderr[-3000:]
    rows_lost, out_lost = _outputs(tmp_path / "lost" / "predictions.parquet")
    np.testing.assert_array_equal(rows_lost, np.arange(ROWS))  # every row once, in order
    np.testing.assert_allclose(out_lost, want, rtol=1e-5, atol=1e-6)  # each row its own answer: none lost or doubled
    cluster.ray_start("worker", "--address", cluster.address)  # the node back, for whatever runs next
