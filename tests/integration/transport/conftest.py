"""Fixtures for the fast transport: TLS material and redis-py clients on private servers."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis


class TlsFiles:
    """A throwaway CA and a server certificate for 127.0.0.1, plus a client certificate."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.ca = directory / "ca.crt"
        self.server_cert = directory / "server.crt"
        self.server_key = directory / "server.key"
        self.client_cert = directory / "client.crt"
        self.client_key = directory / "client.key"


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=30)


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not on PATH")
    files = TlsFiles(tmp_path_factory.mktemp("tls"))
    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2")
    ca = ("-keyout", "ca.key", "-out", "ca.crt", "-subj", "/CN=test-ca")
    _openssl("req", "-x509", *ec, *ca, cwd=files.dir)
    for name, extra in (
        ("server", ("-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost")),
        ("client", ()),
    ):
        signed_by_ca = ("-CA", "ca.crt", "-CAkey", "ca.key")
        output = ("-keyout", f"{name}.key", "-out", f"{name}.crt", "-subj", f"/CN={name}")
        _openssl("req", "-x509", *ec, *signed_by_ca, *output, *extra, cwd=files.dir)
    return files


@pytest.fixture
async def plain(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    """A redis-py client on the session server: the reference the transport is checked by."""
    client = aioredis.Redis.from_url(redis_url)
    yield client
    await client.aclose()
