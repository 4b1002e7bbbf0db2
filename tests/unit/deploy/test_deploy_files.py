"""Static checks of deploy/: the files parse, and every file, command and config key
they reference exists. (No docker engine or systemd runs here; what runs is tested in
tests/integration/deploy.)"""

from __future__ import annotations

import re
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from marketbus.cli import build_parser
from marketbus.producer.config import ProducerConfig, load_producer_config
from marketbus.shared.config import build_config
from tests.unit.deploy.files import (
    ACL_FILE,
    ADMIN,
    CONSUMER,
    DEPLOY,
    OPS,
    PRODUCER,
    REDIS_CONF,
    REPO,
    acl_users,
    conf_value,
    env_file,
)

COMPOSE = DEPLOY / "docker-compose.yml"
UNIT = DEPLOY / "marketbus-producer@.service"
DOCKERFILE = DEPLOY / "Dockerfile"
PRODUCER_TOML = DEPLOY / "producer.toml"


def _compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return data


def _services() -> dict[str, dict[str, Any]]:
    services: dict[str, dict[str, Any]] = _compose()["services"]
    return services


def _mounts(service: dict[str, Any]) -> dict[str, Path]:
    """Container path -> host path of a service's bind mounts (named volumes left out)."""
    mounts: dict[str, Path] = {}
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        if source.startswith("."):
            mounts[target] = (DEPLOY / source).resolve()
    return mounts


# --- docker compose -------------------------------------------------------------------


def test_compose_has_redis_a_producer_per_exchange_and_a_strategy() -> None:
    assert set(_services()) == {"redis", "producer-binance", "producer-okx", "strategy"}
    assert set(_compose()["volumes"]) == {"redis-data"}


def test_compose_files_and_build_context_exist() -> None:
    for name, service in _services().items():
        for target, source in _mounts(service).items():
            assert source.is_file(), f"{name}: {source} (mounted at {target}) is missing"
        for env in service.get("env_file", []):
            assert (DEPLOY / env).is_file(), f"{name}: env_file {env} is missing"
        if "build" in service:
            context = (DEPLOY / service["build"]["context"]).resolve()
            assert context == REPO
            assert (context / service["build"]["dockerfile"]).resolve() == DOCKERFILE


def test_compose_redis_runs_the_shipped_conf_and_acl_file() -> None:
    redis = _services()["redis"]
    command = redis["command"]
    assert command[0] == "redis-server"
    mounts = _mounts(redis)
    assert mounts[command[1]] == REDIS_CONF
    assert mounts[conf_value("aclfile")[0]] == ACL_FILE
    assert any(v.endswith(f":{conf_value('dir')[0]}") for v in redis["volumes"])


def test_compose_producers_run_marketbus_produce_for_their_exchange() -> None:
    configured = {ex.id for ex in load_producer_config(PRODUCER_TOML, environ={}).exchanges}
    parser = build_parser()
    for name, service in _services().items():
        if not name.startswith("producer-"):
            continue
        args = parser.parse_args(service["command"])
        assert args.command == "produce"
        assert args.exchange == [name.removeprefix("producer-")]
        assert args.exchange[0] in configured
        assert _mounts(service)[args.config] == PRODUCER_TOML
        assert service["env_file"] == ["producer.env"]
        assert service["image"] == "marketbus:latest"
        assert service["depends_on"]["redis"]["condition"] == "service_healthy"


def test_compose_strategy_runs_the_example_shipped_in_the_image() -> None:
    strategy = _services()["strategy"]
    assert strategy["entrypoint"][0] == "python"
    copied = dict(_dockerfile_copies())
    assert strategy["entrypoint"][1] in copied.values()
    assert strategy["env_file"] == ["consumer.env"]


def test_env_files_are_valid_config_overrides_with_the_acl_users() -> None:
    users = acl_users()
    for env_name, user in (("producer.env", PRODUCER), ("consumer.env", CONSUMER)):
        environ = env_file(DEPLOY / env_name)
        config = build_config(
            ProducerConfig, tomllib.loads(PRODUCER_TOML.read_text()), environ=environ
        )
        url = config.redis.url
        password = f">{url.split('@')[0].rsplit(':', 1)[1]}"
        assert url.startswith(f"redis://{user}:")
        assert password in users[user].rules, f"{env_name} and users.acl disagree on {user}"


# --- producer config --------------------------------------------------------------------


def test_producer_toml_validates_and_has_no_credentials() -> None:
    config = load_producer_config(PRODUCER_TOML, environ={})
    assert [ex.id for ex in config.exchanges] == ["binance", "okx"]
    assert "@" not in config.redis.url
    assert config.redis.namespace == "md"


# --- Dockerfile -------------------------------------------------------------------------


def _dockerfile_instructions() -> list[tuple[str, str]]:
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    lines = [line.strip() for line in text.splitlines()]
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1])
        for line in lines
        if line and not line.startswith("#")
    ]


