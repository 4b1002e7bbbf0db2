"""Every TOML example in the docs is a valid producer config (or part of one)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from marketbus.producer.config import ProducerConfig
from marketbus.shared.config import build_config

DOCS = Path(__file__).resolve().parents[2] / "docs"
BLOCKS = [
    pytest.param(block, id=f"{path.name}#{i}")
    for path in sorted(DOCS.glob("*.md"))
    for i, block in enumerate(re.findall(r"```toml\n(.*?)```", path.read_text(), flags=re.S))
]


@pytest.mark.parametrize("block", BLOCKS)
def test_toml_example_validates(block: str) -> None:
    data = tomllib.loads(block)
    data.setdefault("exchanges", [{"id": "binance", "symbols": ["BTC/USDT"]}])
    config = build_config(ProducerConfig, data, environ={})
    assert config.exchanges


def test_there_are_examples_for_the_four_seed_exchanges() -> None:
    text = (DOCS / "configuration.md").read_text()
    for exchange in ("binance", "okx", "kucoinfutures", "bingx"):
        assert f'id = "{exchange}"' in text
