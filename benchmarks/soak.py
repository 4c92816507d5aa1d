"""Soak: ``lightning-deploy serve`` for minutes under mixed traffic, one inference worker killed each minute.

Run: ``.venv/bin/python benchmarks/serving.py --soak [--minutes 10] [--doc docs/performance.md]``.
The digits MLP (examples/digits.py) exported to ONNX is served with two inference workers, a key,
``--timeout 10`` and ``--max-payload-size 1MB``. ``CLIENTS`` threads send, until the time is up:
80% valid bodies of 1 to 4 rows (answer checked against ``load()``), and 5% each of a wrong
shape (422 expected), a body that is not JSON (422), no key (401) and a 1.5 MB body (413).
At 30 s into each minute one worker is SIGKILLed. A request fails when its answer is not the
expected status (or, for a valid one, not the right numbers); a failure is *at a kill* when the
request was in flight while a worker was dead (from the kill until its replacement started).
Printed and written: per minute, requests, failures, p50/p99 of the valid answers and the
server's RSS (every process of it); then the totals, RSS at the end against after warm-up
(25 s in, before the first kill), and what ``/metrics`` counted.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import httpx
import numpy as np
import psutil
import torch
from perfdoc import publish, write_page
from prometheus_client.parser import text_string_to_metric_families
from sklearn.datasets import load_digits

from lightning_deploy import export, load

ROOT = Path(__file__).parents[1]
sys.path.insert(0, str(ROOT / "examples"))
from digits import DigitsMLP

CLIENTS = 8
KEY = "soak-key"
TIMEOUT_S = 10
WARM_UP_S = 25
KILL_AT_S = 30  # seconds into each minute


class Outcome(NamedTuple):
    """One request: when it was sent and answered (seconds since the start), what was sent, whether it went right.

    A tuple of plain values, so that the garbage collector stops tracking it: hundreds of thousands
    of tracked objects made each full collection, and so the clients, slower minute by minute.
    """

    start: float
    end: float
    kind: str
    status: int  # 0: no HTTP answer
    ok: bool


@dataclass(frozen=True)
class Traffic:
    """The bodies the clients pick from, with the status (and for valid ones the outputs) each must get."""

    valid: list[tuple[bytes, np.ndarray]]
    wrong_shape: bytes
    oversized: bytes


def traffic(artifact: Path, parameter: str) -> Traffic:
    """16 valid bodies of 1-4 digits rows with ``load()``'s answers, and the invalid ones."""
    model = load(artifact, threads=1)
    digits = load_digits().data.astype(np.float32)
    valid = []
    for index in range(16):
        rows = digits[index * 4 : index * 4 + 1 + index % 4]
        valid.append((json.dumps({parameter: rows.tolist()}).encode(), model(rows)))
    wrong = json.dumps({parameter: digits[:2, :63].tolist()}).encode()
    return Traffic(valid, wrong, b" " * 1_500_000)


def send(http: httpx.Client, url: str, load_: Traffic, pick: random.Random) -> tuple[str, int, bool]:
    """One request of the mix; its kind, status and whether it got the answer it must get."""
    roll = pick.random()
    headers = {"X-API-Key": KEY, "Content-Type": "application/json"}
    if roll < 0.80:
        body, expected = pick.choice(load_.valid)
        response = http.post(f"{url}/predict", content=body, headers=headers)
        right = response.status_code == 200 and np.allclose(response.json(), expected, atol=1e-4)
        return "valid", response.status_code, right
    kind, body, wanted = {
        0: ("wrong shape", load_.wrong_shape, 422),
        1: ("not JSON", b"{oops", 422),
        2: ("no key", load_.valid[0][0], 401),
        3: ("1.5 MB", load_.oversized, 413),
    }[min(int((roll - 0.80) / 0.05), 3)]
    response = http.post(f"{url}/predict", content=body, headers={} if kind == "no key" else headers)
    return kind, response.status_code, response.status_code == wanted


def tree_rss(pid: int) -> int:
    """Resident memory of ``pid`` and every process under it, in bytes."""
    root = psutil.Process(pid)
    total = 0
    for member in [root, *root.children(recursive=True)]:
        with contextlib.suppress(psutil.NoSuchProcess):
            total += member.memory_info().rss
    return total


def cpu_seconds(pid: int, seen: dict[int, float]) -> None:
    """Update ``seen`` with the CPU seconds of ``pid`` and every process under it; the dead keep their last value."""
    root = psutil.Process(pid)
    for member in [root, *root.children(recursive=True)]:
        with contextlib.suppress(psutil.NoSuchProcess):
            times = member.cpu_times()
            seen[member.pid] = times.user + times.system


def inference_workers(pid: int) -> list[psutil.Process]:
    """LitServe's inference workers: the server's spawned children that are alive (a killed one is a zombie a while)."""
    found = []
    for child in psutil.Process(pid).children(recursive=True):
        with contextlib.suppress(psutil.NoSuchProcess):  # ZombieProcess included
            if "spawn_main" in " ".join(child.cmdline()):
                found.append(child)
    return found


