"""``generate-metrics`` and ``track-improvements``: the runbook's KPIs from stored events,
against its targets, on SQLite, MariaDB and PostgreSQL (each test in a database of its own)."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any, Iterator

import pytest

from flask_notify_emergency.models import utcnow
from flask_notify_emergency.respond.emergency import open_event
from tests.support.apps import build_example, drop_tables
from tests.support.cli import invoke, invoke_json
from tests.support.databases import own_database

NOW = utcnow().replace(microsecond=0)


@pytest.fixture(params=["sqlite", "mariadb", "postgres"])
def history(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[Any]:
    """An app whose database holds three past emergencies and some notifications:

    ======  ===============  ====  ====  ==========  =========
    event   failure started  MTTD  MTTR  recovered   impact
    ======  ===============  ====  ====  ==========  =========
    A       10 days ago       600  3000  yes         3600
    B       3 hours ago       120  1200  no          1320
    C       10 minutes ago     60   300  yes          360
    ======  ===============  ====  ====  ==========  =========
    """
    with own_database(request.param, tmp_path) as url:
        app, _ = build_example({"SQLALCHEMY_DATABASE_URI": url, "NOTIFY_EMERGENCY_ADMIN_USER_IDS": None})
        ext = app.extensions["notify_emergency"]
        t = ext.models.EmergencyEvent.__table__
        n = ext.models.Notification.__table__
        with app.app_context():
            for started, mttd, mttr, recovered in ((NOW - dt.timedelta(days=10), 600, 3000, True),
                                                   (NOW - dt.timedelta(hours=3), 120, 1200, False),
                                                   (NOW - dt.timedelta(minutes=10), 60, 300, True)):
                event = open_event(ext, level=2, failure_type="realtime_connection", reason="past outage",
                                   triggered_by="monitor", started_at=started)
                detected = started + dt.timedelta(seconds=mttd)
                with ext.engine.begin() as conn:
                    conn.execute(t.update().where(t.c.id == event["id"]).values(
                        detected_at=detected, resolved_at=detected + dt.timedelta(seconds=mttr),
                        status="resolved", recovered=recovered))
            rows = [(NOW - dt.timedelta(days=9), True), (NOW - dt.timedelta(days=9), False),
                    (NOW - dt.timedelta(hours=1), True), (NOW - dt.timedelta(hours=1), True),
                    (NOW - dt.timedelta(hours=1), True), (NOW - dt.timedelta(hours=1), False)]
            with ext.engine.begin() as conn:
                for created, delivered in rows:
                    conn.execute(n.insert().values(
                        user_id="2", audience="user", title="t", message="m", priority="normal", category="system",
                        created_at=created, delivered=delivered, channel="flash" if delivered else None, attempts=0))
        yield app
        drop_tables(app)  # before its database is dropped


def kpis(data: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    return {k["key"]: (k["value"], k["met"]) for k in data["kpis"]}


def test_last_24_hours_against_the_targets(history):
    code = invoke(history, "generate-metrics", "--period", "last_24_hours", "--format", "json")
    assert code.exit_code == 0
    values = kpis(json.loads(code.output))
    assert values["mttd_seconds"] == (pytest.approx(90, abs=1), True)  # (120 + 60) / 2
    assert values["mttr_seconds"] == (pytest.approx(750, abs=1), True)
    assert values["recovery_success_rate"] == (0.5, False)  # under 95%: missed
    assert values["user_impact_seconds"] == (pytest.approx(840, abs=1), True)
    assert values["delivery_success_rate"] == (0.75, None)  # no runbook target
    assert values["event_count"] == (2, None)


def test_last_30_days_sees_the_older_emergency_and_misses_mttr(history):
    result = invoke(history, "generate-metrics", "--period", "last_30_days", "--format", "json")
    data = json.loads(result.output)
    values = kpis(data)
    assert values["mttd_seconds"] == (pytest.approx(260, abs=1), True)
    assert values["mttr_seconds"] == (pytest.approx(1500, abs=1), False)
    assert values["user_impact_seconds"] == (pytest.approx(1760, abs=1), True)
    assert values["event_count"] == (3, None)
    assert set(data["targets_missed"]) == {"mttr_seconds", "recovery_success_rate"} and data["ok"] is False


def test_json_is_the_same_as_format_json(make_app):
    app, _ = make_app()
    invoke(app, "activate-emergency", "--reason", "queue down")
    # a closed event: an open one's numbers grow with the clock between the three calls
    invoke(app, "deactivate-emergency", "--force", "--reason", "queue back")
    by_format = invoke(app, "generate-metrics", "--period", "last_24_hours", "--format", "json")
    by_flag = invoke(app, "generate-metrics", "--period", "last_24_hours", "--json")
    both = invoke(app, "generate-metrics", "--period", "last_24_hours", "--json", "--format", "json")
    assert by_format.exit_code == by_flag.exit_code == both.exit_code == 0, by_flag.output
    expected = json.loads(by_format.output)
    for data in (json.loads(by_flag.output), json.loads(both.output)):
        assert (data["period"], kpis(data)) == (expected["period"], kpis(expected))
        assert set(data) == set(expected)


def test_dashboard_and_markdown_formats(history):
    text = invoke(history, "generate-metrics", "--period", "last_24_hours").output
    assert "Emergency metrics, last 24 hours" in text
    assert "Recovery success rate" in text and "50.0%" in text and "MISSED" in text
    assert "1 min 30 s" in text and "< 5 min" in text
    markdown = invoke(history, "generate-metrics", "--period", "last_24_hours", "--format", "markdown").output
    assert markdown.startswith("# Emergency metrics") and "| Mean time to detection (MTTD) | 1 min 30 s | < 5 min | met |" in markdown


def test_track_improvements_compares_before_and_after_the_baseline(history):
    baseline = (NOW - dt.timedelta(days=5)).date().isoformat()
    code, data = invoke_json(history, "track-improvements", "--baseline", baseline)
    assert code == 0
    rows = {r["key"]: r for r in data["rows"]}
    assert rows["mttd_seconds"]["before"] == pytest.approx(600, abs=1)
    assert rows["mttd_seconds"]["after"] == pytest.approx(90, abs=1)
    assert rows["mttd_seconds"]["delta"] == pytest.approx(-510, abs=1) and rows["mttd_seconds"]["improved"] is True
    assert rows["mttr_seconds"]["improved"] is True
    assert (rows["recovery_success_rate"]["before"], rows["recovery_success_rate"]["after"]) == (1.0, 0.5)
    assert rows["recovery_success_rate"]["improved"] is False
    assert rows["user_impact_seconds"]["before"] == pytest.approx(3600, abs=1)
    assert (rows["delivery_success_rate"]["before"], rows["delivery_success_rate"]["after"]) == (0.5, 0.75)
    assert rows["event_count"]["before"] == 1 and rows["event_count"]["after"] == 2
    text = invoke(history, "track-improvements", "--baseline", baseline).output
    assert f"Improvements since {baseline}" in text and "better" in text and "worse" in text


@pytest.mark.parametrize("args, complaint", [
    (["generate-metrics", "--period", "last_year"], "'last_year' is not one of"),
    (["generate-metrics", "--format", "pdf"], "'pdf' is not one of 'dashboard', 'json', 'markdown'"),
    (["generate-metrics", "--json", "--format", "markdown"], "--json and --format markdown disagree"),
    (["track-improvements", "--baseline", "01/01/2025"], "--baseline must be a date as YYYY-MM-DD"),
    (["track-improvements", "--baseline", "2999-01-01"], "is in the future"),
    (["track-improvements"], "Missing option '--baseline'"),
])
def test_metrics_bad_input(make_app, args, complaint):
    app, _ = make_app()
    result = invoke(app, *args)
    assert result.exit_code == 2 and complaint in result.output


def test_no_events_means_no_data_not_zero(make_app):
    app, _ = make_app()
    code, data = invoke_json(app, "track-improvements", "--baseline", "2025-01-01")
    assert code == 0 and {r["key"]: r["after"] for r in data["rows"]}["mttd_seconds"] is None
    text = invoke(app, "generate-metrics", "--period", "last_7_days").output
    assert "no data" in text and "MISSED" not in text
