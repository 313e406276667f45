"""The connection: TLS, certificates, will, signals, reconnects, supervisor policy."""

import json
import os
import random
import re
import signal
import socket
import ssl
import subprocess
import threading
import time
from collections import deque

from process import drop_action, make_certstore, wait_until
from relay import Relay

from emulator.broker import Broker, free_port
from lib.certstore import Endpoint
from lib.connection import BACKOFF_CAP, BACKOFF_FLOOR, backoff_delay, describe_error, tls_context
from lib.mqttlib import JOIN_LIMIT, join_packets, mqtt


def test_connects_stays_up_and_exits_0_on_sigterm(daemon_factory, certstore, observer, broker):
    d = daemon_factory("--keepalive=2", "--last-will-topic=dev/status",
                       "--last-will-payload=offline", certstore=certstore)
    d.wait_log(r"connected to localhost:%d" % broker.tls_port)
    # Idle for two keepalive periods: paho's pings are driven by our loop.
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and _pings(broker) < 2:
        time.sleep(0.1)
    assert _pings(broker) >= 2
    assert d.stop() == 0
    observer.wait_topic("dev/status")
    marker = "marker/%d" % os.getpid()
    observer.publish(marker, "x")
    observer.wait_topic(marker)
    assert [m.payload for m in observer.on("dev/status")] == [b"offline"]
    assert "connection lost" not in d.log()


def _pings(broker, clientid="device-1"):
    with open(broker.log) as f:
        return f.read().count("Received PINGREQ from " + clientid)


def test_sigint_exits_0(daemon_factory, certstore):
    d = daemon_factory(certstore=certstore)
    d.wait_log("connected to")
    d.signal(signal.SIGINT)
    assert d.wait_exit() == 0


def test_last_will_after_kill_9(daemon_factory, certstore, observer):
    d = daemon_factory("--last-will-topic=dev/will", "--last-will-payload=crashed",
                       certstore=certstore)
    d.wait_log("connected to")
    d.kill()
    assert observer.wait_topic("dev/will")[0].payload == b"crashed"


def test_wrong_ca_is_refused(daemon_factory, certstore, rogue_pki, broker):
    d = daemon_factory(certstore=certstore, start=False)
    d.args = [a if not a.startswith("--cacert=") else "--cacert=" + rogue_pki.ca_cert
              for a in d.args]
    d.start()
    d.wait_log("certificate verify failed")
    assert "connected to" not in d.log()
    assert d.stop() == 0


def test_untrusted_certificate_rotates_preferred_and_exits(daemon_factory, tmp_path, pki,
                                                          rogue_pki, broker):
    good = pki.issue("device-1")
    bad = rogue_pki.issue("device-1-rogue")
    store = make_certstore(str(tmp_path / "store"), "localhost:%d" % broker.tls_port,
                           [("good",) + good, ("bad",) + bad])
    os.utime(os.path.join(store, "good"), (1000, 1000))
    os.symlink("bad", os.path.join(store, "preferred"))
    d = daemon_factory(certstore=store)
    status = d.wait_exit(timeout=60)
    assert status != 0
    assert os.readlink(os.path.join(store, "preferred")) == "good"
    assert len(re.findall(r"failure \d in a row", d.log())) == 6
    d.start()  # as the supervisor would
    d.wait_log("connected to")


# The cap lowered for the tests that wait out more attempts than the old
# limit of 6: the backoff still grows and jitters, just not to minutes.
FAST_BACKOFF = {"CHARIOTD_BACKOFF_CAP": "2"}


def _two_certificates(tmp_path, pki, endpoint):
    certs = [(name,) + pki.issue("device-1") for name in ("first", "second")]
    store = make_certstore(str(tmp_path / "store"), endpoint, certs)
    os.symlink("first", os.path.join(store, "preferred"))
    return store


def _attempts(d, what):
    return len(re.findall(r"cannot connect to .*%s.* \(offline; attempt \d+ in a row\)" % what,
                          d.log()))


