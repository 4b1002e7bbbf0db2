"""Prometheus metrics of a running producer (``producer.metrics_port``; ``metrics`` extra).

Nothing is counted for Prometheus on the hot path: a collector reads the producer's own
counters (`FeedCounters`, the outbox depth, the `LatencyHistogram`) when scraped, on
the HTTP server's thread. ``prometheus_client`` is imported only when the server starts,
and the metrics live in a registry of their own (no process-wide default registry).

Per feed (labels ``exchange``, ``kind``, ``feed``):
``marketbus_producer_messages_published_total``, ``..._messages_dropped_total``,
``..._errors_total``, ``..._reconnects_total``, ``..._last_message_age_seconds``,
``..._feed_connected`` (1 while data arrives), ``..._candle_corrections_total``
(closed candles re-sent with the exchange's REST values). Per process: ``..._queue_depth``,
``..._publish_latency_seconds`` (histogram: ccxt handed the data over -> Redis
acknowledged it), ``..._lease_held`` (1 while this producer may write).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from marketbus.producer.stats import FeedCounters, LatencyHistogram
from marketbus.shared.errors import ConfigError
from marketbus.shared.names import STATUS, Feed, exchange_of, is_status_name, timeframe_of

PREFIX = "marketbus_producer_"


@dataclass(frozen=True, slots=True)
class MetricsSource:
    """What the collector reads, as callables into the running producer."""

    feeds: Callable[[], Mapping[str, FeedCounters]]
    queue_depth: Callable[[], int]
    latency: Callable[[], LatencyHistogram | None]
    lease_held: Callable[[], bool]


class _Collector:
    def __init__(self, source: MetricsSource) -> None:
        self.source = source
        self._labels: dict[str, list[str]] = {}

    def _labels_of(self, name: str) -> list[str]:
        labels = self._labels.get(name)
        if labels is None:
            kind = STATUS if is_status_name(name) else Feed.parse(name).kind
            labels = self._labels[name] = [exchange_of(name), kind, name]
        return labels

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import (
            CounterMetricFamily,
            GaugeMetricFamily,
            HistogramMetricFamily,
        )

        labels = ["exchange", "kind", "feed"]
        published = CounterMetricFamily(
            PREFIX + "messages_published", "Messages written to Redis", labels=labels
        )
        dropped = CounterMetricFamily(
            PREFIX + "messages_dropped",
            "Messages dropped because the writer backlog was full (announced as gaps)",
            labels=labels,
        )
        errors = CounterMetricFamily(
            PREFIX + "errors", "Errors (exchange, data, Redis)", labels=labels
        )
        reconnects = CounterMetricFamily(
            PREFIX + "reconnects",
            "Failed watch attempts (each is followed by a retry)",
            labels=labels,
        )
        age = GaugeMetricFamily(
            PREFIX + "last_message_age_seconds",
            "Seconds since the feed's last message was written",
            labels=labels,
        )
        connected = GaugeMetricFamily(
            PREFIX + "feed_connected", "1 while the feed receives data", labels=labels
        )
        corrections = CounterMetricFamily(
            PREFIX + "candle_corrections",
            "Closed candles re-sent because the exchange's REST values differed",
            labels=labels,
        )
        now_ms = time.time_ns() // 1_000_000
        for name, c in list(self.source.feeds().items()):
            values = self._labels_of(name)
            published.add_metric(values, c.published)
            dropped.add_metric(values, c.dropped)
            errors.add_metric(values, c.errors)
            reconnects.add_metric(values, c.reconnects)
            if c.last_message_ms is not None:
                age.add_metric(values, max(0.0, (now_ms - c.last_message_ms) / 1000))
            if not is_status_name(name):
                connected.add_metric(values, 1.0 if c.state == "connected" else 0.0)
            if timeframe_of(values[1]) is not None:
                corrections.add_metric(values, c.corrections)
        yield from (published, dropped, errors, reconnects, age, connected, corrections)
        yield GaugeMetricFamily(
            PREFIX + "queue_depth", "Messages waiting for Redis", value=self.source.queue_depth()
        )
        yield GaugeMetricFamily(
            PREFIX + "lease_held",
            "1 while this producer holds its leases and may write",
            value=1.0 if self.source.lease_held() else 0.0,
        )
        histogram = self.source.latency()
        if histogram is not None:
            counts = list(histogram.counts)
            buckets: list[tuple[str, float]] = []
            total = 0
            for bound, n in zip(histogram.bounds, counts, strict=False):
                total += n
                buckets.append((repr(bound), total))
            buckets.append(("+Inf", total + counts[-1]))
            yield HistogramMetricFamily(
                PREFIX + "publish_latency_seconds",
                "From ccxt handing the data over to Redis acknowledging the write",
                buckets=buckets,
                sum_value=histogram.sum,
            )


class MetricsServer:
    """The HTTP endpoint (``/metrics``) on its own thread; `close` stops it."""

    def __init__(self, port: int, source: MetricsSource, addr: str = "127.0.0.1") -> None:
        try:
            from prometheus_client import CollectorRegistry, start_http_server
        except ImportError:
            raise ConfigError(
                "producer.metrics_port is set but prometheus_client is not installed "
                "(pip install 'marketbus[metrics]')"
            ) from None
        registry = CollectorRegistry(auto_describe=False)
        registry.register(_Collector(source))
        try:
            self._httpd, self._thread = start_http_server(port, addr=addr, registry=registry)
        except OSError as exc:
            raise ConfigError(
                f"producer.metrics_port {port} on metrics_host {addr!r}: cannot listen: {exc}"
            ) from None
        self.port: int = self._httpd.server_port

    @property
    def host(self) -> str:
        """The address the endpoint listens on (``metrics_host``)."""
        return str(self._httpd.server_address[0])

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        thread: threading.Thread = self._thread
        thread.join(timeout=5)
