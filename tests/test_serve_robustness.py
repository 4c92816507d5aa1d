"""`lightning-deploy serve` under what a real service meets: dead workers, huge bodies, no key, scrapes, SIGTERM.

Every server is a real subprocess on a free port of 127.0.0.1; every wait is bounded.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import httpx
import psutil
import pytest
from models import StructuredModel, structured_sample
from prometheus_client.parser import text_string_to_metric_families
from servers import assert_close, running_server, serve_cli, structured_request

from lightning_deploy import export
from lightning_deploy.errors import ConfigurationError
from lightning_deploy.serving.guards import parse_size

KEY = "test-key-4f1c9a"
HUGE = 300_000_000  # bytes: the body that took 83 s and 7.7 GB before the limit


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    folder = tmp_path_factory.mktemp("robust")
    export(StructuredModel(), structured_sample(), folder, "mlp", formats=["onnx"])
    return folder / "mlp.export.json"


@pytest.fixture(scope="module")
def guarded_server(manifest):
    """Default host and payload limit, a key from --api-key-env."""
    args = serve_cli(manifest, "--api-key-env", "MLP_KEY", host=None)
    with running_server(args, manifest.parent, env={"MLP_KEY": KEY}) as running:
        yield running


def _inference_workers(process):
    """LitServe's inference workers: the spawned children (uvicorn's are forked, the manager too)."""
    tree = psutil.Process(process.pid).children(recursive=True)
    return [child for child in tree if "spawn_main" in " ".join(child.cmdline())]


def _tree_rss(process):
    tree = [psutil.Process(process.pid), *psutil.Process(process.pid).children(recursive=True)]
    return sum(member.memory_info().rss for member in tree)


def _counts(url):
    """``/metrics`` as {(sample name, labels as a sorted tuple): value}."""
    text = httpx.get(f"{url}/metrics", timeout=10).text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_the_key_guards_predict_but_not_health_and_the_server_listens_on_localhost(guarded_server):
    process, url = guarded_server
    body, expected = structured_request(rows=3, seed=1)
    assert httpx.get(f"{url}/health", timeout=10).status_code == 200
    assert httpx.post(f"{url}/predict", json=body, timeout=30).status_code == 401
    wrong = httpx.post(f"{url}/predict", json=body, headers={"X-API-Key": "wrong"}, timeout=30)
    assert wrong.status_code == 401 and "X-API-Key" in wrong.json()["detail"]
    assert httpx.get(f"{url}/info", timeout=10).status_code == 401
    answer = httpx.post(f"{url}/predict", json=body, headers={"X-API-Key": KEY}, timeout=30)
    assert answer.status_code == 200, answer.text
    assert_close(answer.json(), expected)
    tree = [psutil.Process(process.pid), *psutil.Process(process.pid).children(recursive=True)]
    listening = {c.laddr.ip for member in tree for c in member.net_connections("tcp") if c.status == "LISTEN"}
    assert listening == {"127.0.0.1"}, listening


def test_json_without_a_content_type_or_as_curls_form_type_is_read_as_json(guarded_server):
    _, url = guarded_server
    body, expected = structured_request(rows=2, seed=2)
    raw = json.dumps(body).encode()
    for headers in ({}, {"Content-Type": "application/x-www-form-urlencoded"}):  # curl -d sends the second
        answer = httpx.post(f"{url}/predict", content=raw, headers={"X-API-Key": KEY, **headers}, timeout=30)
        assert answer.request.headers.get("Content-Type") == headers.get("Content-Type")
        assert answer.status_code == 200, (headers, answer.text)
        assert_close(answer.json(), expected)
    broken = httpx.post(f"{url}/predict", content=b"{not json", headers={"X-API-Key": KEY}, timeout=30)
    assert broken.status_code == 422, broken.text


def _answer_to(sock, timeout_s):
    """The status line and body of the answer on ``sock`` (read until the server closes it)."""
    sock.settimeout(timeout_s)
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def test_a_300_mb_body_is_refused_unread_by_length_and_while_chunked(guarded_server, reliability):
    process, url = guarded_server
    port = int(url.rsplit(":", 1)[1])
    head = f"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nX-API-Key: {KEY}\r\n"
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port)) as sock:  # by Content-Length: answered from the headers
        # the headers alone: body bytes the server never reads make its close a reset, which can drop the 413
        sock.sendall(f"{head}Content-Length: {HUGE}\r\n\r\n".encode())
        answer = _answer_to(sock, 5)
    by_length_s = time.monotonic() - started
    assert by_length_s < 5
    assert answer.startswith(b"HTTP/1.1 413"), answer[:300]
    assert b"64000000 bytes" in answer and b"--max-payload-size" in answer

    started, sent = time.monotonic(), 0
    chunk = b"0" * 1_000_000
    with socket.create_connection(("127.0.0.1", port)) as sock:  # chunked: counted as it streams
        sock.sendall(f"{head}Transfer-Encoding: chunked\r\n\r\n".encode())
        try:
            while sent < HUGE:
                sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                sent += len(chunk)
        except OSError:  # the server answered and closed the connection: the rest is never read
            pass
        answer = _answer_to(sock, 5)
    chunked_s = time.monotonic() - started
    assert chunked_s < 5
    assert answer.startswith(b"HTTP/1.1 413"), answer[:300]
    assert sent < HUGE / 2, f"the server read {sent} bytes before refusing"
    rss = _tree_rss(process)
    assert rss < 1.5 * 2**30
    reliability["a 300 MB body to `serve` (default --max-payload-size 64MB)"] = (
        f"413 in {by_length_s * 1e3:.0f} ms by Content-Length, in {chunked_s * 1e3:.0f} ms chunked"
        f" (after {sent / 1e6:.0f} MB sent); server RSS {rss / 2**20:.0f} MiB, all processes"
    )
    body, expected = structured_request(rows=1, seed=3)
    after = httpx.post(f"{url}/predict", json=body, headers={"X-API-Key": KEY}, timeout=30)
    assert after.status_code == 200, after.text
    assert_close(after.json(), expected)


def test_metrics_count_the_requests_sent_and_need_no_key(guarded_server):
    _, url = guarded_server
    before = _counts(url)
    cases = [structured_request(rows=1 + seed % 3, seed=seed) for seed in range(7)]
    with httpx.Client(headers={"X-API-Key": KEY}, timeout=30) as client:
        for body, expected in cases:
            assert_close(client.post(f"{url}/predict", json=body).json(), expected)
        for _ in range(3):
            assert client.post(f"{url}/predict", json={"batch": {"x": [[1.0]]}}).status_code == 422
    after = _counts(url)

    def grew(name, **labels):
        key = (name, tuple(sorted(labels.items())))
        return after.get(key, 0) - before.get(key, 0)

    assert grew("lightning_deploy_requests_total", route="/predict", status="200") == 7
    assert grew("lightning_deploy_requests_total", route="/predict", status="422") == 3
    assert grew("lightning_deploy_request_seconds_count", route="/predict") == 10
    assert grew("lightning_deploy_batch_size_count") == 10  # one worker call each (no batching here)
    assert after[("lightning_deploy_worker_restarts_total", ())] == 0


def test_a_killed_worker_is_replaced_and_the_request_it_held_gets_a_504(manifest, reliability):
    """Here the key comes from LitServe's own variable; the start-up wait reads /health without it."""
    server = running_server(serve_cli(manifest, "--timeout", "5"), manifest.parent, env={"LIT_SERVER_API_KEY": KEY})
    with server as (process, url), httpx.Client(headers={"X-API-Key": KEY}) as keyed:
        assert httpx.post(f"{url}/predict", json={}, timeout=30).status_code == 401
        (worker,) = _inference_workers(process)
        body, expected = structured_request(rows=2, seed=4)
        os.kill(worker.pid, signal.SIGSTOP)  # the next request is taken by a worker that will not answer it
        held = {}

        def send():
            started = time.monotonic()
            held["answer"] = keyed.post(f"{url}/predict", json=body, timeout=60)
            held["seconds"] = time.monotonic() - started

        client = threading.Thread(target=send)
        client.start()
        time.sleep(1)
        os.kill(worker.pid, signal.SIGKILL)
        killed = time.monotonic()
        client.join(30)
        assert held["answer"].status_code == 504, held["answer"].text
        assert "request timeout" in held["answer"].json()["detail"]
        assert held["seconds"] < 5 + 2

        deadline = killed + 60
        while True:  # replaced within 60 s: the next requests are answered right
            answer = keyed.post(f"{url}/predict", json=body, timeout=30)
            if answer.status_code == 200:
                answered_after_s = time.monotonic() - killed
                break
            assert time.monotonic() < deadline, f"no worker answered within 60 s: {answer.status_code} {answer.text}"
            time.sleep(0.5)
        assert_close(answer.json(), expected)
        for seed in range(5, 9):
            other, wanted = structured_request(rows=1 + seed % 3, seed=seed)
            assert_close(keyed.post(f"{url}/predict", json=other, timeout=30).json(), wanted)
        (replacement,) = _inference_workers(process)
        assert replacement.pid != worker.pid
        assert _counts(url)[("lightning_deploy_worker_restarts_total", ())] == 1
        assert process.poll() is None
        reliability["a SIGKILLed inference worker of `serve --timeout 5`, a request in it"] = (
            f"that request 504 after {held['seconds']:.1f} s; a new worker answered right"
            f" {answered_after_s:.1f} s after the kill (the first try after that 504); counted in /metrics"
        )


