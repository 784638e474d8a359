"""The user-facing JSON API the client script polls while its socket is down, and the
endpoint that confirms what a page showed (a poll's notifications, a page's flashes)."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, abort, current_app, jsonify, request

from ..access import current_user_id, user_required
from ..delivery import claim_for_user, i18n, realtime


def register(bp: Blueprint, ext_state: Any) -> None:
    @bp.route("/api/notifications/poll", methods=["POST"])
    @user_required
    def poll() -> Any:
        """Offer this user's pending notifications. The client confirms what it showed (the
        ack outbox cookie of its next request, the socket, or ``api/notifications/ack``);
        what is not confirmed within NOTIFY_EMERGENCY_CLAIM_CONFIRM_TIMEOUT is offered again."""
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
            poll_interval=cfg["NOTIFY_EMERGENCY_POLL_INTERVAL"],
        )

    @bp.route("/api/banners")
    def banners() -> Any:
        """Active banners (public, like the banners on every page)."""
        return jsonify(banners=i18n.shown_banners(ext_state.banners()), mode=ext_state.control.mode)

    @bp.route("/api/notifications/ack", methods=["POST"])
    @user_required
    def ack() -> Any:
        """The page showed these notifications: ``{"ids": [N, ...]}`` (CSRF token as for polls)."""
        uid = current_user_id()
        assert uid is not None
        body = request.get_json(silent=True)
        ids = body.get("ids") if isinstance(body, dict) else None
        if not isinstance(ids, list) or len(ids) > realtime.MAX_ACK_IDS:
            abort(400, description=f'Send a JSON object {{"ids": [N, ...]}} with at most '
                                   f'{realtime.MAX_ACK_IDS} notification ids.')
        return jsonify(acknowledged=ext_state.dispatcher.acknowledge_many(realtime.valid_ids(ids), uid))
