"""The runbook's emergency response KPIs, measured and held against its targets.

Every number comes from :mod:`.metrics` (one definition for the dashboard and the CLI):
MTTD and MTTR (mean detection-to-resolution time) and the recovery success rate from
:func:`.metrics.event_metrics`, the delivery success rate from
:func:`.metrics.delivery_metrics`, the rollback success rate from
:func:`.metrics.rollback_metrics`. The one KPI the dashboard does not show, **user impact
duration**, is defined here: the mean of ``(resolved_at, or now if open) - started_at`` over
the window's events, in SQL through :func:`.metrics.seconds_between`.

``track-improvements`` compares the time before a baseline date with the time since. The
metrics count everything *since* a date, so "before" is "all time" minus "since the
baseline": counts subtract exactly, means through their sums (mean x count). The rollback
journal gives a rate only, so its "before" is reported as not available.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from ..communicate import duration_text
from ..models import utcnow
from .metrics import Window, delivery_metrics, event_metrics, parse_window, rollback_metrics, seconds_between

PERIODS = {"last_24_hours": "24h", "last_7_days": "7d", "last_30_days": "30d"}
FORMATS = ("dashboard", "json", "markdown")
EPOCH = dt.datetime(1970, 1, 1)


@dataclass(frozen=True)
class Target:
    """One KPI, its runbook target (None: no target) and whether lower is better."""

    key: str
    label: str
    kind: str  # seconds | rate | count
    limit: float | None
    lower_is_better: bool

    @property
    def text(self) -> str:
        if self.limit is None:
            return "-"
        if self.kind == "seconds":
            return f"< {int(self.limit // 60)} min"
        return f"> {self.limit * 100:g}%"

    def met(self, value: float | None) -> bool | None:
        if value is None or self.limit is None:
            return None
        return value < self.limit if self.lower_is_better else value > self.limit


TARGETS = (
    Target("mttd_seconds", "Mean time to detection (MTTD)", "seconds", 5 * 60, True),
    Target("mttr_seconds", "Mean time to resolution (MTTR)", "seconds", 15 * 60, True),
    Target("recovery_success_rate", "Recovery success rate", "rate", 0.95, False),
    Target("rollback_success_rate", "Rollback success rate", "rate", 0.99, False),
    Target("user_impact_seconds", "User impact duration", "seconds", 30 * 60, True),
    Target("delivery_success_rate", "Delivery success rate", "rate", None, False),
    Target("event_count", "Emergency events", "count", None, True),
)


def window_since(since: dt.datetime, until: dt.datetime | None = None) -> Any:
    """A :class:`.metrics.Window` from ``since`` to now, one bucket wide (no time series)."""
    until = until or utcnow()
    span = max(1, int((until - since).total_seconds()) + 1)
    return Window("custom", span, span, since, until)


def user_impact(ext: Any, since: dt.datetime) -> dict[str, Any]:
    """(mean seconds users were affected, events counted) over events detected since ``since``."""
    t = ext.models.EmergencyEvent.__table__
    now = sa.literal(utcnow(), sa.DateTime)
    start = sa.func.coalesce(t.c.started_at, t.c.detected_at)
    end = sa.case((t.c.resolved_at.is_not(None), t.c.resolved_at), else_=now)
    q = sa.select(sa.func.avg(seconds_between(ext.engine.dialect.name, start, end)), sa.func.count()) \
        .where(t.c.detected_at >= since)
    with ext.engine.connect() as conn:
        mean, count = conn.execute(q).one()
    return {"user_impact_seconds": None if mean is None else round(float(mean), 1), "count": int(count or 0)}


def measure(ext: Any, since: dt.datetime) -> dict[str, Any]:
    """Every KPI over what happened since ``since`` (plus the counts behind each)."""
    window = window_since(since)
    events = event_metrics(ext, window)
    delivery = delivery_metrics(ext, window)
    rollback = rollback_metrics(ext, window)
    impact = user_impact(ext, since)
    return {
        "mttd_seconds": events["mttd_seconds"], "mttr_seconds": events["mttr_seconds"],
        "recovery_success_rate": events["recovery_success_rate"],
        "rollback_success_rate": rollback.get("success_rate"),
        "user_impact_seconds": impact["user_impact_seconds"],
        "delivery_success_rate": delivery["success_rate"], "event_count": events["count"],
        "counts": {"events": events["count"], "open": events["open"], "resolved": events["resolved"],
                   "recovered": events["recovered"], "notifications": delivery["attempted"],
                   "delivered": delivery["delivered"]},
        "notes": [rollback["detail"]] if rollback.get("detail") else [],
    }


def judged(values: dict[str, Any]) -> list[dict[str, Any]]:
    """Each KPI with its target and whether it is met (None: no data or no target)."""
    return [{"key": t.key, "label": t.label, "kind": t.kind, "value": values.get(t.key), "target": t.text,
             "met": t.met(values.get(t.key))} for t in TARGETS]


def period_report(ext: Any, period: str) -> dict[str, Any]:
    """The KPIs of ``last_24_hours`` / ``last_7_days`` / ``last_30_days``."""
    if period not in PERIODS:
        raise ValueError(f"--period must be one of {', '.join(PERIODS)}; got {period!r}.")
    window = parse_window(PERIODS[period])
    values = measure(ext, window.since)
    kpis = judged(values)
    missed = [k["key"] for k in kpis if k["met"] is False]
    return {"period": period, "since": window.since.isoformat() + "Z", "until": window.until.isoformat() + "Z",
            "kpis": kpis, "counts": values["counts"], "notes": values["notes"], "targets_missed": missed,
            "ok": not missed}


def parse_baseline(text: str) -> dt.datetime:
    """``YYYY-MM-DD`` (UTC midnight), not in the future; ValueError otherwise."""
    try:
        day = dt.datetime.strptime(str(text).strip(), "%Y-%m-%d")
    except ValueError:
        raise ValueError(f"--baseline must be a date as YYYY-MM-DD, e.g. 2025-01-01; got {text!r}.") from None
    if day > utcnow():
        raise ValueError(f"--baseline {text} is in the future: give the date the improvements started.")
    return day


def _before(total: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """KPIs of the time before the baseline, from all-time minus since-baseline."""
    c_all, c_after = total["counts"], after["counts"]
    c = {k: c_all[k] - c_after[k] for k in c_all}

    def mean(key: str, n_key: str) -> float | None:
        if not c[n_key]:
            return None
        part = (total[key] or 0) * c_all[n_key] - (after[key] or 0) * c_after[n_key]
        return round(part / c[n_key], 1)

    return {
        "mttd_seconds": mean("mttd_seconds", "events"), "mttr_seconds": mean("mttr_seconds", "resolved"),
        "recovery_success_rate": round(c["recovered"] / c["resolved"], 4) if c["resolved"] else None,
        "rollback_success_rate": None,
        "user_impact_seconds": mean("user_impact_seconds", "events"),
        "delivery_success_rate": round(c["delivered"] / c["notifications"], 4) if c["notifications"] else None,
        "event_count": c["events"], "counts": c,
    }


def improvements(ext: Any, baseline: str) -> dict[str, Any]:
    """Each KPI before and since ``baseline``, the change, and whether it got better."""
    since = parse_baseline(baseline)
    total, after = measure(ext, EPOCH), measure(ext, since)
    before = _before(total, after)
    rows = []
    for t in TARGETS:
        old, new = before.get(t.key), after.get(t.key)
        delta = None if old is None or new is None else round(new - old, 4)
        better = None if not delta else (delta < 0) == t.lower_is_better
        rows.append({"key": t.key, "label": t.label, "kind": t.kind, "before": old, "after": new, "delta": delta,
                     "improved": better, "target": t.text, "met_after": t.met(new)})
    notes = ["rollback success rate before the baseline is not available: the rollback journal "
             "reports a rate since a date, not counts"] + after["notes"]
    return {"baseline": since.date().isoformat(), "rows": rows, "counts": {"before": before["counts"],
            "after": after["counts"]}, "notes": notes}


def show(kind: str, value: Any) -> str:
    """A KPI value for people: durations in min/s, rates in %."""
    if value is None:
        return "no data"
    if kind == "seconds":
        return duration_text(float(value))
    if kind == "rate":
        return f"{float(value) * 100:.1f}%"
    return str(value)


def show_delta(kind: str, value: Any) -> str:
    if value is None:
        return "-"
    sign = "+" if value > 0 else "-" if value < 0 else "±"
    return sign + show(kind, abs(value)) if kind != "rate" else f"{value * 100:+.1f} pts"
