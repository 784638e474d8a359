"""Counting a run, the events the monitor recorded during it, and its plot (SVG, no plotting
library needed)."""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

import sqlalchemy as sa

from .deploy import Deployment
from .users import SimUser


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def detected_events(dep: Deployment, since: float) -> list[dict[str, Any]]:
    engine = sa.create_engine(dep.direct_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(sa.text(
                "SELECT level, failure_type, reason, started_at, detected_at, resolved_at, triggered_by "
                "FROM notify_emergency_event ORDER BY id")).all()
    finally:
        engine.dispose()
    def epoch(value: Any) -> float | None:
        return None if value is None else value.replace(tzinfo=dt.timezone.utc).timestamp()

    out = []
    for r in rows:
        detected = epoch(r.detected_at)
        if detected is None or detected < since:
            continue
        started = epoch(r.started_at)
        out.append({"level": r.level, "failure_type": r.failure_type, "by": r.triggered_by,
                    "reason": (r.reason or "")[:160],
                    "mttd_seconds": None if started is None else round(detected - started, 2),
                    "detected_epoch": detected, "resolved_epoch": epoch(r.resolved_at)})
    return out


def count(sent: dict[str, tuple[str, float]], users: dict[str, Any]) -> dict[str, Any]:
    """What every client displayed of ``sent`` (by marker): the users may live through several
    runs, so only this run's markers count."""
    by_channel: dict[str, int] = {}
    first: dict[str, tuple[str, float]] = {}
    duplicates = 0
    dropped = 0
    lost_replies = sum(getattr(u.tally, "lost_replies", 0) for u in users.values())
    owner = {m: uid for m, (uid, _) in sent.items()}
    kinds = {uid: type(u).__name__ for uid, u in users.items()}
    for user in users.values():
        shown: set[str] = set()
        dropped += sum(1 for m in user.tally.dropped if m in sent)
        for d in list(user.tally.displays):
            if d.marker not in sent:
                continue
            if d.marker in shown:
                duplicates += 1  # one tab displayed it again
            shown.add(d.marker)
            by_channel[d.channel] = by_channel.get(d.channel, 0) + 1
            if d.marker not in first or d.at < first[d.marker][1]:
                first[d.marker] = (d.channel, d.at)
    lost = [m for m in sent if m not in first]
    lost_by_client: dict[str, int] = {}
    for m in lost:
        kind = kinds.get(owner[m], "?")
        lost_by_client[kind] = lost_by_client.get(kind, 0) + 1
    socket_ms = [(first[m][1] - at) * 1000 for m, (_, at) in sent.items() if m in first and first[m][0] == "socket"]
    any_ms = [(first[m][1] - at) * 1000 for m, (_, at) in sent.items() if m in first]
    return {"sent": len(sent), "displayed": by_channel, "lost": len(lost), "lost_by_client": lost_by_client,
            "client_replies_lost": lost_replies, "lost_examples": lost[:5], "lost_markers": lost,
            "visible_duplicates": duplicates, "copies_dropped_by_client": dropped,
            "socket_p50_ms": _round(percentile(socket_ms, 0.5)), "socket_p99_ms": _round(percentile(socket_ms, 0.99)),
            "any_p50_ms": _round(percentile(any_ms, 0.5)), "any_p99_ms": _round(percentile(any_ms, 0.99))}


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


COLOURS = {"socket": "#1f77b4", "poll": "#ff7f0e", "flash": "#2ca02c"}


def plot(path: str, title: str, users: dict[str, SimUser], start: float, end: float,
         fault: tuple[float, float] | None) -> None:
    """Displays per second by channel, the fault window shaded."""
    seconds = max(1, int(math.ceil(end - start)))
    series = {c: [0] * seconds for c in COLOURS}
    for user in users.values():
        for d in user.tally.displays:
            i = int(d.at - start)
            if 0 <= i < seconds and d.channel in series:
                series[d.channel][i] += 1
    peak = max([1] + [v for s in series.values() for v in s])
    w, h, left, bottom = 900, 320, 50, 40
    sx = (w - left - 20) / seconds
    sy = (h - bottom - 30) / peak
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">',
           f'<rect width="{w}" height="{h}" fill="white"/>',
           f'<text x="{left}" y="18">{title}: displays per second by channel</text>']
    if fault:
        x0, x1 = left + (fault[0] - start) * sx, left + (fault[1] - start) * sx
        out.append(f'<rect x="{x0:.1f}" y="25" width="{max(1.0, x1 - x0):.1f}" height="{h - bottom - 25}" '
                   f'fill="#d62728" fill-opacity="0.15"/>')
    out.append(f'<line x1="{left}" y1="{h - bottom}" x2="{w - 20}" y2="{h - bottom}" stroke="black"/>')
    out.append(f'<line x1="{left}" y1="25" x2="{left}" y2="{h - bottom}" stroke="black"/>')
    out.append(f'<text x="5" y="30">{peak}/s</text><text x="{left}" y="{h - bottom + 15}">0 s</text>'
               f'<text x="{w - 60}" y="{h - bottom + 15}">{seconds} s</text>')
    for n, (channel, values) in enumerate(series.items()):
        points = " ".join(f"{left + (i + 0.5) * sx:.1f},{h - bottom - v * sy:.1f}" for i, v in enumerate(values))
        out.append(f'<polyline fill="none" stroke="{COLOURS[channel]}" stroke-width="1.5" points="{points}"/>')
        out.append(f'<text x="{left + 10 + n * 90}" y="{h - 8}" fill="{COLOURS[channel]}">{channel}</text>')
    out.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(out))
