"""The README's code stays valid: Python blocks compile, TOML blocks validate, and the
two newcomer commands are the ones CI runs."""

from __future__ import annotations

import re
import textwrap
import tomllib
from pathlib import Path

from marketbus.producer.config import ProducerConfig
from marketbus.shared.config import build_config

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()


def blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README, flags=re.S)


def test_python_blocks_compile() -> None:
    assert blocks("python")
    for block in blocks("python"):
        # top-level `async with` is how users paste it into an async function
        compile("async def _example():\n" + textwrap.indent(block, "    "), "README", "exec")


def test_toml_blocks_are_valid_producer_configs() -> None:
    assert blocks("toml")
    for block in blocks("toml"):
        build_config(ProducerConfig, tomllib.loads(block), environ={})


def test_two_newcomer_commands_and_ci_runs_the_test_one() -> None:
    section = README.split("## Two commands", 1)[1].split("\n## ", 1)[0]
    commands = [line.split("#")[0].strip() for line in blocks("bash")[0].splitlines() if line]
    assert commands == ["make demo", "make test"]
    assert "make demo" in section
    assert "make test" in (ROOT / ".ci" / "run").read_text()
