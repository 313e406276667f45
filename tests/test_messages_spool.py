"""What mosquitto cannot provoke: paho refusing a publish (the spool's
retries), and QoS 0 packets paho drops unwritten when the connection is lost
(the publisher sends them again)."""

import json
import logging
import os
import tempfile
import types

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lib.messages import Spool
from lib.options import MessageDir
from lib.publisher import Publisher


class FakeConnection:
    def __init__(self):
        self.connected = True
        self.up, self.down, self.sent = [], [], []

    def on_up(self, fn):
        self.up.append(fn)

    def on_down(self, fn):
        self.down.append(fn)

    def publish(self, topic, payload, qos, done):
        if not self.connected:
            return False
        self.sent.append((topic, payload, qos, done))
        return True

    def forget_in_flight(self):
        self.forgotten = len(self.sent)

    def lose(self):
        self.connected = False
        for fn in self.down:
            fn()

    def regain(self):
        self.connected = True
        for fn in self.up:
            fn()


class FakePublisher:
    """Keeps every done callback for the test to answer."""

    def __init__(self):
        self.pending = []
        self.published = []
        self.refusals = []

    def publish(self, topic, payload, qos, done, refused=None):
        self.pending.append((topic, done))
        self.refusals.append(refused)
        self.published.append(topic)


class FakeWatcher:
    def watch(self, path, callback):
        self.callback = callback


def spool_settings(path, **overrides):
    md = MessageDir(path)
    values = dict(concurrency=10, retries=2, keep_failed=10, jam_timeout=300.0, order="lexical",
                  topic_prefix="", topic_suffix="")
    values.update(overrides)
    for key, value in values.items():
        setattr(md, key, value)
    return md


def test_refused_publish_is_retried_then_failed(tmp_path, caplog):
    path = str(tmp_path / "msgs")
    os.makedirs(os.path.join(path, "new"))
    with open(os.path.join(path, "new", "m"), "w") as f:
        json.dump({"topic": "t/refused", "payload": 1}, f)
    connection, publisher = FakeConnection(), FakePublisher()
    daemon = types.SimpleNamespace(loop=None, connection=connection, publisher=publisher,
                                   status_changed=lambda: None,
                                   watcher=FakeWatcher(), exit=None)
    caplog.set_level(logging.INFO, logger="chariotd")
    Spool(daemon, spool_settings(path, retries=2))
    connection.regain()
    for attempt in range(3):
        assert len(publisher.pending) == attempt + 1
        assert os.listdir(os.path.join(path, "new")) == ["m"]
        publisher.pending[-1][1](False)
    assert len(publisher.pending) == 3
    assert os.listdir(os.path.join(path, "failed")) == ["m"]
    messages = [r.getMessage() for r in caplog.records]
    assert sum("retry" in m for m in messages) == 2
    assert any(m.endswith("new/m: publish to t/refused failed 3 times; moved to failed/")
               for m in messages)


def test_unwritten_qos0_goes_out_again_after_a_reconnect():
    connection = FakeConnection()
    publisher = Publisher(loop=None, connection=connection, rate=0, bytes_rate=0)
    results = []
    publisher.publish("q0", b"a", 0, lambda ok: results.append(("q0", ok)))
    publisher.publish("q1", b"b", 1, lambda ok: results.append(("q1", ok)))
    assert [s[0] for s in connection.sent] == ["q0", "q1"]
    lost_done = connection.sent[0][3]
    connection.lose()  # paho drops the unwritten QoS 0 packet; the publisher, paho's QoS 1 copy
    assert connection.forgotten == 2
    connection.regain()
    # q1 was the one message sent and unacknowledged: a suspect, sent alone after q0.
    assert [s[0] for s in connection.sent] == ["q0", "q1", "q0"]
    lost_done(True)  # a stale answer for the dropped copy changes nothing
    assert results == []
    connection.sent[2][3](True)
    assert results == [("q0", True)]
    assert [s[0] for s in connection.sent] == ["q0", "q1", "q0", "q1"]
    assert len(publisher) == 0


any_text = st.text(alphabet=st.characters(blacklist_categories=()), max_size=8)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | any_text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(any_text, inner, max_size=3),
    max_leaves=8)
topics = st.sampled_from(["a/b", "$aws/rules/r/a/b/c/d/e/f/g/h", "x" * 300])
optional_keys = {
    "qos": json_values | st.sampled_from([0, 1]),
    "compress": json_values | st.sampled_from(["gzip", "deflate"]),
    "priority": json_values,
    "priority_slot": json_values,
}
documents = (
    st.fixed_dictionaries({"topic": topics, "payload": json_values}, optional=optional_keys) |
    st.fixed_dictionaries({}, optional=dict(optional_keys, topic=json_values | topics,
                                            payload=json_values)))
files = st.lists(documents.map(lambda d: json.dumps(d).encode()) | st.binary(max_size=20),
                 max_size=8)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(contents=files)
