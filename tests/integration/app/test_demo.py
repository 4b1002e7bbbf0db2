"""`marketbus demo` as a user runs it: a real process that leaves a SPEC-conformant bus.

The README's redis-cli commands are executed against what the demo wrote, so the
README cannot rot. On a machine without redis-server the demo runs on fakeredis, and a
failure ends in one line and exit 1, never a traceback.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from marketbus.shared.names import Feed
from tests.support.redis_process import RedisProcess

ROOT = Path(__file__).resolve().parents[3]
SPEC_COMMON = {"type", "exchange", "symbol", "run", "seq", "ts_ms", "recv_ns"}
SPEC_FIELDS = {
    "ohlcv": {"timeframe", "open", "high", "low", "close", "volume", "closed"},
    "ticker": {
        "bid",
        "bid_size",
        "ask",
        "ask_size",
        "last",
        "open",
        "high",
        "low",
        "base_volume",
        "quote_volume",
        "change_pct",
        "mark",
        "index",
    },
    "status": {"event", "feed", "detail"},
}
DEMO = [sys.executable, "-m", "marketbus.cli", "demo"]


def redis_cli(server: RedisProcess, *args: str) -> str:
    result = subprocess.run(
        ["redis-cli", "-p", str(server.port), "--no-raw", *args],
        capture_output=True,
        text=True,
        timeout=10,
        check=True,
    )
    return result.stdout


def redis_cli_raw(server: RedisProcess, *args: str) -> list[str]:
    result = subprocess.run(
        ["redis-cli", "-p", str(server.port), "--raw", *args],
        capture_output=True,
        text=True,
        timeout=10,
        check=True,
    )
    return result.stdout.splitlines()


@pytest.fixture(scope="module")
def demo_bus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisProcess]:
    """A private redis-server after `marketbus demo --duration 6 --redis URL` ran on it."""
    server = RedisProcess(tmp_path_factory.mktemp("demo-redis"))
    server.start()
    result = subprocess.run(
        [sys.executable, "-m", "marketbus.cli", "demo", "--duration", "6", "--redis", server.url],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "BTC/USDT" in result.stdout
    yield server
    server.stop()


def test_demo_exits_0_and_fills_catalog_and_streams(demo_bus: RedisProcess) -> None:
    catalog = redis_cli_raw(demo_bus, "HGETALL", "md:feeds")
    entries = dict(zip(catalog[::2], catalog[1::2], strict=True))
    assert "md:binance:ohlcv.1s:BTC/USDT" in entries
    for name, raw in entries.items():
        feed = Feed.parse(name)
        info = json.loads(raw)
        assert info["exchange"] == feed.exchange == "binance"
        assert info["symbol"] == feed.symbol
        assert info["kind"] == feed.kind
        assert info["timeframe"] == feed.timeframe
        assert {"run", "stream_maxlen", "updated_ms"} <= info.keys()


def test_stream_payloads_read_back_with_redis_cli_are_spec_json(demo_bus: RedisProcess) -> None:
    lines = redis_cli_raw(demo_bus, "XREVRANGE", "md:binance:ohlcv.1s:BTC/USDT", "+", "-")
    # --raw prints id, field, value per entry
    assert len(lines) >= 6, lines
    ids, fields, payloads = lines[0::3], lines[1::3], lines[2::3]
    assert set(fields) == {"d"}
    seen_seqs = []
    for entry_id, payload in zip(ids, payloads, strict=True):
        message = json.loads(payload)
        assert message.keys() == SPEC_COMMON | SPEC_FIELDS["ohlcv"]
        assert message["type"] == "ohlcv" and message["closed"] is True
        assert entry_id == f"{message['run']}-{message['seq']}"
        seen_seqs.append(message["seq"])
    assert seen_seqs == sorted(seen_seqs, reverse=True)
    ticker = json.loads(
        redis_cli_raw(demo_bus, "XREVRANGE", "md:binance:ticker:BTC/USDT", "+", "-", "COUNT", "1")[
            2
        ]
    )
    assert ticker.keys() == SPEC_COMMON | SPEC_FIELDS["ticker"]
    status = redis_cli_raw(demo_bus, "XRANGE", "md:binance:status", "-", "+")
    events = [json.loads(p)["event"] for p in status[2::3]]
    assert events[0] == "started" and "stopped" in events


def test_readme_redis_cli_commands_run_against_the_demo_bus(demo_bus: RedisProcess) -> None:
    readme = (ROOT / "README.md").read_text()
    commands = re.findall(r"^redis-cli (.+?)\s*(?:#.*)?$", readme, flags=re.M)
    assert len(commands) >= 5
    for command in commands:
        args = shlex.split(command)
        if args[0] in ("SUBSCRIBE", "PSUBSCRIBE"):
            continue  # blocking; covered by `marketbus tail` tests
        if args[0] == "XRANGE":
            first = redis_cli_raw(demo_bus, "XRANGE", args[1], "-", "+", "COUNT", "1")
            args[2] = "(" + first[0] if first else "0"
        out = redis_cli(demo_bus, *args)
        assert "ERR" not in out, (command, out)
        assert out.strip() and out.strip() != "(empty array)", command


def path_without(program: str, links: Path) -> str:
    """A PATH that finds every program this one does except *program*: one directory of
    links to them (the first of a name wins, as in a PATH lookup)."""
    links.mkdir()
    for directory in os.environ.get("PATH", "").split(os.pathsep):
        try:
            entries = list(os.scandir(directory))
        except OSError:
            continue
        for entry in entries:
            link = links / entry.name
            if entry.name != program and not link.is_symlink():
                link.symlink_to(entry.path)
    return str(links)


def last_screen(stdout: str) -> str:
    screens = stdout.split("marketbus demo: ")
    assert len(screens) > 2, stdout[-3000:]  # the first is the lines before any screen
    return screens[-1]


def test_demo_without_redis_server_runs_on_fakeredis_and_shows_live_data(
    tmp_path: Path,
) -> None:
    path = path_without("redis-server", tmp_path / "bin")
    assert shutil.which("redis-server", path=path) is None
    result = subprocess.run(
        [*DEMO, "--duration", "8"],
        env={**os.environ, "PATH": path},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    assert "redis-server not found, using fakeredis" in result.stdout
    screen = last_screen(result.stdout)
    rows = {line.split()[0]: line for line in screen.splitlines() if line.strip()}
    for symbol in ("BTC/USDT", "ETH/USDT", "SOL/USDT"):
        row = rows.get(symbol, "")
        assert re.search(r" o=\S+ h=\S+ l=\S+ c=\S+ ", row), screen  # a closed candle
        assert re.search(r" bid \S+ ask \S+ last \S+ ", row), screen  # a ticker
        assert int(row.split()[-1]) > 0, screen  # trades
    applied = re.search(r"consumer: applied (\d+)", screen)
    assert applied and int(applied[1]) > 0, screen


def test_demo_without_lua_for_fakeredis_says_what_to_install(tmp_path: Path) -> None:
    path = path_without("redis-server", tmp_path / "bin")
    hide_lupa = "import sys; sys.modules['lupa'] = None; from marketbus.cli import main; "
    result = subprocess.run(
        [sys.executable, "-c", hide_lupa + "sys.exit(main(['demo', '--duration', '5']))"],
        env={**os.environ, "PATH": path},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    assert result.stderr.strip().splitlines()[-1] == (
        "marketbus: redis-server is not installed and fakeredis has no Lua (lupa is not "
        "installed) for the producer's lease scripts: install redis-server (apt-get install "
        "redis-server) or pip install 'marketbus[demo]'"
    )


def test_demo_stopped_by_a_redis_error_ends_in_one_line_and_exit_1(tmp_path: Path) -> None:
    """A Redis without EVALSHA refuses the lease script, as fakeredis without Lua did."""
    with RedisProcess(tmp_path, extra_args=["--rename-command", "EVALSHA", ""]) as server:
        result = subprocess.run(
            [*DEMO, "--duration", "5", "--redis", server.url],
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert result.returncode == 1, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    last_line = result.stderr.strip().splitlines()[-1]
    assert last_line.startswith("marketbus: the demo stopped: ResponseError: unknown command"), (
        last_line
    )
    assert "EVALSHA" in last_line
