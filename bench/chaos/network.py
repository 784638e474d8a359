"""Hosts in network namespaces, for the partition run (root only; needs iproute2).

Three "hosts" are namespaces of their own: two worker hosts (``nechaos-h0``, ``nechaos-h1``)
and a Redis host (``nechaos-redis``). Two bridges in the root namespace join them:

- **front** (10.77.1.0/24): the worker hosts and the root namespace, where the clients and
  the sender run (10.77.1.1). Clients reach each host here.
- **back** (10.77.2.0/24): the worker hosts, the Redis host and the root namespace (10.77.2.1),
  where the suite's database proxy listens. Workers reach Redis and the database here only.

:meth:`Network.partition` sets a worker host's back link down at the bridge (the host's side
loses its carrier; packets to Redis and the database are dropped silently, as on a broken
switch port) and :meth:`Network.heal` sets it up again; the host's front link stays up, so its
clients keep their connections to it.
"""

from __future__ import annotations

import shutil
import subprocess

PREFIX = "nechaos"
FRONT, BACK = "nech-front", "nech-back"
FRONT_NET, BACK_NET = "10.77.1", "10.77.2"
ROOT_FRONT_IP, ROOT_BACK_IP = f"{FRONT_NET}.1", f"{BACK_NET}.1"
REDIS_IP = f"{BACK_NET}.100"


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(["ip", *args], capture_output=True, text=True)
    if check and done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)} failed: {done.stderr.strip()}")
    return done


def available() -> str | None:
    """Why namespaces cannot be made here (None: they can)."""
    if shutil.which("ip") is None:
        return "iproute2 (the ip command) is not installed"
    probe = f"{PREFIX}-probe"
    done = _ip("netns", "add", probe, check=False)
    if done.returncode != 0:
        return f"ip netns add failed ({done.stderr.strip() or 'not root?'})"
    _ip("netns", "del", probe, check=False)
    return None


def cleanup() -> None:
    """Remove every namespace, bridge and veth this module makes (leftovers of a crashed run too)."""
    for line in _ip("netns", "list", check=False).stdout.splitlines():
        name = line.split()[0] if line.split() else ""
        if name.startswith(PREFIX + "-"):
            # processes left in it would keep their sockets; end them first
            pids = _ip("netns", "pids", name, check=False).stdout.split()
            for pid in pids:
                subprocess.run(["kill", "-9", pid], capture_output=True)
            _ip("netns", "del", name, check=False)
    for line in _ip("-o", "link", "show", check=False).stdout.splitlines():
        parts = line.split(":")
        if len(parts) > 1:
            name = parts[1].strip().split("@")[0]
            if name.startswith("nech-"):
                _ip("link", "del", name, check=False)


class Network:
    """The namespaces, veth pairs and bridges; ``hosts`` worker hosts and one Redis host."""

    def __init__(self, hosts: int = 2) -> None:
        self.hosts = [f"{PREFIX}-h{i}" for i in range(hosts)]
        self.redis_host = f"{PREFIX}-redis"
        self.front_ip = {h: f"{FRONT_NET}.{11 + i}" for i, h in enumerate(self.hosts)}
        self.back_ip = {h: f"{BACK_NET}.{11 + i}" for i, h in enumerate(self.hosts)}
        self.back_ip[self.redis_host] = REDIS_IP
        cleanup()
        try:
            self._build()
        except BaseException:
            cleanup()
            raise

    def _bridge(self, name: str, ip: str) -> None:
        _ip("link", "add", name, "type", "bridge")
        _ip("addr", "add", f"{ip}/24", "dev", name)
        _ip("link", "set", name, "up")

    def _attach(self, ns: str, bridge: str, outer: str, ip: str) -> None:
        """A veth pair: ``outer`` on the bridge in the root namespace, ``eth-…`` inside ``ns``."""
        inner = outer + "i"
        _ip("link", "add", outer, "type", "veth", "peer", "name", inner)
        _ip("link", "set", inner, "netns", ns)
        _ip("link", "set", outer, "master", bridge)
        _ip("link", "set", outer, "up")
        _ip("-n", ns, "addr", "add", f"{ip}/24", "dev", inner)
        _ip("-n", ns, "link", "set", inner, "up")

    def _build(self) -> None:
        self._bridge(FRONT, ROOT_FRONT_IP)
        self._bridge(BACK, ROOT_BACK_IP)
        for ns in self.hosts + [self.redis_host]:
            _ip("netns", "add", ns)
            _ip("-n", ns, "link", "set", "lo", "up")
        for i, host in enumerate(self.hosts):
            self._attach(host, FRONT, f"nech-f{i}", self.front_ip[host])
            self._attach(host, BACK, f"nech-b{i}", self.back_ip[host])
        self._attach(self.redis_host, BACK, "nech-br", REDIS_IP)

    def exec_prefix(self, ns: str) -> list[str]:
        return ["ip", "netns", "exec", ns]

    def partition(self, host: str) -> None:
        """Cut ``host`` off from Redis and the database (its back link down); clients still reach it."""
        _ip("link", "set", f"nech-b{self.hosts.index(host)}", "down")

    def heal(self, host: str) -> None:
        _ip("link", "set", f"nech-b{self.hosts.index(host)}", "up")

    def close(self) -> None:
        cleanup()
