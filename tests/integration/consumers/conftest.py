"""Fixtures of the consumer integration tests."""

from __future__ import annotations

import pytest

from marketbus.consumers.options import TRANSPORTS, TransportKind
from tests.integration.deploy.test_tls import pki, tls_server

__all__ = ["pki", "tls_server", "transport"]  # the TLS server of the deploy tests, reused


@pytest.fixture(params=TRANSPORTS)
def transport(request: pytest.FixtureRequest) -> TransportKind:
    """Each pub/sub client of a single-server `Subscriber`: the test runs once per kind."""
    kind: TransportKind = request.param
    return kind
