"""A real two-node Ray cluster on one machine: each node in a network namespace the test makes, joined by a bridge.

Two namespaces (``ip netns``, as root) are two hosts with their own addresses and ports; a
bridge in the machine's namespace joins their veth ends and gives the test process an address
on the same subnet, so it can reach the nodes' HTTP ports. Nothing is sent to the machine's own
interface address. Every Ray process runs inside a namespace (drivers too, through
``ip netns exec``), so killing a namespace's processes stops a node the way a lost machine does.
At the end every process in both namespaces is killed and the namespaces, links and Ray temp
folders are removed.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

RAY = str(Path(sys.executable).parent / "ray")
PORT = 6379  # the namespaces have ports of their own: no clash with anything on the machine
METRICS_PORT = 8080  # each node's Prometheus metrics, Ray Serve's included
START_TIMEOUT_S = 120
# every node and client of the cluster with the same token, as a secured cluster has it (``ray get-auth-token``)
RAY_ENV = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}


def unavailable() -> str | None:
    """Why two namespaces cannot be made here (not root, no ``ip``), or None."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    if shutil.which("ip") is None:
        return "no `ip` command (iproute2)"
    probe = f"ldprobe{os.getpid()}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if made.returncode != 0:
        return f"`ip netns add` failed: {made.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], check=True)
    return None


def _sh(*args: str) -> None:
    subprocess.run(args, check=True, capture_output=True, text=True, timeout=30)


def _free_subnet() -> ipaddress.IPv4Network:
    """A /24 in 10.213.0.0/16 that no address of the machine is in."""
    taken = [ipaddress.ip_interface(a.address).network for addrs in psutil.net_if_addrs().values() for a in addrs
             if a.family.name == "AF_INET"]  # fmt: skip
    for third in range(os.getpid() % 200, os.getpid() % 200 + 50):
        subnet = ipaddress.ip_network(f"10.213.{third % 250}.0/24")
        if not any(subnet.overlaps(net) for net in taken):
            return subnet
    raise RuntimeError("no free subnet in 10.213.0.0/16")


class TwoNodeCluster:
    """``with TwoNodeCluster() as cluster:`` a head and a worker node, each with ``cpus`` logical CPUs.

    ``node_env`` is set for the nodes' processes (the Ray workers inherit it), as a node's image would.
    """

    def __init__(self, cpus: int = 2, node_env: dict[str, str] | None = None) -> None:
        tag = os.getpid()
        self.names = {"head": f"ldhead{tag}", "worker": f"ldwork{tag}"}
        self.bridge = f"ldbr{tag}"
        subnet = list(_free_subnet().hosts())
        self.ips = {"head": str(subnet[0]), "worker": str(subnet[1]), "bridge": str(subnet[-1])}
        self.address = f"{self.ips['head']}:{PORT}"
        self.cpus = cpus
        self.node_env = node_env or {}  # what the nodes' image would set (PYTHONPATH), for their workers
        self.temp = Path(tempfile.mkdtemp(prefix="ldray", dir="/tmp"))  # short: Ray's socket paths have a limit

    def __enter__(self) -> TwoNodeCluster:
        try:
            self._network()
            self.ray_start("head", "--head", "--port", str(PORT), "--include-dashboard=false")
            self.ray_start("worker", "--address", self.address)
            self.wait_for_nodes(2)
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        for node in self.names:
            self.kill(node)
        for name in self.names.values():
            subprocess.run(["ip", "netns", "del", name], capture_output=True)
        subprocess.run(["ip", "link", "del", self.bridge], capture_output=True)
        deadline = time.monotonic() + 30  # a namespace goes once its last process has
        while self._links() and time.monotonic() < deadline:
            time.sleep(0.5)
        shutil.rmtree(self.temp, ignore_errors=True)

    def _network(self) -> None:
        _sh("ip", "link", "add", self.bridge, "type", "bridge")
        _sh("ip", "addr", "add", f"{self.ips['bridge']}/24", "dev", self.bridge)
        _sh("ip", "link", "set", self.bridge, "up")
        for node, name in self.names.items():
            inside, outside = f"{name[:2]}v{node[0]}{os.getpid()}", f"{name[:2]}p{node[0]}{os.getpid()}"
            _sh("ip", "netns", "add", name)
            _sh("ip", "link", "add", inside, "type", "veth", "peer", "name", outside)
            _sh("ip", "link", "set", inside, "netns", name)
            _sh("ip", "link", "set", outside, "master", self.bridge)
            _sh("ip", "link", "set", outside, "up")
            _sh("ip", "netns", "exec", name, "ip", "link", "set", "lo", "up")
            _sh("ip", "netns", "exec", name, "ip", "addr", "add", f"{self.ips[node]}/24", "dev", inside)
            _sh("ip", "netns", "exec", name, "ip", "link", "set", inside, "up")

    def _links(self) -> list[str]:
        return [n for n in psutil.net_if_addrs() if n.startswith("ld") and n.endswith(str(os.getpid()))]

    def command(self, node: str, *args: str) -> list[str]:
        """``args`` run inside ``node``'s namespace."""
        return ["ip", "netns", "exec", self.names[node], "env", *(f"{k}={v}" for k, v in RAY_ENV.items()), *args]

    def ray_start(self, node: str, *args: str) -> None:
        """``ray start`` on ``node`` (a node that was stopped joins again as a new one)."""
        settings = [f"{k}={v}" for k, v in self.node_env.items()]
        done = subprocess.run(
            self.command(node, "env", *settings, RAY, "start", "--node-ip-address", self.ips[node], "--num-cpus",
                         str(self.cpus), "--temp-dir", str(self.temp / node), "--disable-usage-stats",
                         "--metrics-export-port", str(METRICS_PORT), *args),
            capture_output=True, text=True, timeout=START_TIMEOUT_S,
        )  # fmt: skip
        if done.returncode != 0:
            raise RuntimeError(f"ray start on the {node} node failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")

    def alive_nodes(self) -> int:
        done = subprocess.run(
            self.command("head", sys.executable, "-c", f"import ray; ray.init(address={self.address!r}, "
                         "log_to_driver=False); print(sum(n['Alive'] for n in ray.nodes()))"),
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        return int(done.stdout.split()[-1]) if done.returncode == 0 and done.stdout.split() else 0

    def wait_for_nodes(self, count: int, timeout: float = START_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout
        while self.alive_nodes() != count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"the cluster did not have {count} alive nodes within {timeout} s")
            time.sleep(1)

    def processes(self, node: str, containing: str = "") -> list[psutil.Process]:
        """The processes in ``node``'s namespace whose command line contains ``containing``."""
        pids = subprocess.run(["ip", "netns", "pids", self.names[node]], capture_output=True, text=True).stdout
        found = []
        for pid in map(int, pids.split()):
            with contextlib.suppress(psutil.NoSuchProcess, psutil.ZombieProcess):
                process = psutil.Process(pid)
                if containing in " ".join(process.cmdline()):
                    found.append(process)
        return found

    def kill(self, node: str) -> int:
        """SIGKILL every process in ``node``'s namespace (a lost machine); returns how many there were."""
        victims = self.processes(node)
        for process in victims:
            with contextlib.suppress(psutil.NoSuchProcess):
                process.send_signal(signal.SIGKILL)
        psutil.wait_procs(victims, timeout=30)
        return len(victims)
