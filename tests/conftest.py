"""Fixtures: apps built like the README says, on real databases and real Redis."""

from __future__ import annotations

import uuid
from typing import Any, Callable, Iterator

import pytest
import sqlalchemy as sa

from tests.support import outages, services
from tests.support.apps import SERVERS, build_example, drop_tables
from tests.support.browser import launch_chromium

DATABASES = {"sqlite": None, "mariadb": services.MARIADB_URL, "postgres": services.POSTGRES_URL}


def _check_database(url: str, name: str) -> None:
    engine = sa.create_engine(url, pool_pre_ping=True)
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    except Exception as exc:
        services.unavailable(name, exc)
    finally:
        engine.dispose()


@pytest.fixture
def redis_url() -> str:
    import redis

    try:
        redis.Redis.from_url(services.REDIS_URL, socket_connect_timeout=1).ping()
    except Exception as exc:
        services.unavailable("Redis on 127.0.0.1:6379", exc)
    return services.REDIS_URL


@pytest.fixture
def redis_prefix(redis_url: str) -> Iterator[str]:
    """A key prefix of our own, removed afterwards."""
    import redis

    prefix = f"ne-test-{uuid.uuid4().hex[:10]}"
    yield prefix
    client = redis.Redis.from_url(redis_url)
    keys = list(client.scan_iter(f"{prefix}:*"))
    if keys:
        client.delete(*keys)
    client.close()


@pytest.fixture
def rabbitmq_url() -> str:
    """The machine's RabbitMQ, as a Flask-SocketIO ``message_queue`` URL (Kombu)."""
    import kombu

    connection = kombu.Connection(services.RABBITMQ_URL, connect_timeout=2)
    try:
        connection.connect()
    except Exception as exc:
        services.unavailable("RabbitMQ on 127.0.0.1:5672", exc)
    finally:
        connection.release()
    return services.RABBITMQ_URL


@pytest.fixture
def mariadb_url() -> str:
    _check_database(services.MARIADB_URL, "MariaDB on 127.0.0.1:3306")
    return services.MARIADB_URL


@pytest.fixture
def postgres_url() -> str:
    _check_database(services.POSTGRES_URL, "PostgreSQL on 127.0.0.1:5432")
    return services.POSTGRES_URL


@pytest.fixture(params=list(DATABASES))
def database_url(request: pytest.FixtureRequest, tmp_path: Any) -> str:
    """Each test using it runs on SQLite, MariaDB and PostgreSQL."""
    name = request.param
    if name == "sqlite":
        return f"sqlite:///{tmp_path / 'store.sqlite'}"
    url = DATABASES[name]
    assert url is not None
    _check_database(url, name)
    return url


@pytest.fixture(params=list(SERVERS))
def server_kind(request: pytest.FixtureRequest) -> str:
    """Each served test using it runs under the development server and under gunicorn with
    threaded and with gevent workers (``ServedApp(..., server=server_kind)``)."""
    return str(request.param)


@pytest.fixture
def make_app(tmp_path: Any) -> Iterator[Callable[..., tuple[Any, Any]]]:
    """Factory: ``make_app(**config)`` builds the example app; tables are dropped afterwards."""
    built: list[Any] = []

    def factory(**config: Any) -> tuple[Any, Any]:
        config.setdefault("SQLALCHEMY_DATABASE_URI", f"sqlite:///{tmp_path / f'app{len(built)}.sqlite'}")
        app, socketio = build_example(config)
        built.append(app)
        return app, socketio

    yield factory
    for app in built:
        drop_tables(app)


@pytest.fixture
def example(make_app: Callable[..., tuple[Any, Any]]) -> tuple[Any, Any]:
    """The example app on SQLite with the memory backend."""
    return make_app()


@pytest.fixture
def app(example: tuple[Any, Any]) -> Any:
    """pytest-flask's application, behind its ``client`` and ``live_server`` fixtures: the
    example app on SQLite with the memory backend (a module may override it with other config).

    pytest-flask keeps one request context pushed for the whole test, so every request the
    test makes shares one ``g``, and with it Flask-Login's cached user: tests that act as one
    identity use ``client``; tests with several users build their own clients from
    ``example``/``make_app`` (docs/testing.md says why).
    """
    return example[0]


def login(client: Any, username: str) -> Any:
    response = client.post("/login", data={"username": username, "password": username})
    assert response.status_code == 302, response.get_data(as_text=True)
    return response


def user_id(app: Any, username: str) -> str:
    User = app.extensions["demo"]["User"]
    with app.app_context():
        return str(User.query.filter_by(username=username).one().id)


@pytest.fixture
def any_database(database_url: str) -> Iterator[str]:
    """Each test using it runs on SQLite, MariaDB and PostgreSQL, the last two in a database of
    the test's own (tables in the shared ``test`` database are used by everyone at once)."""
    from tests.support import databases

    kind = databases.kind_of(database_url)
    if kind == "sqlite":
        yield database_url
        return
    with databases.own_database(kind) as url:
        yield url


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """A headless Chromium shared by a module's tests."""
    yield from launch_chromium()


@pytest.fixture
def proxied_database() -> Iterator[Any]:
    """A PostgreSQL database of the test's own behind a proxy the test can cut: (proxy, url)."""
    with outages.proxied_database("postgres") as pair:
        yield pair
