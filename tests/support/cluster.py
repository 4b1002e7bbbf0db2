"""A real local 3-master Redis Cluster for tests, owned by the fixture that starts it.

The cluster is three private redis-server processes in cluster mode on free loopback
ports (client port and cluster-bus port both chosen free), joined with
``redis-cli --cluster create``; the fixture waits until every node reports
``cluster_state:ok`` and stops every process it started, even when setup fails.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

from tests.support.redis_process import RedisProcess, free_port

MASTERS = 3


def _cluster_info(port: int) -> str:
    """``CLUSTER INFO`` of the node on *port* as text ('' while it does not answer)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"CLUSTER INFO\r\n")
            return sock.recv(4096).decode(errors="replace")
    except OSError:
        return ""


class LocalCluster:
    """Three cluster-mode redis-servers joined into one cluster covering all 16384 slots."""

    def __init__(self, workdir: Path, extra_args: list[str] | None = None) -> None:
        self.nodes: list[RedisProcess] = []
        for i in range(MASTERS):
            args = [
                *("--cluster-enabled", "yes"),
                *("--cluster-config-file", "nodes.conf"),
                *("--cluster-port", str(free_port())),
                *("--cluster-node-timeout", "2000"),
                *(extra_args or []),
            ]
            self.nodes.append(RedisProcess(workdir / f"node-{i}", extra_args=args))

    @property
    def url(self) -> str:
        """A URL of one node: cluster clients discover the others from it."""
        return self.nodes[0].url

    def start(self, timeout_s: float = 15.0) -> None:
        try:
            for node in self.nodes:
                node.start()
            self._create(timeout_s)
        except BaseException:
            self.stop()
            raise

    def _create(self, timeout_s: float) -> None:
        redis_cli = shutil.which("redis-cli")
        if redis_cli is None:
            raise RuntimeError("redis-cli is not on PATH")
        addresses = [f"127.0.0.1:{node.port}" for node in self.nodes]
        result = subprocess.run(
            [redis_cli, "--cluster", "create", *addresses, "--cluster-yes"],
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(f"redis-cli --cluster create failed: {result.stdout}{result.stderr}")
        deadline = time.monotonic() + timeout_s
        while not all("cluster_state:ok" in _cluster_info(n.port) for n in self.nodes):
            if time.monotonic() > deadline:
                raise RuntimeError(f"cluster did not reach cluster_state:ok in {timeout_s}s")
            time.sleep(0.05)

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