def test_sigterm_answers_the_requests_in_flight_then_stops(manifest, reliability):
    with running_server(serve_cli(manifest, "--timeout", "20"), manifest.parent) as (process, url):
        (worker,) = _inference_workers(process)
        cases = [structured_request(rows=1 + seed % 2, seed=seed) for seed in range(3)]
        answers = {}
        os.kill(worker.pid, signal.SIGSTOP)  # hold the requests in flight until after the SIGTERM

        def send(index):
            answers[index] = httpx.post(f"{url}/predict", json=cases[index][0], timeout=60)

        clients = [threading.Thread(target=send, args=(index,)) for index in range(len(cases))]
        for client in clients:
            client.start()
        time.sleep(1)
        process.send_signal(signal.SIGTERM)
        time.sleep(1)
        os.kill(worker.pid, signal.SIGCONT)
        for client in clients:
            client.join(60)
        for index, (_, expected) in enumerate(cases):
            assert answers[index].status_code == 200, answers[index].text
            assert_close(answers[index].json(), expected)
        assert process.wait(60) == 0, process.log.read_text()[-3000:]
        assert not worker.is_running() or worker.status() == psutil.STATUS_ZOMBIE
        reliability["SIGTERM to `serve` with requests in flight"] = (
            f"{len(cases)}/{len(cases)} answered 200 with the right numbers, then exit status 0"
        )


