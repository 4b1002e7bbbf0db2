"""A private redis-server on a free loopback port, for `marketbus demo` and the tests.

Neither ever touches a shared Redis on 6379. The server can be killed and restarted on
the same port (fault tests). `FakeRedisTcp` is the demo's fallback where no redis-server
binary is installed; `fakeredis_unusable` says why it cannot be (too old, or no Lua).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import re
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import Final


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class RedisProcess:
    """One redis-server child process; `start` waits until it answers PING."""

    def __init__(
        self, workdir: Path, port: int | None = None, extra_args: list[str] | None = None
    ) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise FileNotFoundError("redis-server is not on PATH (apt-get install redis-server)")
        self.binary = binary
        self.workdir = workdir
        self.port = port or free_port()
        self.extra_args = extra_args or []
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout_s: float = 10.0) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        options = {
            "port": str(self.port),
            "bind": "127.0.0.1",
            "save": "",
            "appendonly": "no",
            "dir": str(self.workdir),
            "logfile": str(self.workdir / "redis.log"),
        }
        args = [self.binary]
        for name, value in options.items():
            args += [f"--{name}", value]
        args += self.extra_args
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                log = (self.workdir / "redis.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"redis-server exited with {self.proc.returncode}: {log}")
            if self.ping():
                return
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"redis-server on port {self.port} did not answer within {timeout_s}s")

    def ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(64).startswith((b"+PONG", b"-NOAUTH"))
        except OSError:
            return False

    def kill(self) -> None:
        """SIGKILL: the abrupt outage a fault test wants."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)

    def restart(self) -> None:
        self.kill()
        self.start()

    def __enter__(self) -> RedisProcess:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


FAKEREDIS_MIN_VERSION: Final = (2, 41)
"""The first fakeredis whose TCP server answers an error reply and keeps serving the
connection. Older ones close it, and redis-py's first EVALSHA of a script always meets
NOSCRIPT (then loads the script), so the producer could never take its lease."""


def fakeredis_unusable() -> str | None:
    """Why fakeredis cannot stand in for redis-server on this machine, None if it can.

    The producer's lease is two Lua scripts (EVALSHA), which fakeredis runs only with
    lupa installed (``fakeredis[lua]``).
    """
    try:
        version = importlib.metadata.version("fakeredis")
    except importlib.metadata.PackageNotFoundError:
        return "fakeredis is not installed"
    release = re.match(r"(\d+)\.(\d+)", version)
    if release and (int(release[1]), int(release[2])) < FAKEREDIS_MIN_VERSION:
        wanted = ".".join(map(str, FAKEREDIS_MIN_VERSION))
        return f"fakeredis {version} is too old (its TCP server needs {wanted} or newer)"
    if importlib.util.find_spec("lupa") is None:
        return "fakeredis has no Lua (lupa is not installed) for the producer's lease scripts"
    return None


class FakeRedisTcp:
    """fakeredis's TCP server in a thread: enough Redis for the demo, not for production.

    Check `fakeredis_unusable` first: without Lua the producer cannot take its lease.
    """

    def __init__(self, port: int | None = None) -> None:
        from fakeredis import TcpFakeServer

        self.port = port or free_port()
        self._server = TcpFakeServer(("127.0.0.1", self.port), server_type="redis")
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="fakeredis", daemon=True
        )

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def __enter__(self) -> FakeRedisTcp:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
