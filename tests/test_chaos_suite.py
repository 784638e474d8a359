"""The chaos suite's own machinery (bench/chaos): the hosts of the partition run and --check."""

from __future__ import annotations

import subprocess
import sys

import pytest

from bench.chaos import network
from bench.chaos.run import failures, main
from tests.support.services import port_open, wait_until


def _namespaces() -> list[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return [line.split()[0] for line in out.splitlines() if line.startswith(network.PREFIX + "-")]


def _listen(net: network.Network, ns: str, ip: str, port: int) -> subprocess.Popen[bytes]:
    """A TCP listener in namespace ``ns`` that accepts and closes."""
    proc = subprocess.Popen([*net.exec_prefix(ns), sys.executable, "-c",
                             f"import socket\ns=socket.socket(); s.bind(('{ip}', {port})); s.listen(8)\n"
                             "while True: s.accept()[0].close()"])
    wait_until(lambda: port_open(ip, port), timeout=10, message=f"a listener on {ip}:{port}")
    return proc


def test_a_partitioned_host_is_cut_from_the_back_network_and_healed_and_nothing_is_left() -> None:
    why = network.available()
    assert why is None, f"the partition run cannot run here: {why}"
    net = network.Network(2)
    host = net.hosts[0]
    servers: list[subprocess.Popen[bytes]] = []
    try:
        assert sorted(_namespaces()) == sorted(net.hosts + [net.redis_host])
        # a listener on the Redis host; worker host 0 reaches it over the back network
        servers.append(_listen(net, net.redis_host, network.REDIS_IP, 7001))
        # and one on worker host 0's front address, where its clients reach it
        servers.append(_listen(net, host, net.front_ip[host], 7002))

        def reach(timeout: float) -> bool:
            probe = (f"import socket\ntry:\n socket.create_connection(('{network.REDIS_IP}', 7001), {timeout})"
                     "\nexcept OSError: raise SystemExit(1)")
            return subprocess.run([*net.exec_prefix(host), sys.executable, "-c", probe]).returncode == 0

        assert reach(5.0)
        net.partition(host)
        assert not reach(1.0)  # dropped silently: the connection attempt times out
        assert port_open(net.front_ip[host], 7002, timeout=5.0)  # its clients still reach it
        net.heal(host)
        wait_until(lambda: reach(1.0), timeout=10, message="the healed host to reach Redis again")
    finally:
        for server in servers:
            server.kill()
            server.wait(timeout=10)
        net.close()
    assert _namespaces() == []
    links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout
    assert "nech-" not in links


def test_check_fails_on_loss_stuck_duplicates_and_an_incomplete_run() -> None:
    good = {"sent": 10, "lost": 0, "stuck": 0, "visible_duplicates": 0}
    assert failures({"runs": {"baseline": good}}) == []
    found = failures({"runs": {"a": {**good, "lost": 2}, "b": {**good, "stuck": 1},
                               "c": {**good, "visible_duplicates": 3}, "d": {"error": "no namespaces"}}})
    assert found == ["a: lost 2", "b: stuck 1", "c: visible_duplicates 3", "d: did not complete: no namespaces"]


def test_an_unknown_run_is_refused_with_the_names_to_choose_from(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["--runs", "baseline,earthquake"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "unknown run earthquake" in err and "network_partition" in err and "throughput" in err


def test_the_delivery_rate_is_the_middle_of_the_displays_without_the_straggler() -> None:
    from bench.chaos.throughput import delivery_rate

    kept_up = [i / 50 for i in range(500)]  # 50 a second for 10 s
    assert delivery_rate(kept_up) == 50.0
    # the same, but one display a poll brought 20 s later, and one slow start: still 50
    assert delivery_rate(sorted(kept_up + [30.0, -5.0])) == pytest.approx(50.0, rel=0.02)
    # a backlog drained at 20 a second, whatever was offered
    assert delivery_rate([i / 20 for i in range(400)]) == 20.0
    assert delivery_rate([1.0, 2.0]) == 0.0  # too few to tell


def test_load_reports_no_outage_only_for_overload_at_level_3_or_4_in_normal_mode() -> None:
    """What the monitor did while the throughput runs loaded the servers: an overload finding
    is fine; one raised to level 2, another failure type, or a tab told of emergency mode is not."""
    from bench.chaos.run import targets

    def met(*steps: dict) -> bool:
        return targets({"runs": {}, "throughput": {"send_steps": list(steps)}})["load_reports_no_outage"]

    overload = {"level": 3, "failure_type": "overload", "reason": "late rather than lost"}
    assert met({"events": [], "modes_seen": ["normal"]}, {"events": [overload], "modes_seen": ["normal"]})
    assert not met({"events": [{**overload, "level": 2}], "modes_seen": ["normal"]})
    assert not met({"events": [{**overload, "failure_type": "message_delivery"}], "modes_seen": ["normal"]})
    assert not met({"events": [overload], "modes_seen": ["emergency", "normal"]})
