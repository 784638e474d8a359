"""The runbook's four emergency levels and the failure types, named by their evidence.

Classification (:mod:`.classify`) gives a failure one of each; emergency events carry them;
alerts follow the level's escalation.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Level:
    """One of the runbook's four emergency levels."""

    number: int
    name: str
    respond_within: dt.timedelta
    escalation: str
    definition: str


LEVELS: dict[int, Level] = {
    1: Level(1, "critical", dt.timedelta(minutes=5), "automatic to senior administrators",
             "complete notification failure affecting all users"),
    2: Level(2, "high", dt.timedelta(minutes=15), "automatic to administrators",
             "major degradation affecting many users"),
    3: Level(3, "medium", dt.timedelta(minutes=30), "manual escalation if unresolved",
             "issues in specific components, moderate impact"),
    4: Level(4, "low", dt.timedelta(minutes=60), "standard support channels",
             "minor issues, occasional delays"),
}

#: Failure types, named by the evidence that identifies them.
FAILURE_TYPES = (
    "realtime_connection", "message_delivery", "database_persistence", "shared_state",
    "authentication", "resource_exhaustion", "overload", "security", "manual",
)


def parse_level(value: Any) -> int:
    """1-4 or a level name ('critical', 'high', 'medium', 'low'); ValueError otherwise."""
    if isinstance(value, int) and not isinstance(value, bool) and value in LEVELS:
        return value
    text = str(value).strip().lower()
    if text.isdigit() and int(text) in LEVELS:
        return int(text)
    for level in LEVELS.values():
        if level.name == text:
            return level.number
    names = ", ".join(f"{n} ({lv.name})" for n, lv in LEVELS.items())
    raise ValueError(f"unknown emergency level {value!r}: use one of {names}.")
