"""A message the endpoint refuses by closing the connection: found among
those in flight, given up to failed/ after 3 disconnects that each followed
sending it alone, while the rest of the spool and the shadows carry on.

Two stand-ins for AWS: mosquitto with `max_packet_size 4096` closes the
connection of a client that publishes a bigger packet; the emulator's
policy gateway closes it on a publish to a forbidden topic or over 128 KiB."""

import json
import os
import ssl
import threading

import pytest
from messagehelpers import drop, listing, spool, wait_empty, wait_failed
from observer import Observer
from process import make_certstore, wait_until
from shadowhelpers import THING, json_service, read_file

from emulator.broker import Broker
from emulator.cloud import Emulator
from emulator.policy import PolicyGateway


@pytest.fixture(scope="module")
def small_broker(pki, tmp_path_factory):
    b = Broker(str(tmp_path_factory.mktemp("small-broker")), pki.ca_cert, *pki.server,
               max_packet=4096).start()
    yield b
    b.stop()


def small_certstore(tmp_path, pki, port):
    cert, key = pki.issue("device-1")
    return make_certstore(str(tmp_path / "certstore"), "localhost:%d" % port,
                          [("device-1", cert, key)])


def ids(observer, prefix):
    """The ids delivered (at least once: a PUBACK lost with the connection means twice)."""
    return sorted({m.json()["id"] for m in observer.messages if m.topic.startswith(prefix)})


def refusal_lines(log, path):
    return [ln for ln in log.splitlines() if path + ":" in ln]


def test_an_oversized_message_goes_to_failed_and_the_rest_and_the_shadow_go_on(
        tmp_path, pki, small_broker, daemon_factory):
    observer = Observer(small_broker.plain_port)
    emulator = Emulator(small_broker.plain_port, workdir=str(tmp_path / "emulator"),
                        tick_interval=0.2).start()
    try:
        outfile = str(tmp_path / "console.json")
        json_service(tmp_path / "services", "console", key="console", outfile=outfile,
                     outformat="JSON", notifycmd="true")
        d = spool(tmp_path)
        # A backlog: several messages in flight at once when the big one goes out.
        for i in range(6):
            drop(d, "a%d" % i, {"topic": "ok/a", "payload": {"id": i}})
        drop(d, "b-big", {"topic": "big/one", "payload": {"id": 99, "blob": "x" * 8192}})
        for i in range(6, 12):
            drop(d, "c%d" % i, {"topic": "ok/c", "payload": {"id": i}})
        store = small_certstore(tmp_path, pki, small_broker.tls_port)
        # Unpaced, so that the whole backlog goes out in one write and several
        # messages are in flight when the broker hangs up.
        daemon = daemon_factory("--messages=" + d, "--publish-rate=0", "--publish-bytes-rate=0",
                                "--services=%s:%s" % (
            THING, tmp_path / "services"), certstore=store)
        wait_failed(d, "b-big", timeout=30)
        wait_empty(d)
        observer.wait_for(lambda ms: ids(observer, "ok/") == list(range(12)),
                          what="every other message")
        assert observer.on("big/one") == []
        assert listing(d, "failed") == ["b-big"]
        # The shadow still syncs on the same connection.
        emulator.set_desired(THING, {"console": {"baud": 9600}})
        wait_until(lambda: os.path.exists(outfile) and
                   json.loads(read_file(outfile)) == {"baud": 9600}, what="the outfile")
        log = daemon.log()
        path = os.path.join(d, "new", "b-big")
        (line,) = refusal_lines(log, path)
        assert "closed the connection each of the 3 times it was sent alone" in line
        assert "(topic big/one)" in line and "moved to failed/" in line
        # One disconnect with everything in flight, then 3 with the big one alone:
        # 5 CONNECTs in all, and no certificate blamed for them.
        assert log.count("connected to") == 5, log
        assert log.count("connection to") == 4
        assert "sending them again one at a time" in log
        assert "rotated" not in log and "failure" not in log
        assert daemon.proc.poll() is None
    finally:
        emulator.stop()
        observer.close()


