"""Stand-ins for outside providers, as real servers on loopback: a mail server (aiosmtpd)
and an HTTP receiver for the SMS gateway and webhooks."""

from __future__ import annotations

import email
import email.policy
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.support.services import free_port


class SmtpSink:
    """An SMTP server on loopback that keeps every message it receives.

    ``tls`` (an ``ssl.SSLContext`` with the server's certificate) offers STARTTLS and
    requires it before anything else, or with ``implicit_tls`` wraps every connection in
    TLS from the start. ``logins`` (``{user: password}``) requires AUTH (only over TLS).
    ``sessions`` records, per message, whether it came over TLS and who logged in.
    """

    def __init__(self, tls: Any = None, implicit_tls: bool = False, logins: dict[str, str] | None = None) -> None:
        from aiosmtpd.controller import Controller
        from aiosmtpd.smtp import AuthResult

        self.messages: list[email.message.EmailMessage] = []
        self.sessions: list[dict[str, Any]] = []
        self.failed_logins: list[str] = []
        self._lock = threading.Lock()
        self.port = free_port()
        sink = self

        class Handler:
            async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
                msg = email.message_from_bytes(envelope.content, policy=email.policy.default)
                login = session.auth_data if isinstance(session.auth_data, str) else None
                with sink._lock:
                    sink.messages.append(msg)  # type: ignore[arg-type]
                    encrypted = session.ssl is not None or server.transport.get_extra_info("ssl_object") is not None
                    sink.sessions.append({"tls": encrypted, "login": login})
                return "250 OK"

        def authenticator(server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any) -> Any:
            user, password = auth_data.login.decode(), auth_data.password.decode()
            ok = logins is not None and logins.get(user) == password
            if not ok:
                with sink._lock:
                    sink.failed_logins.append(user)
            return AuthResult(success=ok, handled=False, auth_data=user if ok else None)

        options: dict[str, Any] = {}
        if tls is not None and implicit_tls:
            options["ssl_context"] = tls
        elif tls is not None:
            options.update(tls_context=tls, require_starttls=True)
        if logins is not None:
            # an implicit-TLS connection is encrypted from the start; aiosmtpd only knows STARTTLS
            options.update(authenticator=authenticator, auth_required=True, auth_require_tls=not implicit_tls)
        self._controller = Controller(Handler(), hostname="127.0.0.1", port=self.port, **options)
        self._controller.start()

    def received(self) -> list[email.message.EmailMessage]:
        with self._lock:
            return list(self.messages)

    def stop(self) -> None:
        self._controller.stop()


class HttpSink:
    """An HTTP server on loopback that records every JSON POST, by path."""

    def __init__(self) -> None:
        self.posts: list[tuple[str, Any]] = []
        self._lock = threading.Lock()
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                try:
                    document = json.loads(body)
                except ValueError:
                    document = body.decode(errors="replace")
                with sink._lock:
                    sink.posts.append((self.path, document))
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(b'{"ok": true}')

            def log_message(self, *args: Any) -> None:
                pass

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def received(self, path: str) -> list[Any]:
        with self._lock:
            return [doc for p, doc in self.posts if p == path]

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
