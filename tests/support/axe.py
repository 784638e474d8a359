"""axe-core (from npm, installed by `make axe`; never shipped) injected into a Chromium page."""

from __future__ import annotations

import os
from typing import Any

from tests.support import services
from tests.support.apps import ROOT

AXE = os.path.join(ROOT, "node_modules", "axe-core", "axe.min.js")
#: WCAG 2.1 level A and AA, as axe tags them.
WCAG21_AA = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]


def axe_source() -> str:
    """axe-core's script (skip locally, fail in CI, when it is not installed)."""
    if not os.path.exists(AXE):
        services.unavailable("axe-core", f"missing at {AXE}; run `make axe` (npm install)")
    with open(AXE, encoding="utf-8") as fh:
        return fh.read()


def violations(page: Any) -> list[dict[str, Any]]:
    """axe's WCAG 2.1 AA violations on ``page`` once its animations have finished.

    A toast fading in is half transparent for a moment; axe would measure the contrast of that
    moment, not of what the user reads.
    """
    if not page.evaluate("typeof window.axe !== 'undefined'"):
        page.evaluate(axe_source())
    return page.evaluate("""async (tags) => {
        await Promise.all(document.getAnimations()
            .filter(a => !a.effect || a.effect.getComputedTiming().endTime !== Infinity)
            .map(a => a.finished.catch(() => null)));
        const result = await axe.run(document, {runOnly: {type: 'tag', values: tags}, resultTypes: ['violations']});
        return result.violations.map(v => ({id: v.id, impact: v.impact, help: v.help,
            nodes: v.nodes.map(n => n.target.join(' ') + ': ' + n.failureSummary)}));
    }""", WCAG21_AA)


def assert_no_violations(page: Any, where: str) -> None:
    """Fail with every violation axe finds on ``page``, named by ``where``."""
    found = violations(page)
    report = "\n".join(f"- {v['id']} ({v['impact']}): {v['help']}\n    " + "\n    ".join(v["nodes"][:5])
                       for v in found)
    assert not found, f"axe found {len(found)} WCAG 2.1 AA violation(s) on {where}:\n{report}"
