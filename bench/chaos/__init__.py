"""The chaos and load suite: a production-shaped deployment (gunicorn workers serving real
WebSockets, a private Redis as Socket.IO message queue and shared state, MariaDB or
PostgreSQL behind a TCP proxy the suite owns, the monitor running as in production), clients
that behave like the shipped ``client.js``, traffic through the app's own ``/send`` route, and
faults that are bounded in time and reverted. Every notification is counted.

``python -m bench.chaos.run --quick`` (``make chaos-quick``) or without ``--quick``
(``make chaos``); the last line printed is one JSON object. Method: ``docs/chaos.md``.
"""