@contextlib.contextmanager
def soak_server(artifact: Path, port: int, log: Path) -> Iterator[subprocess.Popen]:
    """The server as a user would start it for this soak; SIGTERM at the end."""
    command = [sys.executable, "-m", "lightning_deploy.cli", "serve", str(artifact), "--port", str(port),
               "--workers", "2", "--timeout", str(TIMEOUT_S), "--max-payload-size", "1MB",
               "--api-key-env", "SOAK_KEY"]  # fmt: skip
    environment = {**os.environ, "SOAK_KEY": KEY}
    with log.open("w") as output:
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, env=environment)
    try:
        deadline = time.monotonic() + 180
        while not _healthy(f"http://127.0.0.1:{port}"):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the server did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.25)
        yield process
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(60)


def _healthy(url: str) -> bool:
    with contextlib.suppress(httpx.HTTPError):
        return httpx.get(f"{url}/health", timeout=2).status_code == 200
    return False


def soak(minutes: float, threads: int, doc: Path | None, port: int) -> None:
    """Run the soak and publish its tables (performance: per minute; reliability: totals)."""
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as folder:
        export(DigitsMLP().eval(), torch.randn(2, 64), folder, "digits", formats=["onnx"])
        artifact = Path(folder) / "digits.onnx"
        parameter = load(artifact).contract.call.parameters[0]
        load_ = traffic(artifact, parameter)
        with soak_server(artifact, port, Path(folder) / "server.log") as process:
            figures = _drive(process, f"http://127.0.0.1:{port}", load_, minutes * 60)
            figures["metrics"] = _scrape(f"http://127.0.0.1:{port}")
    _publish(figures, minutes, doc)