def test_any_file_is_sent_or_failed_and_the_spool_carries_on(contents):
    path = tempfile.mkdtemp()
    os.makedirs(os.path.join(path, "new"))
    contents = contents + [b"[" * 100000]  # deeper than the JSON parser goes
    for i, data in enumerate(contents):
        with open(os.path.join(path, "new", "f%d" % i), "wb") as f:
            f.write(data)
    connection, publisher = FakeConnection(), FakePublisher()
    daemon = types.SimpleNamespace(loop=None, connection=connection, publisher=publisher,
                                   status_changed=lambda: None,
                                   watcher=FakeWatcher(), exit=None)
    Spool(daemon, spool_settings(path))
    connection.regain()
    while publisher.pending:
        publisher.pending.pop(0)[1](True)
    assert os.listdir(os.path.join(path, "new")) == []
    failed = os.listdir(os.path.join(path, "failed"))
    assert len(failed) + len(publisher.published) == len(contents)


def test_message_the_generator_environment_cannot_carry_fails(tmp_path, caplog):
    path = str(tmp_path / "msgs")
    os.makedirs(os.path.join(path, "new"))
    with open(os.path.join(path, "new", "m"), "w") as f:
        f.write('{"topic": "a/\\ud800", "payload": 1}')  # a lone surrogate
    connection, publisher = FakeConnection(), FakePublisher()
    daemon = types.SimpleNamespace(loop=None, connection=connection, publisher=publisher,
                                   status_changed=lambda: None,
                                   watcher=FakeWatcher(), exit=None)
    Spool(daemon, spool_settings(path, letterhead_file=None, letterhead_generator="echo {}"))
    connection.regain()
    assert os.listdir(os.path.join(path, "failed")) == ["m"]
    assert "new/m: letterhead generator: " in caplog.text


def test_publisher_refuses_what_aws_refuses_without_sending_it(caplog):
    connection = FakeConnection()
    posted = []
    loop = types.SimpleNamespace(post=lambda fn, *args: posted.append((fn, args)))
    publisher = Publisher(loop=loop, connection=connection, rate=0, bytes_rate=0)
    results = []
    caplog.set_level(logging.INFO, logger="chariotd")
    publisher.publish("probe/x\nFAKE", b"1", 1, lambda ok: results.append(("nl", ok)))
    publisher.publish("$aws/events/presence/connected/x", b"{}", 1,
                      lambda ok: results.append(("reserved", ok)))
    publisher.publish("big", b"x" * (128 * 1024 + 1), 0, lambda ok: results.append(("big", ok)))
    publisher.publish("$aws/things/d/shadow/update", b"{}", 1, results.append)
    assert [s[0] for s in connection.sent] == ["$aws/things/d/shadow/update"]
    for fn, args in posted:  # answered from the loop, never inside publish()
        fn(*args)
    assert results == [("nl", False), ("reserved", False), ("big", False)]
    lines = [r.getMessage() for r in caplog.records]
    assert lines == ["not publishing to probe/x\nFAKE: contains the control character U+000A",
                     "not publishing to $aws/events/presence/connected/x: a reserved topic a "
                     "device may not publish to",
                     "not publishing to big: 131073 bytes, over AWS's 131072 byte limit"]


def test_publisher_finds_the_message_the_endpoint_refuses(caplog):
    connection = FakeConnection()
    publisher = Publisher(loop=None, connection=connection, rate=0, bytes_rate=0)
    results = []
    caplog.set_level(logging.INFO, logger="chariotd")
    for name in ("m1", "bad", "m3"):
        publisher.publish(name, b"x", 1, lambda ok, name=name: results.append((name, ok)),
                          lambda name=name: results.append((name, "refused")))

    def sent():
        return [s[0] for s in connection.sent]

    assert sent() == ["m1", "bad", "m3"]
    connection.lose()  # three in flight: all suspects, sent again one at a time
    connection.regain()
    assert sent()[3:] == ["m1"]
    connection.sent[-1][3](True)
    assert sent()[3:] == ["m1", "bad"]
    for strike in (1, 2, 3):
        connection.lose()  # with "bad" alone in flight
        assert ("bad", "refused") not in results or strike == 3
        connection.regain()
    assert results == [("m1", True), ("bad", "refused")]
    assert sent()[3:] == ["m1", "bad", "bad", "bad", "m3"]
    connection.sent[-1][3](True)
    for name in ("m4", "m5"):
        publisher.publish(name, b"x", 1, lambda ok: None)
    assert sent()[-3:] == ["m3", "m4", "m5"]  # no suspect left: the pipeline fills again
    lines = [r.getMessage() for r in caplog.records]
    assert lines == ["connection lost with 3 messages unacknowledged; sending them again one "
                     "at a time, to find one the endpoint refuses"]


def test_a_sender_without_refused_gets_done_false_and_a_log_line(caplog):
    connection = FakeConnection()
    publisher = Publisher(loop=None, connection=connection, rate=0, bytes_rate=0)
    results = []
    caplog.set_level(logging.INFO, logger="chariotd")
    publisher.publish("$aws/things/d/shadow/update", b"{}", 1, results.append)
    for _ in range(3):
        connection.lose()
        connection.regain()
    assert results == [False] and len(connection.sent) == 3
    assert [r.getMessage() for r in caplog.records] == [
        "publish to $aws/things/d/shadow/update: the connection was lost each of the 3 times "
        "it was sent alone; given up"]