def test_offline_is_waited_out_without_rotating_or_reindexing(daemon_factory, tmp_path, pki):
    port = free_port()  # nothing listens there: connection refused
    store = _two_certificates(tmp_path, pki, "localhost:%d" % port)
    spool = str(tmp_path / "spool")
    for i in range(2000):
        drop_action(spool, "m%04d" % i, json.dumps({"topic": "offline/%d" % i, "payload": i}))
    status = str(tmp_path / "status.json")
    d = daemon_factory("--messages=" + spool, "--status-file=" + status, certstore=store,
                       env=FAST_BACKOFF)
    wait_until(lambda: _attempts(d, "Connection refused") >= 9, timeout=60,
               what="9 refused attempts")
    assert d.proc.poll() is None
    assert os.readlink(os.path.join(store, "preferred")) == "first"
    assert not re.search(r"failure \d+ in a row|rotated", d.log())
    # The spool was indexed once, at start: attempts do not touch it.
    assert d.log().count("2000 message(s) waiting") == 1
    doc = wait_until(lambda: _status(status, "Connection refused"), what="the status file")
    assert doc["connection"]["connected"] is False
    assert doc["connection"]["failures_in_a_row"] == 0
    # The network comes back: the same process connects and sends the backlog.
    up = Broker(str(tmp_path / "back"), pki.ca_cert, *pki.server, tls_port=port).start()
    try:
        d.wait_log(r"connected to localhost:%d" % port, timeout=30)
        wait_until(lambda: not os.listdir(os.path.join(spool, "new")), timeout=60,
                   what="the backlog sent")
    finally:
        up.stop()
    assert d.proc.poll() is None


def _status(path, error):
    try:
        with open(path) as f:
            doc = json.load(f)
    except (OSError, ValueError):
        return None
    last = doc["connection"]["last_error"]
    return doc if last and error in last["error"] else None


def test_a_name_that_does_not_resolve_is_waited_out(daemon_factory, tmp_path, pki):
    store = _two_certificates(tmp_path, pki, "nowhere.invalid:8883")
    d = daemon_factory(certstore=store, env=FAST_BACKOFF)
    wait_until(lambda: _attempts(d, "nowhere.invalid") >= 8, timeout=60,
               what="8 unresolved attempts")
    assert d.proc.poll() is None
    assert os.readlink(os.path.join(store, "preferred")) == "first"
    assert "in a row)" in d.log() and not re.search(r"failure \d+ in a row", d.log())
    assert d.stop() == 0


def test_a_reset_before_tls_completes_is_waited_out(daemon_factory, tmp_path, pki):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)

    def hang_up():  # accept and close at once, before any TLS
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            conn.close()

    threading.Thread(target=hang_up, daemon=True).start()
    try:
        store = _two_certificates(tmp_path, pki, "localhost:%d" % listener.getsockname()[1])
        d = daemon_factory(certstore=store, env=FAST_BACKOFF)
        wait_until(lambda: _attempts(d, "") >= 8 or d.proc.poll() is not None, timeout=60,
                   what="8 attempts")
        assert d.proc.poll() is None, d.log()
        assert os.readlink(os.path.join(store, "preferred")) == "first"
        assert not re.search(r"failure \d+ in a row", d.log())
        assert d.stop() == 0
    finally:
        listener.close()


def test_a_tls_error_without_a_reason_is_described():
    # Python 3.9 reports a close mid-handshake as SSLZeroReturnError, reason None
    closed = ssl.SSLZeroReturnError(6, "TLS/SSL connection has been closed (EOF)")
    assert describe_error(closed) == "TLS: connection closed during the handshake"


def test_unreachable_network_is_waited_out(daemon_factory, tmp_path, pki):
    # A network namespace of our own with nothing but lo: no route anywhere.
    ns = "cdo-%d" % os.getpid()
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        subprocess.run(["ip", "-n", ns, "link", "set", "lo", "up"], check=True)
        store = _two_certificates(tmp_path, pki, "192.0.2.1:8883")
        d = daemon_factory(certstore=store, env=FAST_BACKOFF, start=False)
        d.command_prefix = ("ip", "netns", "exec", ns)
        d.start()
        wait_until(lambda: _attempts(d, "Network is unreachable") >= 8, timeout=60,
                   what="8 unreachable attempts")
        assert d.proc.poll() is None
        assert os.readlink(os.path.join(store, "preferred")) == "first"
        assert d.stop() == 0
    finally:
        subprocess.run(["ip", "netns", "delete", ns], check=False)


