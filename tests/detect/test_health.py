"""Health checks and classification on the example app, with real sockets, Redis and sessions."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from flask_notify_emergency.delivery.hourly import rebuild
from flask_notify_emergency.detect.classify import classify
from flask_notify_emergency.detect.health import CHECK_NAMES, run_health_checks
from flask_notify_emergency.models import utcnow
from tests.conftest import login, user_id
from tests.support.outages import PrivateRedis
from tests.support.pages import NAMESPACE


def ext_of(app: Any) -> Any:
    return app.extensions["notify_emergency"]


def test_the_example_app_is_healthy_on_the_memory_backend(example):
    app, _ = example
    report = run_health_checks(ext_of(app))
    data = report.to_dict()
    assert (data["status"], data["score"]) == ("healthy", 100)
    assert set(data["checks"]) == set(CHECK_NAMES)
    assert data["checks"]["redis"]["status"] == "skipped"
    for name in ("realtime", "database", "sessions", "resources"):
        check = data["checks"][name]
        assert (check["ok"], check["status"], check["error"]) == (True, "ok", None), name
    assert data["checks"]["realtime"]["detail"]["canary"]["path"] == "in-process"
    assert data["checks"]["sessions"]["detail"]["round_trip"] is True
    assert isinstance(data["checks"]["database"]["latency_ms"], float)
    assert classify(report) is None


def test_healthy_with_the_redis_backend_and_the_redis_message_queue(make_app, redis_url, redis_prefix):
    app, _ = make_app(NOTIFY_EMERGENCY_REDIS_URL=redis_url, NOTIFY_EMERGENCY_REDIS_KEY_PREFIX=redis_prefix,
                      SOCKETIO_MESSAGE_QUEUE=redis_url)
    report = run_health_checks(ext_of(app))
    assert report.status == "healthy", report.to_dict()
    redis_check = report.checks["redis"]
    assert redis_check.status == "ok" and redis_check.detail["subscribed"] is True
    assert isinstance(redis_check.latency_ms, float)
    canary = report.checks["realtime"].detail["canary"]
    assert canary["path"] == "redis queue" and canary["verified"] is True


def test_only_runs_the_named_checks_and_rejects_unknown_names(example):
    app, _ = example
    report = run_health_checks(ext_of(app), only=["database"])
    assert list(report.checks) == ["database"]
    with pytest.raises(ValueError, match="unknown health check.*'sockets'.*realtime, redis"):
        run_health_checks(ext_of(app), only=["sockets"])


def test_a_hung_redis_fails_its_checks_with_a_timeout_and_the_report_still_returns(make_app):
    redis = PrivateRedis()
    try:
        app, _ = make_app(NOTIFY_EMERGENCY_REDIS_URL=redis.url, NOTIFY_EMERGENCY_REDIS_KEY_PREFIX="ne-hung",
                          SOCKETIO_MESSAGE_QUEUE=redis.url, NOTIFY_EMERGENCY_HEALTH_CHECK_TIMEOUT=0.5,
                          NOTIFY_EMERGENCY_CANARY_TIMEOUT=0.5, NOTIFY_EMERGENCY_HEALTH_ANSWER_TIMEOUT=0.05)
        ext = ext_of(app)
        assert run_health_checks(ext).status == "healthy"
        redis.freeze()  # accepts connections, never answers
        report = run_health_checks(ext)
        checks = report.checks
        assert checks["redis"].status == "failed" and checks["redis"].error_type == "CheckTimeout"
        assert checks["redis"].error.startswith("timeout")
        # frozen: a fresh connection is accepted by the kernel, but nothing answers it either
        assert checks["redis"].detail["answer_probe"]["answered"] is False
        assert "overload" not in checks["redis"].detail
        assert checks["realtime"].status == "failed" and "timeout" in checks["realtime"].error.lower()
        assert checks["database"].status == "ok" and checks["sessions"].status == "ok"
        assert report.status == "critical"
        # the hung ping is still running: the next report does not pile another one on it
        again = run_health_checks(ext, only=["redis"])
        assert again.checks["redis"].error_type == "CheckTimeout"
        assert "previous run is still hung" in again.checks["redis"].error
        finding = classify(report)
        assert finding is not None and (finding.failure_type, finding.level) == ("realtime_connection", 1)
        assert {"failure_type": "shared_state", "level": 3, "check": "redis"}.items() <= \
            finding.evidence["other_findings"][0].items()
    finally:
        redis.thaw()
        redis.stop()


def test_memory_over_the_limit_is_resource_exhaustion_by_its_exception_type(make_app):
    app, _ = make_app(NOTIFY_EMERGENCY_MEMORY_LIMIT_MB=1)
    report = run_health_checks(ext_of(app))
    resources = report.checks["resources"]
    assert resources.status == "failed" and resources.error_type == "ResourceExhausted"
    assert resources.detail["memory_exhausted"] is True
    assert "NOTIFY_EMERGENCY_MEMORY_LIMIT_MB=1" in resources.error
    assert report.status == "degraded" and report.score == round(100 * 80 / 90)  # redis skipped
    finding = classify(report)
    assert (finding.failure_type, finding.level) == ("resource_exhaustion", 2)


def test_the_sessions_check_loads_the_configured_test_user(make_app):
    app, _ = make_app()
    app.config["NOTIFY_EMERGENCY_TEST_USER_ID"] = user_id(app, "alice")
    check = run_health_checks(ext_of(app), only=["sessions"]).checks["sessions"]
    assert check.status == "ok" and check.detail["user_loader"] == "loaded test user"

    app.config["NOTIFY_EMERGENCY_TEST_USER_ID"] = "999999"
    report = run_health_checks(ext_of(app))
    check = report.checks["sessions"]
    assert check.status == "failed" and check.error_type == "SessionProbeFailed"
    assert "NOTIFY_EMERGENCY_TEST_USER_ID='999999'" in check.error
    finding = classify(report)
    assert (finding.failure_type, finding.level) == ("authentication", 2)


def test_a_session_interface_that_loses_sessions_fails_the_check(make_app):
    app, _ = make_app()
    app.secret_key = None  # cookie sessions cannot be signed: every session is a null one
    app.config["SECRET_KEY"] = None
    check = run_health_checks(ext_of(app), only=["sessions"]).checks["sessions"]
    assert check.status == "failed" and "SECRET_KEY" in check.error


def sent_to_alice_socket(make_app: Any, n: int, ack_timeout: float) -> tuple[Any, Any, list[int]]:
    """An app with alice's socket open (a test client that acknowledges nothing by itself), and
    the ids of the ``n`` notifications sent to her that it received."""
    from flask_notify_emergency.delivery.notifier import EVENT

    app, socketio = make_app(NOTIFY_EMERGENCY_ACK_TIMEOUT=ack_timeout, NOTIFY_EMERGENCY_BREAKER_MIN_CALLS=1000,
                             NOTIFY_EMERGENCY_DELIVERY_MIN_SAMPLE=n)
    client = app.test_client()
    login(client, "alice")
    sio = socketio.test_client(app, namespace=NAMESPACE, flask_test_client=client)
    notify, alice = app.extensions["demo"]["notify"], user_id(app, "alice")
    with app.app_context():
        for k in range(n):
            notify.send(alice, f"Report {k}", "Ready.")
    return app, sio, [p["args"][0]["id"] for p in sio.get_received(NAMESPACE) if p["name"] == EVENT]


def test_unacknowledged_deliveries_over_the_threshold_are_a_message_delivery_emergency(make_app):
    app, sio, received = sent_to_alice_socket(make_app, 5, ack_timeout=0.2)
    # the socket got them, but this client never acknowledges: each counts as a failure
    assert len(received) == 5
    from tests.support.services import wait_until

    report = wait_until(lambda: (r := run_health_checks(ext_of(app))).checks["realtime"]
                        .detail["delivery"]["failed"] == 5 and r, timeout=10, message="acks to time out")
    delivery = report.checks["realtime"].detail["delivery"]
    assert (delivery["attempted"], delivery["failure_rate"], delivery["failed_users"]) == (5, 1.0, 1)
    assert report.checks["realtime"].status == "degraded"
    finding = classify(report)
    assert (finding.failure_type, finding.level, finding.affected_users) == ("message_delivery", 2, 1)
    sio.disconnect(NAMESPACE)


@pytest.mark.parametrize("late, expected", [(0, ("message_delivery", 2)), (1, ("overload", 3)),
                                             (3, ("overload", 3))])
def test_a_failure_rate_with_slow_acknowledgements_is_overload_not_a_delivery_failure(make_app, late, expected):
    """Of 8 deliveries, 4 are never acknowledged; of the 4 that are, ``late`` come late but
    inside the deadline (a saturated server: late, not lost), the others at once. All quick: the
    path fails for some. One late of four is enough: under overload most acknowledgements still
    come quickly, and the slow tail is the evidence."""
    import time

    from flask_notify_emergency.delivery.notifier import ACK_EVENT
    from tests.support.services import wait_until

    app, sio, received = sent_to_alice_socket(make_app, 8, ack_timeout=2.0)
    assert len(received) == 8
    acked = received[:4]
    for nid in acked[late:]:
        sio.emit(ACK_EVENT, {"id": nid}, namespace=NAMESPACE)
    if late:
        time.sleep(1.5)  # how late the browser's acknowledgements come (the thing measured)
        for nid in acked[:late]:
            sio.emit(ACK_EVENT, {"id": nid}, namespace=NAMESPACE)
    report = wait_until(lambda: (r := run_health_checks(ext_of(app))).checks["realtime"]
                        .detail["delivery"]["attempted"] == 8 and r, timeout=10, message="the rest to time out")
    delivery = report.checks["realtime"].detail["delivery"]
    assert (delivery["failed"], delivery["failure_rate"]) == (4, 0.5)
    acks = delivery["socket_ack_seconds"]
    assert acks["sample"] == 4 and (acks["p90"] >= 1.0) == (late > 0)
    assert (acks["median"] >= 1.0) == (late > 2)  # one late of four leaves the median quick
    finding = classify(report)
    assert (finding.failure_type, finding.level) == expected
    if expected[0] == "overload":
        assert "late rather than lost" in finding.reason
    sio.disconnect(NAMESPACE)


def test_half_of_the_connected_users_dropping_their_socket_is_level_2(make_app):
    app, socketio = make_app(NOTIFY_EMERGENCY_DISCONNECT_MIN_USERS=2)
    sockets = []
    for name in ("alice", "bob"):
        client = app.test_client()
        login(client, name)
        sockets.append(socketio.test_client(app, namespace=NAMESPACE, flask_test_client=client))
    ext = ext_of(app)
    first = run_health_checks(ext, only=["realtime"])
    assert first.checks["realtime"].detail["connected_users"] == 2
    assert classify(first) is None
    for sio in sockets:
        sio.disconnect(NAMESPACE)
    report = run_health_checks(ext, only=["realtime"])
    detail = report.checks["realtime"].detail
    assert (detail["connected_users"], detail["peak_connected_users"], detail["disconnect_ratio"]) == (0, 2, 1.0)
    finding = classify(report)
    assert (finding.failure_type, finding.level, finding.affected_users) == ("realtime_connection", 2, 2)


def test_classify_reads_a_report_dict_the_same_way(make_app):
    app, _ = make_app(NOTIFY_EMERGENCY_MEMORY_LIMIT_MB=1)
    report = run_health_checks(ext_of(app))
    from_dict = classify(report.to_dict())
    assert from_dict is not None and from_dict.to_dict() == classify(report).to_dict()


def test_the_database_check_reads_only_connected_users_rows_for_stuck_ones(any_database, make_app):
    app, _ = make_app(SQLALCHEMY_DATABASE_URI=any_database)
    ext = app.extensions["notify_emergency"]
    t = ext.models.Notification.__table__
    old = utcnow() - dt.timedelta(hours=2)
    with ext.engine.begin() as conn:  # an hour over BACKLOG_MAX_AGE: stuck if its user is connected
        conn.execute(t.insert(), [dict(user_id=u, title="Waiting", message="Still.", created_at=old)
                                  for u in ("online", "offline", "online")])
    for _ in range(2):  # from the rows, then from the hourly totals: the same numbers
        ext.state.connection_opened("online")
        detail = run_health_checks(ext, only=["database"]).to_dict()["checks"]["database"]["detail"]
        ext.state.connection_closed("online")
        assert detail["backlog_undelivered"] == 3
        assert detail["stuck_users"] == 1
        assert 7100 < detail["stuck_oldest_age_seconds"] < 7400
        rebuild(ext.engine, ext.models, ext.store.hourly)
    assert run_health_checks(ext, only=["database"]).to_dict()["checks"]["database"]["detail"]["stuck_users"] == 0
