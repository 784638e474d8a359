"""Reaching the real Redis, MariaDB, PostgreSQL and RabbitMQ of the test machine.

Locally a missing service skips the tests that need it, with a reason. In CI
(``CI=true`` or ``NOTIFY_EMERGENCY_REQUIRE_SERVICES=1``) it fails them instead.
"""

from __future__ import annotations

import os
import socket
import time
from typing import Callable, TypeVar

import pytest

REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
MARIADB_URL = os.environ.get("TEST_MARIADB_URL", "mysql+pymysql://root@127.0.0.1:3306/test")
POSTGRES_URL = os.environ.get("TEST_POSTGRES_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/test")

RABBITMQ_URL = os.environ.get("TEST_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672//")

T = TypeVar("T")


def services_required() -> bool:
    return os.environ.get("CI", "").lower() == "true" or os.environ.get("NOTIFY_EMERGENCY_REQUIRE_SERVICES") == "1"


def unavailable(what: str, why: object) -> None:
    message = f"{what} is not reachable ({why}); start it (see .ci/run) to run this test"
    if services_required():
        pytest.fail(message)
    pytest.skip(message)


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(predicate: Callable[[], T], timeout: float = 5.0, interval: float = 0.02,
               message: str = "condition") -> T:
    """Poll ``predicate`` until it returns something truthy, or fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    last: T = predicate()
    while not last:
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message}")
        time.sleep(interval)
        last = predicate()
    return last