def test_connack_not_authorised_rotates_preferred_and_exits(daemon_factory, tmp_path, pki):
    refusing = Broker(str(tmp_path / "refusing"), pki.ca_cert, *pki.server)
    with open(refusing.conf) as f:
        conf = f.read()
    # No user name from the certificate and no anonymous clients: CONNACK 5.
    with open(refusing.conf, "w") as f:
        f.write(conf.replace("allow_anonymous true", "allow_anonymous false")
                .replace("use_identity_as_username true\n", ""))
    refusing.start()
    try:
        store = _two_certificates(tmp_path, pki, "localhost:%d" % refusing.tls_port)
        d = daemon_factory(certstore=store, env=FAST_BACKOFF)
        assert d.wait_exit(timeout=60) != 0
    finally:
        refusing.stop()
    assert os.readlink(os.path.join(store, "preferred")) == "second"
    assert len(re.findall(r"connection refused: .*[Nn]ot authori[sz]ed.* \(failure \d in a row\)",
                          d.log())) == 6


def test_no_certificate_waits_then_exits_nonzero(daemon_factory, tmp_path, broker):
    store = make_certstore(str(tmp_path / "empty"), "localhost:%d" % broker.tls_port, [])
    started = time.monotonic()
    d = daemon_factory(certstore=store)
    d.wait_log("no usable certificate")
    assert d.wait_exit(timeout=30) != 0
    assert time.monotonic() - started >= 9  # the supervisor must not spin


def test_unreadable_endpoint_is_logged(daemon_factory, tmp_path, pki):
    cert, key = pki.issue("device-1")
    store = make_certstore(str(tmp_path / "store"), "x", [("device-1", cert, key)])
    os.unlink(os.path.join(store, "endpoint.txt"))
    d = daemon_factory(certstore=store)
    d.wait_log(r"cannot read .*endpoint\.txt")
    d.kill()


def test_reconnects_after_broker_restart(daemon_factory, certstore, broker):
    d = daemon_factory(certstore=certstore)
    d.wait_log("connected to")
    broker.restart()
    d.wait_log("connection to .* lost")
    d.wait_log(r"connected to[^\n]*\n(.*\n)*INFO: connected to", timeout=30)
    assert d.stop() == 0


def test_a_keepalive_shorter_than_the_handshake_still_connects(daemon_factory, tmp_path, pki,
                                                               broker, observer):
    """A link so slow that the TLS handshake and the CONNECT round trip take
    longer than --keepalive (0.7 s each way: about 3 s against a 2 s
    keepalive): paho's keepalive check must wait for CONNACK, or it closes
    every attempt as timed out and the device never connects."""
    relay = Relay(("127.0.0.1", 0), ("localhost", broker.tls_port), latency=0.7).serve()
    cert, key = pki.issue("device-slow")
    store = make_certstore(str(tmp_path / "slow-certstore"), "localhost:%d" % relay.address[1],
                           [("device-slow", cert, key)])
    messages = str(tmp_path / "msgs")
    drop_action(messages, "m1", json.dumps({"topic": "slow/link", "payload": "through"}))
    d = daemon_factory("--keepalive=2", "--messages=" + messages, certstore=store,
                       clientid="device-slow")
    d.wait_log(r"connected to localhost:%d\n" % relay.address[1], timeout=30)
    assert observer.wait_topic("slow/link")[0].payload == b"through"
    # Kept up by pings across a few keepalive periods, over the same link.
    wait_until(lambda: _pings(broker, "device-slow") >= 2, 15, "two PINGREQs")
    assert "offline" not in d.log() and "lost" not in d.log(), d.log()
    assert relay.connections == 1


def test_alpn_on_port_443(pki):
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(*pki.server)
    server_ctx.set_alpn_protocols(["x-amzn-mqtt-ca", "mqtt"])
    seen = []
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)

        def serve():
            conn, _ = listener.accept()
            with server_ctx.wrap_socket(conn, server_side=True) as tls:
                seen.append(tls.selected_alpn_protocol())

        t = threading.Thread(target=serve)
        t.start()
        ctx = tls_context(pki.ca_cert, *pki.issue("device-1"), alpn=Endpoint("localhost", 443).alpn)
        with socket.create_connection(listener.getsockname()) as raw, \
                ctx.wrap_socket(raw, server_hostname="localhost") as tls:
            client_alpn = tls.selected_alpn_protocol()
        t.join(5)
    assert seen == ["x-amzn-mqtt-ca"] and client_alpn == "x-amzn-mqtt-ca"
    assert Endpoint("localhost", 8883).alpn is None


