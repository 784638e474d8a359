"""The user-facing JSON API the client script polls while its socket is down."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, current_app, jsonify

from ..access import current_user_id, user_required
from ..delivery import claim_for_user, i18n, polling


def register(bp: Blueprint, ext_state: Any) -> None:
    @bp.route("/api/notifications/poll", methods=["POST"])
    @user_required
    def poll() -> Any:
        """Claim this user's pending notifications (each is returned once, ever)."""
        uid = current_user_id()
        assert uid is not None
        cfg = current_app.config
        rows: list[dict[str, Any]] = []
        if ext_state.state.may_have_pending(uid):
            rows = claim_for_user(ext_state, uid, cfg["NOTIFY_EMERGENCY_POLL_BATCH_SIZE"], "poll")
        return jsonify(
            notifications=[{k: v for k, v in r.items() if k != "user_id"} for r in rows],
            banners=i18n.shown_banners(ext_state.banners()),
            mode=ext_state.control.mode,
            poll_interval=polling.poll_interval(ext_state),  # raised in emergency mode and under load
            poll_phase=polling.poll_phase(),  # where in the jitter window the next poll falls
        )

    @bp.route("/api/banners")
    def banners() -> Any:
        """Active banners (public, like the banners on every page)."""
        return jsonify(banners=i18n.shown_banners(ext_state.banners()), mode=ext_state.control.mode,
                       poll_interval=polling.poll_interval(ext_state))
