"""Faults on real links: the broker and the daemon in network namespaces of
their own joined by a veth pair (faultnet.Net). The link is cut mid-backlog
and restored; the broker is black-holed (no RST, no ICMP: only keepalive can
tell); the link is 500 ms and 64 kbit/s through tests/relay.py. Each time,
after recovery: every message delivered at least once, each config notified
once, reported == the outfile == what was asked and nothing left in desired,
and the same daemon process throughout."""

import json
import os
import signal

import pytest
from messagehelpers import backlog, ids, listing, spool, wait_empty
from observer import Observer
from process import make_certstore, wait_until
from shadowhelpers import THING, json_service, read_file, shadow_state

from emulator.cloud import Emulator

LOST = r"connection to \S+ lost"
RETRY_FAILED = r"(cannot connect to|no CONNACK from) \S+"


@pytest.fixture
def cloud(net, pki, tmp_path):
    """(emulator, observer) on the broker's plain port, from the test's namespace."""
    emu = Emulator(net.PLAIN_PORT, host=net.broker_host_ip, ca=pki,
                   workdir=str(tmp_path / "emulator"), tick_interval=0.2)
    emu.start()
    obs = Observer(net.PLAIN_PORT, host=net.broker_host_ip)
    try:
        yield emu, obs
    finally:
        obs.close()
        emu.stop()


class Device:
    """The daemon in the device's namespace with a service and a backlog."""

    def __init__(self, net, pki, tmp_path, daemon_factory, count, port=None, options=()):
        self.tmp = tmp_path
        cert, key = pki.issue("device-1")
        store = make_certstore(str(tmp_path / "certstore"),
                               "%s:%d" % (net.broker_ip, port or net.TLS_PORT),
                               [("device-1", cert, key)])
        self.outfile = str(tmp_path / "svc.json")
        self.notified = str(tmp_path / "notified")
        json_service(tmp_path / "services", "svc", key="svc", outfile=self.outfile,
                     outformat="JSON", notifycmd="cat >> %s; echo >> %s"
                     % (self.notified, self.notified))
        self.msgs = spool(tmp_path)
        self.count = count
        backlog(self.msgs, "net/", count)
        self.d = daemon_factory("--services=%s:%s" % (THING, tmp_path / "services"),
                                "--messages=" + self.msgs, *options, certstore=store,
                                start=False)
        self.d.command_prefix = net.daemon_command()
        self.d.start()
        self.pid = self.d.proc.pid

    def notifications(self):
        if not os.path.exists(self.notified):
            return []
        return [json.loads(line) for line in read_file(self.notified).splitlines() if line]

    def assert_recovered(self, emulator, observer, want, timeout=60):
        """Everything delivered, shadows consistent, each config notified once, same process."""
        observer.wait_for(lambda ms: ids(observer, "net/") == set(range(self.count)),
                          timeout=timeout, what="every message after the recovery")
        wait_empty(self.msgs, timeout)
        assert listing(self.msgs, "failed") == []
        wait_until(lambda: (shadow_state(emulator) or {}).get("reported", {}).get("svc") == want
                   and "svc" not in shadow_state(emulator).get("desired", {}), timeout,
                   "reported svc == %r, desired cleared: %r" % (want, shadow_state(emulator)))
        assert json.loads(read_file(self.outfile)) == want
        wait_until(lambda: self.notifications() and self.notifications()[-1] == want,
                   what="the final config notified")
        seen = self.notifications()
        assert len(seen) == len({json.dumps(c, sort_keys=True) for c in seen}), \
            "a config notified twice: %r" % seen
        assert self.d.proc.poll() is None and self.d.proc.pid == self.pid
        assert self.d.stop() == 0


def test_link_cut_mid_backlog_and_restored(net, cloud, pki, tmp_path, daemon_factory):
    emulator, observer = cloud
    dev = Device(net, pki, tmp_path, daemon_factory, 300,
                 options=("--publish-rate=50", "--keepalive=2"))
    dev.d.wait_log(r"shadow \S+: synced")
    emulator.set_desired(THING, {"svc": {"before": 1}})
    observer.wait_for(lambda ms: len(ids(observer, "net/")) >= 40, timeout=20,
                      what="40 messages before the cut")
    net.link(False)
    emulator.set_desired(THING, {"svc": {"during": 2}})
    dev.d.wait_log(LOST, timeout=20)
    dev.d.wait_log(RETRY_FAILED, timeout=40)
    assert len(ids(observer, "net/")) < 300, "the backlog ran out before the cut"
    net.link(True)
    dev.d.wait_log(r"connected to .*\n(.*\n)*.*connected to", timeout=60)
    dev.assert_recovered(emulator, observer, {"before": 1, "during": 2})


def test_broker_black_holed_then_back(net, cloud, pki, tmp_path, daemon_factory):
    emulator, observer = cloud
    dev = Device(net, pki, tmp_path, daemon_factory, 300,
                 options=("--publish-rate=50", "--keepalive=2"))
    dev.d.wait_log(r"shadow \S+: synced")
    observer.wait_for(lambda ms: len(ids(observer, "net/")) >= 40, timeout=20,
                      what="40 messages before the black hole")
    net.blackhole(True)
    emulator.set_desired(THING, {"svc": {"during": 2}})
    # No RST, no ICMP: only the keepalive can tell the connection is gone.
    dev.d.wait_log(LOST, timeout=20)
    dev.d.wait_log(RETRY_FAILED, timeout=60)
    assert len(ids(observer, "net/")) < 300, "the backlog ran out before the black hole"
    net.blackhole(False)
    dev.d.wait_log(r"connected to .*\n(.*\n)*.*connected to", timeout=90)
    dev.assert_recovered(emulator, observer, {"during": 2})


def test_a_500_ms_64_kbit_link(net, cloud, pki, tmp_path, daemon_factory):
    emulator, observer = cloud
    relay = net.start_relay(latency=0.5, rate=8000)
    dev = Device(net, pki, tmp_path, daemon_factory, 60, port=net.RELAY_PORT)
    dev.d.wait_log(r"shadow \S+: synced", timeout=60)
    emulator.set_desired(THING, {"svc": {"slow": 1}})
    emulator.set_desired(THING, {"svc": {"slower": 2}})
    dev.assert_recovered(emulator, observer, {"slow": 1, "slower": 2}, timeout=120)
    assert relay.poll() is None


@pytest.mark.soak
def test_a_slow_link_that_stalls(net, cloud, pki, tmp_path, daemon_factory):
    """The relay holds every byte (nothing closed, as a dead radio link does)
    until the daemon has given the connection up and failed to reconnect."""
    emulator, observer = cloud
    relay = net.start_relay(latency=0.5, rate=8000)
    # A keepalive short enough to notice the stall soon, long enough for a
    # PINGREQ's round trip behind this link's queue.
    dev = Device(net, pki, tmp_path, daemon_factory, 200, port=net.RELAY_PORT,
                 options=("--keepalive=5",))
    dev.d.wait_log(r"shadow \S+: synced", timeout=60)
    observer.wait_for(lambda ms: len(ids(observer, "net/")) >= 20, timeout=60,
                      what="20 messages before the stall")
    relay.send_signal(signal.SIGUSR1)
    emulator.set_desired(THING, {"svc": {"stalled": 1}})
    dev.d.wait_log(LOST, timeout=20)
    dev.d.wait_log(RETRY_FAILED, timeout=60)
    assert len(ids(observer, "net/")) < 200, "the backlog ran out before the stall"
    relay.send_signal(signal.SIGUSR2)
    dev.assert_recovered(emulator, observer, {"stalled": 1}, timeout=120)