def test_a_refused_message_alone_is_given_up_after_three_disconnects(
        tmp_path, pki, small_broker, daemon_factory):
    observer = Observer(small_broker.plain_port)
    try:
        d = spool(tmp_path)
        store = small_certstore(tmp_path, pki, small_broker.tls_port)
        daemon = daemon_factory("--messages=" + d, certstore=store)
        daemon.wait_log("connected to")
        drop(d, "big", {"topic": "big/alone", "payload": "y" * 8192, "qos": 1})
        wait_failed(d, "big", timeout=30)
        drop(d, "after", {"topic": "ok/after", "payload": {"id": 1}})
        observer.wait_topic("ok/after")
        log = daemon.log()
        assert len(refusal_lines(log, os.path.join(d, "new", "big"))) == 1
        assert log.count("connected to") == 4  # the first, and one after each disconnect
        assert "one at a time" not in log  # it was alone from the start
        assert observer.on("big/alone") == []
    finally:
        observer.close()


@pytest.fixture
def gateway(broker, pki):
    with PolicyGateway(broker.plain_port, pki.ca_cert, *pki.server,
                       forbidden=["forbidden/#", "$aws/things/+/shadow/name/secret/#"]) as g:
        yield g


def test_a_topic_the_policy_forbids_goes_to_failed_through_the_emulator(
        tmp_path, pki, gateway, daemon_factory, observer):
    d = spool(tmp_path)
    store = small_certstore(tmp_path, pki, gateway.port)
    daemon = daemon_factory("--messages=" + d, "--publish-rate=0", "--publish-bytes-rate=0",
                            certstore=store)
    daemon.wait_log("connected to")
    for i in range(4):
        drop(d, "a%d" % i, {"topic": "ok/a", "payload": {"id": i}})
    drop(d, "b-forbidden", {"topic": "forbidden/x", "payload": {"id": 99}})
    for i in range(4, 8):
        drop(d, "c%d" % i, {"topic": "ok/c", "payload": {"id": i}})
    wait_failed(d, "b-forbidden", timeout=30)
    wait_empty(d)
    observer.wait_for(lambda ms: ids(observer, "ok/") == list(range(8)),
                      what="every other message")
    assert observer.on("forbidden/x") == []
    log = daemon.log()
    (line,) = refusal_lines(log, os.path.join(d, "new", "b-forbidden"))
    assert "(topic forbidden/x)" in line and "moved to failed/" in line
    refused = [topic for _client, topic, _reason in gateway.refusals]
    assert refused == ["forbidden/x"] * len(refused) and 3 <= len(refused) <= 4
    assert gateway.connects == len(refused) + 1 <= 5
    assert "rotated" not in log and daemon.proc.poll() is None


def tls_client(pki, port):
    """A test's own device client (paho) through the gateway; returns (client, closed)."""
    from observer import new_client
    cert, key = pki.issue("device-2")
    client = new_client("device-2")
    client.tls_set(ca_certs=pki.ca_cert, certfile=cert, keyfile=key,
                   tls_version=ssl.PROTOCOL_TLS_CLIENT)
    connected, closed = threading.Event(), threading.Event()
    client.on_connect = lambda *a: connected.set()
    client.on_disconnect = lambda *a: closed.set()
    client.connect("localhost", port, keepalive=60)
    client.loop_start()
    assert connected.wait(10)
    return client, closed


@pytest.mark.parametrize("topic,size,reason", [
    ("forbidden/deep/x", 10, "forbidden by the policy (forbidden/#)"),
    ("$aws/things/d/shadow/name/secret/update", 10, "forbidden by the policy"),
    ("ok/big", 128 * 1024 + 1, "payload of 131073 bytes, over the 131072 byte limit"),
])
def test_the_gateway_disconnects_as_aws_does_and_passes_the_rest(pki, gateway, observer, topic,
                                                                  size, reason):
    client, closed = tls_client(pki, gateway.port)
    try:
        client.publish("ok/fine", b"x" * (128 * 1024), qos=1).wait_for_publish(10)
        observer.wait_topic("ok/fine")
        assert not closed.is_set()
        client.publish(topic, b"y" * size, qos=1)
        assert closed.wait(10), "the gateway did not close the connection"
        assert gateway.refusals == [("device-2", topic, gateway.refusals[0][2])]
        assert gateway.refusals[0][2].startswith(reason)
        assert observer.on(topic) == []
    finally:
        client.loop_stop()
        client.disconnect()
