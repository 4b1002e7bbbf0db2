"""Who can reach Redis: deploy/redis.conf listens on loopback only, in protected mode,
unless told otherwise; the compose service tells it otherwise (the other containers
must reach it) on its command line, and access stays ACL-only. (The same files on a
real redis-server: tests/integration/deploy/test_redis_conf_binding.py.)"""

from __future__ import annotations

from typing import Any

import yaml

from tests.unit.deploy.files import DEPLOY, REDIS_CONF, acl_users, conf_value

LOOPBACK = {"127.0.0.1", "-127.0.0.1", "::1", "-::1"}


def compose_redis_command() -> list[str]:
    """The ``command`` of the compose redis service."""
    services: dict[str, Any] = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())[
        "services"
    ]
    command: list[str] = services["redis"]["command"]
    return command


def command_directives(command: list[str]) -> dict[str, list[str]]:
    """``--name arg...`` options of a redis-server command line, as redis-server reads them."""
    directives: dict[str, list[str]] = {}
    name = None
    for word in command[2:]:
        if word.startswith("--"):
            name = word[2:]
            directives[name] = []
        elif name is not None:
            directives[name].append(word)
        else:
            raise AssertionError(f"{word!r} follows the config file but is no --option")
    return directives


def test_redis_conf_listens_on_loopback_in_protected_mode_by_default() -> None:
    assert conf_value("bind") == ["127.0.0.1", "-::1"]
    assert conf_value("protected-mode") == ["yes"]


def test_redis_conf_documents_how_to_open_it() -> None:
    lines = [line.strip() for line in REDIS_CONF.read_text().splitlines()]
    assert "# bind 0.0.0.0 -::*" in lines


def test_compose_redis_opens_the_bind_on_its_command_line_only() -> None:
    command = compose_redis_command()
    assert command[:2] == ["redis-server", "/usr/local/etc/redis/redis.conf"]
    directives = command_directives(command)
    assert set(directives) == {"bind"}, "only the bind differs from the shipped redis.conf"
    assert directives["bind"] and not set(directives["bind"]) & LOOPBACK


def test_access_stays_acl_only_anonymous_clients_have_no_user() -> None:
    """Protected mode is moot once the default user is off with no ``nopass``, which is
    what makes opening the bind in compose safe."""
    default = acl_users()["default"].rules
    assert default[0] == "off"
    assert "nopass" not in default and not [r for r in default if r.startswith((">", "#"))]