def test_payload_sizes_read_with_their_units_and_bad_ones_name_the_option():
    assert parse_size("64MB") == 64_000_000
    assert parse_size("512KiB") == 512 * 1024
    assert parse_size("1.5 GB") == 1_500_000_000
    assert parse_size("2048") == parse_size(2048) == 2048
    for bad in ("64 parsecs", "MB", "-1MB", "0", ""):
        with pytest.raises(ConfigurationError, match="--max-payload-size"):
            parse_size(bad)


@pytest.mark.parametrize("call", ["serve", "main"])
def test_a_script_starting_the_server_without_a_main_guard_exits_naming_it_and_leaves_no_process(
    manifest, tmp_path, call
):
    """spawn's workers import the script again; a serve() at module level would start a server in each of them."""
    start = {
        "serve": f"from lightning_deploy.serving.server import serve\nserve({str(manifest)!r}, port=0)\n",
        "main": "from lightning_deploy.cli import main\n"
        f"raise SystemExit(main(['serve', {str(manifest)!r}, '--port', '0']))\n",
    }[call]
    script = tmp_path / "serve_it.py"
    script.write_text(start)
    marker = f"main-guard-{os.getpid()}-{call}"
    began = time.monotonic()
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60,
                            env={**os.environ, "LIGHTNING_DEPLOY_TEST_MARKER": marker})  # fmt: skip
    assert time.monotonic() - began < 60
    assert result.returncode != 0
    assert 'if __name__ == "__main__":' in result.stderr and str(script) in result.stderr, result.stderr[-2000:]
    time.sleep(0.5)
    left = []
    for process in psutil.process_iter():
        try:
            if process.environ().get("LIGHTNING_DEPLOY_TEST_MARKER") == marker:
                left.append(process.pid)
        except (psutil.AccessDenied, psutil.NoSuchProcess, psutil.ZombieProcess):
            continue
    assert not left, f"processes left: {left}"


def test_the_access_log_and_the_log_level_are_options(manifest):
    """uvicorn's line per request is on by default and off with --no-access-log (one less write a request)."""
    body, expected = structured_request(rows=1, seed=2)
    lines = {}
    for options in ([], ["--no-access-log", "--log-level", "warning"]):
        with running_server(serve_cli(manifest, *options), manifest.parent) as (process, url):
            for _ in range(3):
                assert_close(httpx.post(f"{url}/predict", json=body, timeout=30).json(), expected)
            time.sleep(0.5)
            lines[tuple(options)] = process.log.read_text().count('"POST /predict HTTP/1.1" 200')
    assert lines[()] == 3 and lines[("--no-access-log", "--log-level", "warning")] == 0, lines