def test_tls_context_checks_hostname(pki):
    ctx = tls_context(pki.ca_cert, *pki.issue("device-1"))
    assert ctx.check_hostname and ctx.verify_mode == ssl.CERT_REQUIRED


def test_backoff_is_full_jitter_within_bounds():
    rng = random.Random(7)
    for failures in range(12):
        ceiling = min(BACKOFF_CAP, max(4, 0.5 * 2 ** failures))
        samples = [backoff_delay(failures, rng) for _ in range(500)]
        assert all(BACKOFF_FLOOR <= s <= ceiling for s in samples)
        # Spread from the first retry: a fleet dropped at once never retries at once.
        assert max(samples) - min(samples) > 0.8 * (ceiling - BACKOFF_FLOOR)
        if ceiling >= 8:
            # Full jitter: spread over the whole range, not bunched at the top.
            assert min(samples) < ceiling * 0.2 and max(samples) > ceiling * 0.8


def test_backoff_stays_at_the_cap_after_days_offline():
    rng = random.Random(3)
    assert all(BACKOFF_FLOOR <= backoff_delay(n, rng) <= BACKOFF_CAP for n in (40, 1100, 10**6))


def _packet(command, mid, qos, data, pos=0):
    # The shape of an entry of paho's _out_packet queue (1.6 and 2.x).
    return {"command": command, "mid": mid, "qos": qos, "pos": pos,
            "to_process": len(data) - pos, "packet": data, "info": "info-%d" % mid}


def _publish(mid, qos=1, size=10):
    return _packet(mqtt.PUBLISH | (qos << 1), mid, qos, bytes([mid % 256]) * size)


def test_queued_qos1_publishes_are_written_as_one():
    queue = deque([_publish(1), _publish(2), _publish(3)])
    join_packets(queue, keep_head=False)
    assert len(queue) == 1
    joined = queue[0]
    assert joined["packet"] == b"\x01" * 10 + b"\x02" * 10 + b"\x03" * 10
    assert (joined["pos"], joined["to_process"]) == (0, 30)
    assert (joined["mid"], joined["qos"], joined["info"]) == (3, 1, "info-3")


def test_a_packet_paho_acts_on_when_written_ends_a_run():
    disconnect = _packet(mqtt.DISCONNECT, 0, 0, b"\xe0\x00")
    queue = deque([_publish(1), _publish(2, qos=0), _publish(3), _publish(4, qos=0),
                   _publish(5), disconnect])
    join_packets(queue, keep_head=False)
    # Each QoS 0 publish and the DISCONNECT still come last in their write, so
    # paho reports each publish written, and closes, only once all of it is.
    assert [(p["mid"], p["qos"], len(p["packet"])) for p in queue] == \
        [(2, 0, 20), (4, 0, 20), (0, 0, 12)]
    assert queue[2]["command"] == mqtt.DISCONNECT


def test_an_unfinished_write_is_retried_unchanged():
    head = _publish(1, size=100)
    head["pos"], head["to_process"] = 40, 60
    queue = deque([head, _publish(2), _publish(3)])
    join_packets(queue, keep_head=True)
    assert queue[0] is head and head["pos"] == 40
    assert [p["mid"] for p in queue] == [1, 3]


def test_an_unwritten_remainder_is_joined_from_its_position():
    head = _publish(1, size=100)
    head["pos"], head["to_process"] = 40, 60
    queue = deque([head, _publish(2)])
    join_packets(queue, keep_head=False)
    assert queue[0]["packet"] == b"\x01" * 60 + b"\x02" * 10


def test_joined_writes_stay_under_the_limit():
    size = JOIN_LIMIT // 3
    queue = deque(_publish(mid, size=size) for mid in range(1, 8))
    join_packets(queue, keep_head=False)
    assert [len(p["packet"]) for p in queue] == [3 * size, 3 * size, size]
    assert all(p["to_process"] == len(p["packet"]) for p in queue)
