"""Make sure a ccxt exchange aimed at the simulator can reach nothing else.

A venue overrides the URLs it serves; every other URL ccxt knows for that exchange
(margin, options, private APIs...) is pointed at an unrouted loopback path, where the
simulator answers 404. A forgotten endpoint then fails loudly instead of calling a
real exchange.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def _dead_urls(urls: Mapping[str, Any], http_base: str, ws_base: str, path: str) -> dict[str, Any]:
    dead: dict[str, Any] = {}
    for key, value in urls.items():
        if isinstance(value, Mapping):
            dead[key] = _dead_urls(value, http_base, ws_base, f"{path}/{key}")
        elif isinstance(value, str):
            base = ws_base if value.startswith(("ws://", "wss://")) else http_base
            dead[key] = f"{base}{path}/{key}"
    return dead


def _merge(base: dict[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def confine_to_loopback(
    exchange_id: str, options: Mapping[str, Any], http_base: str, ws_base: str
) -> dict[str, Any]:
    """`options` with every `urls['api']` entry ccxt has for `exchange_id` that
    `options` does not set replaced by an unrouted loopback URL."""
    import ccxt.pro

    exchange = getattr(ccxt.pro, exchange_id)()
    api = exchange.describe()["urls"]["api"]
    dead = (
        _dead_urls(api, http_base, ws_base, f"/{exchange_id}/unrouted")
        if isinstance(api, Mapping)
        else {}
    )
    return _merge({"urls": {"api": dead}}, options)