def _dockerfile_copies() -> list[tuple[str, str]]:
    copies = []
    for op, arg in _dockerfile_instructions():
        if op == "COPY":
            *sources, target = arg.split()
            copies += [(source, target) for source in sources]
    return copies


def test_dockerfile_builds_the_producer_extra_as_non_root() -> None:
    instructions = _dockerfile_instructions()
    assert instructions[0] == ("FROM", "python:3.11-slim")
    runs = " ".join(arg for op, arg in instructions if op == "RUN")
    assert "pip install '.[producer]'" in runs
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert "producer" in pyproject["project"]["optional-dependencies"]
    assert "marketbus" in pyproject["project"]["scripts"]
    users = [arg for op, arg in instructions if op == "USER"]
    assert users and not users[-1].startswith(("root", "0"))
    assert ("ENTRYPOINT", '["marketbus"]') in instructions


def test_dockerfile_copies_only_existing_files_the_dockerignore_lets_through() -> None:
    ignore = (DEPLOY / "Dockerfile.dockerignore").read_text().split()
    allowed = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    for source, _target in _dockerfile_copies():
        source_path = source.removeprefix("./")
        assert (REPO / source_path).exists(), f"COPY {source}: missing in the build context"
        assert source_path in allowed, f"COPY {source}: excluded by Dockerfile.dockerignore"
    toml_target = dict(_dockerfile_copies())["deploy/producer.toml"]
    assert toml_target == "/etc/marketbus/producer.toml"


# --- systemd ------------------------------------------------------------------------------


def _unit() -> dict[str, list[tuple[str, str]]]:
    """Sections of the unit file -> (key, value) pairs, keys repeated as systemd allows."""
    sections: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] = []
    for line in UNIT.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), [])
        else:
            key, sep, value = line.partition("=")
            assert sep, f"not key=value: {line!r}"
            current.append((key, value))
    return sections


def test_systemd_unit_runs_one_exchange_per_instance() -> None:
    service = dict(_unit()["Service"])
    assert service["ExecStart"] == (
        "/opt/marketbus/.venv/bin/marketbus produce --config /etc/marketbus/producer.toml "
        "--exchange %i"
    )
    args = build_parser().parse_args(service["ExecStart"].split()[1:])
    assert args.command == "produce"
    assert service["Restart"] == "always"
    assert service["User"] == "marketbus"
    assert service["EnvironmentFile"] == "/etc/marketbus/producer.env"
    stop_s = int(service["TimeoutStopSec"])
    assert stop_s > load_producer_config(PRODUCER_TOML, environ={}).producer.shutdown_timeout_s
    assert dict(_unit()["Install"])["WantedBy"] == "multi-user.target"


def test_systemd_unit_is_hardened() -> None:
    service = dict(_unit()["Service"])
    for key, value in {
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "PrivateDevices": "yes",
        "CapabilityBoundingSet": "",
        "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX",
    }.items():
        assert service[key] == value, key


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="needs systemd-analyze")
def test_systemd_analyze_verifies_an_instance(tmp_path: Path) -> None:
    """systemd itself parses the unit; ExecStart points at this venv's marketbus."""
    marketbus = Path(shutil.which("marketbus") or REPO / ".venv/bin/marketbus")
    if not marketbus.exists():
        pytest.skip("the marketbus console script is not installed")
    instance = tmp_path / "marketbus-producer@binance.service"
    instance.write_text(
        UNIT.read_text().replace("/opt/marketbus/.venv/bin/marketbus", str(marketbus))
    )
    result = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(instance)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    problems = [
        line
        for line in result.stderr.splitlines()
        if re.search(r"Unknown|Invalid|Failed|not executable|bad|unsafe", line, re.I)
    ]
    assert result.returncode == 0 and not problems, result.stderr


# --- redis.conf and users.acl (what can be read without a server) -------------------------


def test_redis_conf_uses_the_acl_file_and_snapshots_only() -> None:
    assert conf_value("aclfile") == ["/usr/local/etc/redis/users.acl"]
    assert conf_value("appendonly") == ["no"]
    assert conf_value("save") == ["300", "1"]
    assert conf_value("maxmemory-policy") == ["noeviction"]


def test_acl_file_has_the_bus_users_with_placeholder_passwords_only() -> None:
    users = acl_users()
    assert set(users) == {"default", PRODUCER, CONSUMER, OPS, ADMIN}
    assert users["default"].rules[0] == "off"
    for user in users.values():
        assert "nopass" not in user.rules
        for rule in user.rules:
            if rule.startswith(">"):
                assert rule.startswith(">CHANGE-ME-"), f"{user.name}: not a placeholder"


def test_consumer_rules_grant_no_write_command_and_read_only_keys() -> None:
    rules = acl_users()[CONSUMER].rules
    commands = {rule[1:] for rule in rules if rule.startswith("+")}
    assert not commands & {"publish", "spublish", "xadd", "hset", "set", "del", "eval", "@all"}
    assert "%R~md:*" in rules
    assert not [rule for rule in rules if rule.startswith("~")]
