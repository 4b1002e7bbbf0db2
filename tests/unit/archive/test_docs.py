"""The recorder's config examples in docs/recording.md validate as a `[record]` file."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from marketbus.archive.options import RecordFile
from marketbus.shared.config import build_config

DOC = Path(__file__).resolve().parents[3] / "docs" / "recording.md"


def test_record_config_examples_validate() -> None:
    blocks = re.findall(r"```toml record\n(.*?)```", DOC.read_text(), flags=re.S)
    assert blocks
    for block in blocks:
        config = build_config(RecordFile, tomllib.loads(block), environ={})
        assert config.record.feeds and config.record.out
