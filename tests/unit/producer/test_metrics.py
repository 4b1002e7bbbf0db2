"""Where the producer's Prometheus endpoint listens (no producer, no Redis)."""

from __future__ import annotations

import socket

import pytest

from marketbus.producer.config import ProducerSettings
from marketbus.producer.metrics import MetricsServer, MetricsSource
from marketbus.shared.errors import ConfigError

SOURCE = MetricsSource(
    feeds=dict, queue_depth=lambda: 0, latency=lambda: None, lease_held=lambda: True
)


def test_metrics_listen_on_loopback_unless_configured_otherwise() -> None:
    server = MetricsServer(0, SOURCE, ProducerSettings().metrics_host)
    try:
        assert server.host == "127.0.0.1"
    finally:
        server.close()


def test_a_port_in_use_is_a_config_error_naming_port_and_host() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ConfigError, match=f"metrics_port {port} on metrics_host '127.0.0.1'"):
            MetricsServer(port, SOURCE, "127.0.0.1")
