"""`redact`: the only form of a Redis URL marketbus prints. (Every URL form an operator
may write: tests/unit/deploy/test_credentials.py.)"""

from __future__ import annotations

from marketbus.shared.urls import redact


def test_redact_hides_only_the_password() -> None:
    assert redact("redis://alice:s3cret@h:6379/1") == "redis://alice:***@h:6379/1"
    assert redact("rediss://:s3cret@h/0") == "rediss://:***@h/0"
    assert redact("redis://h:6379/0") == "redis://h:6379/0"


def test_redact_masks_a_password_query_parameter_and_unparseable_urls() -> None:
    assert redact("redis://h/0?password=s3cret&db=1") == "redis://h/0?password=***&db=1"
    assert redact("redis://u:s3cret@h:notaport/0") == "redis://<unparseable>"
