"""`marketbus record` / `replay` find their Redis URL as tail and status do:
``--redis``, else ``MARKETBUS_REDIS_URL`` / ``MARKETBUS_REDIS_URL_FILE`` (record: else the
config file's), else the default. The archive machinery is replaced by fakes: no I/O."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("pyarrow")

from marketbus import cli
from marketbus.shared.config import (
    DEFAULT_REDIS_URL,
    REDIS_URL_ENV,
    REDIS_URL_FILE_ENV,
    RedisConfig,
)

# the modules, not the package's functions of the same names
recorder_module = importlib.import_module("marketbus.archive.recorder")
replay_module = importlib.import_module("marketbus.archive.replay")
ENV_URL = "redis://:secret@env-host:6379/0"


@pytest.fixture
def used(monkeypatch: pytest.MonkeyPatch) -> list[RedisConfig]:
    """The RedisConfig each command ran with (recorder and replay are fakes)."""
    seen: list[RedisConfig] = []

    class FakeRecorder:
        def __init__(self, redis: RedisConfig, options: Any) -> None:
            seen.append(redis)

        def stop(self) -> None:
            pass

        async def run(self, *, until_idle: bool) -> str:
            return "nothing"

    class FakeStats:
        messages = feeds = 0
        seconds = 0.0

    async def fake_replay(redis: RedisConfig, options: Any, *, replace: bool) -> FakeStats:
        seen.append(redis)
        return FakeStats()

    monkeypatch.setattr(recorder_module, "Recorder", FakeRecorder)
    monkeypatch.setattr(replay_module, "replay", fake_replay)
    monkeypatch.delenv(REDIS_URL_ENV, raising=False)
    monkeypatch.delenv(REDIS_URL_FILE_ENV, raising=False)
    return seen


def record(tmp_path: Path, *extra: str) -> list[str]:
    return ["record", "--feeds", "md:binance:*", "--out", str(tmp_path / "arc"), *extra]


def replay(tmp_path: Path, *extra: str) -> list[str]:
    return ["replay", "--from", str(tmp_path), "--namespace", "bt", "--fast", *extra]


@pytest.mark.parametrize("command", [record, replay])
def test_the_url_comes_from_the_environment_or_the_default(
    command: Any, used: list[RedisConfig], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert cli.main(command(tmp_path)) == 0
    monkeypatch.setenv(REDIS_URL_ENV, ENV_URL)
    assert cli.main(command(tmp_path)) == 0
    assert cli.main(command(tmp_path, "--redis", "redis://flag:6379/1")) == 0
    monkeypatch.delenv(REDIS_URL_ENV)
    secret = tmp_path / "url"
    secret.write_text("redis://file-host:6379/2\n")
    monkeypatch.setenv(REDIS_URL_FILE_ENV, str(secret))
    assert cli.main(command(tmp_path)) == 0
    assert [r.url for r in used] == [
        DEFAULT_REDIS_URL,
        ENV_URL,
        "redis://flag:6379/1",
        "redis://file-host:6379/2",
    ]


def test_record_uses_the_config_files_redis_unless_the_flag_or_environment_says(
    used: list[RedisConfig], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "record.toml"
    config.write_text(
        '[redis]\nurl = "redis://from-file:6379/3"\n'
        f'[record]\nfeeds = ["md:binance:*"]\nout = "{tmp_path / "arc"}"\n'
    )
    assert cli.main(["record", "--config", str(config)]) == 0
    monkeypatch.setenv(REDIS_URL_ENV, ENV_URL)
    assert cli.main(["record", "--config", str(config)]) == 0
    assert [r.url for r in used] == ["redis://from-file:6379/3", ENV_URL]


def test_a_bad_url_in_the_environment_is_a_configuration_error(
    used: list[RedisConfig], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(REDIS_URL_ENV, "http://not-redis")
    assert cli.main(replay(tmp_path)) == 2
    assert used == []