def _drive(process: subprocess.Popen, url: str, load_: Traffic, seconds: float) -> dict:
    outcomes: list[Outcome] = []
    kills: list[tuple[float, float]] = []  # (killed, replacement seen), seconds since the start
    rss: dict[str, float] = {}
    cpu: dict[int, tuple[float, float]] = {}  # minute -> (server, client) CPU seconds at its last sample
    lock = threading.Lock()
    origin = time.monotonic()
    stop = threading.Event()

    def client(index: int) -> None:
        pick, mine = random.Random(index), []
        with httpx.Client(timeout=TIMEOUT_S + 20) as http:
            while not stop.is_set():
                start = time.monotonic() - origin
                try:
                    kind, status, right = send(http, url, load_, pick)
                except httpx.HTTPError:
                    kind, status, right = "no answer", 0, False
                mine.append(Outcome(start, time.monotonic() - origin, kind, status, right))
        with lock:
            outcomes.extend(mine)

    def killer() -> None:
        minute = 0
        while not stop.wait(max(0.0, minute * 60 + KILL_AT_S - (time.monotonic() - origin))):
            if minute * 60 + KILL_AT_S > seconds:
                return
            workers = inference_workers(process.pid)
            workers[minute % 2].kill()
            killed = time.monotonic() - origin
            before, deadline = {worker.pid for worker in workers}, time.monotonic() + 60
            while not {worker.pid for worker in inference_workers(process.pid)} - before:
                if time.monotonic() > deadline:
                    raise RuntimeError("no worker replaced the killed one within 60 s")
                time.sleep(0.05)
            kills.append((killed, time.monotonic() - origin))
            minute += 1

    server_cpu: dict[int, float] = {}
    client_process = psutil.Process()

    def sampler() -> None:  # each second: the server's RSS, and both sides' CPU seconds so far, by minute
        while not stop.wait(1.0):
            now = time.monotonic() - origin
            if now >= WARM_UP_S and "warm" not in rss:
                rss["warm"] = tree_rss(process.pid)
            rss[f"minute {int(now // 60)}"] = tree_rss(process.pid)
            cpu_seconds(process.pid, server_cpu)
            times = client_process.cpu_times()
            cpu[int(now // 60)] = (sum(server_cpu.values()), times.user + times.system)

    cpu_seconds(process.pid, server_cpu)
    times = client_process.cpu_times()
    cpu[-1] = (sum(server_cpu.values()), times.user + times.system)  # start-up and set-up are not counted
    helpers = [threading.Thread(target=killer), threading.Thread(target=sampler)]
    clients = [threading.Thread(target=client, args=(i,)) for i in range(CLIENTS)]
    for thread in helpers + clients:
        thread.start()
    time.sleep(seconds)
    stop.set()
    for thread in clients + helpers:
        thread.join()
    rss["end"] = tree_rss(process.pid)
    return {"outcomes": outcomes, "kills": kills, "rss": rss, "cpu": cpu, "seconds": seconds}


def _scrape(url: str) -> dict[tuple, float]:
    text = httpx.get(f"{url}/metrics", timeout=10).text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def _at_kill(outcome: Outcome, kill: tuple[float, float]) -> bool:
    """Whether ``outcome`` was in flight while the worker killed at ``kill[0]`` was dead (until ``kill[1]``)."""
    return outcome.start <= kill[1] and outcome.end >= kill[0]


def _publish(figures: dict, minutes: float, doc: Path | None) -> None:
    outcomes, kills, rss = figures["outcomes"], figures["kills"], figures["rss"]
    rows = []
    for minute in range(int(np.ceil(minutes))):
        mine = [o for o in outcomes if minute * 60 <= o.start < (minute + 1) * 60]
        if not mine:
            continue
        latencies = [(o.end - o.start) * 1e3 for o in mine if o.kind == "valid" and o.ok]
        cuts = statistics.quantiles(latencies, n=100)
        failed = [o for o in mine if not o.ok]
        at_kill = sum(any(_at_kill(o, kill) for kill in kills) for o in failed)
        covered = min(60.0, figures["seconds"] - minute * 60)
        cpu_now, cpu_before = figures["cpu"].get(minute, (np.nan, np.nan)), figures["cpu"][minute - 1]
        server_ms, client_ms = ((now - before) / len(mine) * 1e3 for now, before in zip(cpu_now, cpu_before))
        rows.append([
            str(minute + 1), str(sum(minute * 60 <= k < (minute + 1) * 60 for k, _ in kills)), str(len(mine)),
            f"{len(mine) / covered:.0f}", str(len(failed)), str(at_kill), str(len(failed) - at_kill),
            f"{cuts[49]:.1f}", f"{cuts[98]:.1f}", f"{rss.get(f'minute {minute}', rss['end']) / 2**20:.0f}",
            f"{server_ms:.2f}", f"{client_ms:.2f}",
        ])  # fmt: skip
    failed = [o for o in outcomes if not o.ok]
    at_kill = [o for o in failed if any(_at_kill(o, kill) for kill in kills)]
    worst = max((sum(_at_kill(o, kill) for o in failed) for kill in kills), default=0)
    dead_s = [replaced - killed for killed, replaced in kills]
    by_kind = Counter(o.kind for o in outcomes)
    statuses = Counter((o.kind, o.status) for o in failed)
    metrics = figures["metrics"]
    restarts = metrics.get(("lightning_deploy_worker_restarts_total", ()), 0)
    served = sum(v for (name, labels), v in metrics.items() if name == "lightning_deploy_requests_total"
                 and dict(labels).get("route") == "/predict")  # fmt: skip
    growth = rss["end"] / rss["warm"]
    notes = [
        f"{CLIENTS} client threads, {minutes:g} min, two inference workers, --timeout {TIMEOUT_S},"
        " --max-payload-size 1MB, a key. Mix: 80% valid (1-4 rows, answers checked against load()), 5% each"
        " wrong shape (422), not JSON (422), no key (401), 1.5 MB body (413).",
        f"One worker SIGKILLed {KILL_AT_S} s into each minute ({len(kills)} kills); a new one was running"
        f" {min(dead_s, default=0):.1f}-{max(dead_s, default=0):.1f} s later. A failure is a request that did not get"
        " its expected answer; 'at a kill' means it was in flight while a killed worker was not yet replaced.",
        f"Requests by kind: {dict(by_kind)}. Failures by (kind, status): {dict(statuses) or 'none'}.",
        f"Server RSS (all its processes): {rss['warm'] / 2**20:.0f} MiB after warm-up ({WARM_UP_S} s in), "
        f"{rss['end'] / 2**20:.0f} MiB at the end: {growth:.3f}x.",
        "CPU ms/req: CPU seconds spent in the minute by the server's processes (the killed ones up to their last"
        " sample) and by this benchmark's process, per request sent. Both rising together means the machine ran"
        " slower (this VM's speed varies by 10-15% from one run of a fixed loop to the next), not the server.",
        f"/metrics at the end: {restarts:.0f} worker restarts counted, {served:.0f} /predict answers counted"
        f" (the clients sent {len(outcomes)}).",
        f"Totals: {len(outcomes)} requests, {len(failed)} failed, {len(at_kill)} of them at a kill (at most"
        f" {worst} at one kill), {len(failed) - len(at_kill)} elsewhere.",
    ]
    columns = ["minute", "kills", "requests", "req/s", "failed", "at a kill", "elsewhere", "p50 ms", "p99 ms",
               "RSS MiB", "server CPU ms/req", "client CPU ms/req"]  # fmt: skip
    title = f"Soak: {minutes:g} minutes of mixed traffic, one inference worker killed per minute"
    publish("soak", title, columns, rows, notes, doc)
    if doc is not None:  # the same figures on the reliability page
        write_page(doc.parent / "reliability.md", "soak", title, columns, rows, notes)
