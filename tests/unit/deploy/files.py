"""What the shipped deploy/ files say, read the way Redis, systemd and compose read them.

Shared by the static checks (tests/unit/deploy) and the tests that run the files
against real servers (tests/integration/deploy), so both test the same shipped text.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import NamedTuple

REPO = Path(__file__).resolve().parents[3]
DEPLOY = REPO / "deploy"
DOCS = REPO / "docs" / "deployment.md"
ACL_FILE = DEPLOY / "users.acl"
REDIS_CONF = DEPLOY / "redis.conf"

PRODUCER = "marketbus-producer"
CONSUMER = "marketbus-consumer"
OPS = "marketbus-ops"
ADMIN = "marketbus-admin"


class AclUser(NamedTuple):
    """One ``user NAME RULE...`` line of an ACL file."""

    name: str
    rules: list[str]


def acl_users(path: Path = ACL_FILE) -> dict[str, AclUser]:
    """The users of an ACL file by name (Redis allows no comments in it)."""
    users: dict[str, AclUser] = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        words = line.split()
        if not words:
            continue
        if words[0] != "user" or len(words) < 2:
            raise ValueError(f"{path}:{number}: not a 'user NAME rules...' line")
        users[words[1]] = AclUser(words[1], words[2:])
    return users


def password_for(user: str) -> str:
    """The password a test gives *user* instead of the CHANGE-ME placeholder."""
    return f"test-{user}-secret-7f3a"


def with_test_password(user: AclUser) -> list[str]:
    """*user*'s rules with every ``>password`` / ``#hash`` replaced by its test password."""
    rules = [rule for rule in user.rules if not rule.startswith((">", "#"))]
    if len(rules) == len(user.rules):
        return rules
    return [*rules, f">{password_for(user.name)}"]


def acl_file_for_tests(tmp_path: Path) -> Path:
    """A copy of users.acl with test passwords, for ``redis-server --aclfile``."""
    path = tmp_path / "users.acl"
    lines = [" ".join(["user", u.name, *with_test_password(u)]) for u in acl_users().values()]
    path.write_text("\n".join(lines) + "\n")
    return path


def env_file(path: Path) -> dict[str, str]:
    """``KEY=VALUE`` lines of an env file (as compose env_file and systemd read them)."""
    values: dict[str, str] = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            values[key.strip()] = value.strip()
    return values


def conf_directives(path: Path = REDIS_CONF) -> list[list[str]]:
    """The directives of a redis.conf, each as its words (comments dropped)."""
    return [
        line.split()
        for line in path.read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]


def conf_value(name: str, first_arg: str | None = None) -> list[str]:
    """The arguments of directive *name* (whose first argument is *first_arg*, if given)."""
    for words in conf_directives():
        if words[0] == name and (first_arg is None or words[1] == first_arg):
            return words[1:]
    raise KeyError(name)


_DOC_PUBSUB = re.compile(r"^ *client-output-buffer-limit pubsub (\S+) (\S+) (\d+)$", re.M)


def documented_pubsub_limit() -> tuple[str, str, str]:
    """The ``client-output-buffer-limit pubsub`` that docs/deployment.md states."""
    found = _DOC_PUBSUB.findall(DOCS.read_text())
    if len(found) != 1:
        raise AssertionError(f"docs/deployment.md states the pubsub limit {len(found)} times")
    hard, soft, seconds = found[0]
    return hard, soft, seconds


def size_bytes(value: str) -> int:
    """Redis memory units: ``256mb`` -> 268435456 (kb/mb/gb are powers of 1024)."""
    units = {"kb": 1024, "mb": 1024**2, "gb": 1024**3, "k": 1000, "m": 1000**2, "g": 1000**3}
    match = re.fullmatch(r"(\d+)([a-z]*)", value.lower())
    if match is None or match.group(2) not in {"", *units}:
        raise ValueError(f"not a Redis size: {value!r}")
    return int(match.group(1)) * units.get(match.group(2), 1)
