"""Our tables on the host's migrations: a host on Flask-Migrate gets them from
``flask db migrate`` / ``flask db upgrade``, and a later change to them (a column an older
release did not have) as a new migration; ``check-database`` and the strict ``/readyz`` name
what is missing and the command that fixes it. On SQLite, MariaDB and PostgreSQL, each in a
database of the test's own."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

import pytest
import sqlalchemy as sa

from tests.conftest import DATABASES
from tests.support.apps import ROOT
from tests.support.cli import invoke_json
from tests.support.databases import own_database
from tests.support.migrating_host import create_app

FLASK = os.path.join(os.path.dirname(sys.executable), "flask")
OUR_TABLES = ("notify_emergency_notification", "notify_emergency_banner", "notify_emergency_event",
              "notify_emergency_audit", "notify_emergency_control", "notify_emergency_rollback_step",
              "notify_emergency_drill", "notify_emergency_incident")
#: the column an "older release" lacks in these tests
LATER_COLUMN = "notify_emergency_notification.realtime_deadline"


class Host:
    """The Flask-Migrate host app, driven through ``flask`` as its operator would."""

    def __init__(self, url: str, migrations: Path) -> None:
        self.url = url
        self.migrations = migrations
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("FLASK_")}
        self.env.update(FLASK_SQLALCHEMY_DATABASE_URI=url, MIGRATIONS_DIR=str(migrations))

    def flask(self, *args: str, expect: int = 0) -> str:
        result = subprocess.run([FLASK, "--app", "tests.support.migrating_host", *args], cwd=ROOT,
                                env=self.env, capture_output=True, text=True, timeout=120)
        assert result.returncode == expect, f"flask {' '.join(args)} -> {result.returncode}:\n" \
                                            f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        return result.stdout + result.stderr

    def check_database(self, expect: int) -> dict[str, Any]:
        out = self.flask("emergency", "check-database", "--json", expect=expect)
        return json.loads(out[:out.rindex("}") + 1])

    def versions(self) -> list[Path]:
        return sorted((self.migrations / "versions").glob("*.py"), key=lambda p: p.stat().st_mtime_ns)


@pytest.fixture(params=list(DATABASES))
def host(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Host]:
    with own_database(request.param, tmp_path) as url:
        yield Host(url, tmp_path / "migrations")


@pytest.fixture
def served(host: Host) -> Iterator[Any]:
    """The same host app in this process, with the strict readiness probe (built on demand)."""
    apps: list[Any] = []

    def build() -> Any:
        app = create_app({"SQLALCHEMY_DATABASE_URI": host.url, "NOTIFY_EMERGENCY_READYZ_STRICT": True,
                          "TESTING": True})
        apps.append(app)
        return app

    yield build
    for app in apps:
        app.extensions["notify_emergency"].close()
        with app.app_context():
            app.extensions["host"]["db"].engine.dispose()


@pytest.mark.slow
def test_flask_migrate_creates_our_tables_and_a_later_column_as_a_new_migration(host, served):
    host.flask("db", "init")
    before = host.check_database(expect=1)
    database = before["checks"][0]
    assert sorted(database["schema"]["missing_tables"]) == sorted(OUR_TABLES)
    assert "flask db migrate" in database["detail"] and "flask db upgrade" in database["detail"]

    host.flask("db", "migrate", "-m", "host and notify-emergency tables")
    [first] = host.versions()
    text = first.read_text()
    for table in (*OUR_TABLES, "host_member"):
        assert f"op.create_table('{table}'" in text, table
    # the database as an older release of the extension left it: no realtime_deadline column yet
    older = "".join(line for line in text.splitlines(keepends=True) if "'realtime_deadline'" not in line)
    assert older != text
    first.write_text(older)
    host.flask("db", "upgrade")

    app = served()
    ready = app.test_client().get("/emergency/readyz")
    assert ready.status_code == 503
    assert ready.get_json()["schema"]["missing_columns"] == [LATER_COLUMN]
    assert "flask db upgrade" in ready.get_json()["schema"]["fix"]
    stale = host.check_database(expect=1)["checks"][0]
    assert stale["schema"] == {"ok": False, "missing_tables": [], "missing_columns": [LATER_COLUMN],
                               "fix": stale["schema"]["fix"]}
    assert f"columns missing: {LATER_COLUMN}" in stale["detail"] and "flask db migrate" in stale["detail"]

    detected = host.flask("db", "migrate", "-m", "notify-emergency: realtime deadline")
    assert f"Detected added column '{LATER_COLUMN}'" in detected
    [_, later] = host.versions()
    assert "add_column(sa.Column('realtime_deadline'" in later.read_text()
    host.flask("db", "upgrade")

    assert app.test_client().get("/emergency/readyz").status_code == 200
    fixed = host.check_database(expect=0)
    assert fixed["ok"] is True and fixed["checks"][0]["detail"].endswith("every table and column present")
    assert "No changes in schema detected" in host.flask("db", "migrate", "-m", "nothing to do")
    assert len(host.versions()) == 2

    db, Member, notify = (app.extensions["host"][k] for k in ("db", "Member", "notify"))
    with app.app_context():
        member = Member(name="ann")
        db.session.add(member)
        db.session.commit()
        member_id = str(member.id)
    with app.test_request_context():
        notify.send(member_id, "Migrated", "Stored in the migrated table.")
    engine = sa.create_engine(host.url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(sa.text("SELECT title, delivered FROM notify_emergency_notification "
                                        "WHERE user_id = :u"), {"u": member_id}).all()
    finally:
        engine.dispose()
    assert [(r[0], bool(r[1])) for r in rows] == [("Migrated", False)]


def test_without_flask_migrate_check_database_gives_the_statement_that_adds_a_column(make_app, tmp_path):
    app, _ = make_app(NOTIFY_EMERGENCY_READYZ_STRICT=False)
    engine = app.extensions["notify_emergency"].engine
    with engine.begin() as conn:  # as an older release's db.create_all() left it
        # a column no index uses (SQLite refuses to drop an indexed one)
        conn.execute(sa.text("ALTER TABLE notify_emergency_notification DROP COLUMN delivered_at"))
    code, data = invoke_json(app, "check-database")
    assert code == 1
    schema = data["checks"][0]["schema"]
    assert schema["missing_columns"] == ["notify_emergency_notification.delivered_at"]
    assert schema["fix"] == "ALTER TABLE notify_emergency_notification ADD COLUMN delivered_at DATETIME"
    # the default probe only asks the database to answer
    assert app.test_client().get("/emergency/readyz").status_code == 200

    with engine.begin() as conn:
        conn.execute(sa.text(schema["fix"]))
    code, data = invoke_json(app, "check-database")
    assert code == 0 and data["ok"] is True
