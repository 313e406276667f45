"""At least once, never lost, never stuck: --messages through kill -9, broker
restarts, cut connections, held-back acknowledgements, and in polling mode."""

import time

from messagehelpers import backlog, drop, ids, listing, spool, topics, wait_empty
from observer import Observer
from process import make_certstore, wait_until
from relay import Relay


def relayed_certstore(tmp_path, pki, broker):
    """A certstore whose endpoint is a fresh Relay in front of the broker."""
    relay = Relay(("127.0.0.1", 0), ("127.0.0.1", broker.tls_port)).serve()
    cert, key = pki.issue("device-1")
    store = make_certstore(str(tmp_path / "relayed-certstore"), "localhost:%d" % relay.address[1],
                           [("device-1", cert, key)])
    return relay, store


def test_no_more_than_concurrency_unacknowledged(tmp_path, pki, broker, daemon_factory,
                                                 observer):
    relay, store = relayed_certstore(tmp_path, pki, broker)
    try:
        d = spool(tmp_path)
        daemon = daemon_factory("--messages=" + d, "--message-concurrency=%s:3" % d,
                                certstore=store)
        daemon.wait_log("connected to")
        relay.stall(["down"])  # the broker's PUBACKs stop reaching the daemon
        backlog(d, "conc/", 10)
        observer.wait_for(lambda ms: len(topics(observer, "conc/")) == 3, what="three messages")
        # Nothing more is sent while those three wait for their PUBACK, and
        # no file is deleted before its PUBACK.
        time.sleep(1.0)
        assert len(topics(observer, "conc/")) == 3
        assert len(listing(d, "new")) == 10
        relay.flow()
        observer.wait_for(lambda ms: ids(observer, "conc/") == set(range(10)), what="all ten")
        wait_empty(d)
        assert len(topics(observer, "conc/")) == 10
    finally:
        relay.close()


def test_jammed_queue_exits_for_a_restart(tmp_path, pki, broker, daemon_factory, observer):
    relay, store = relayed_certstore(tmp_path, pki, broker)
    try:
        d = spool(tmp_path)
        daemon = daemon_factory("--messages=" + d, "--message-concurrency=%s:2" % d,
                                "--message-jam-timeout=%s:1.5" % d, certstore=store)
        daemon.wait_log("connected to")
        relay.stall(["down"])
        start = time.monotonic()
        backlog(d, "jam/", 3)
        assert daemon.wait_exit(10) == 1
        assert time.monotonic() - start >= 1.5
        assert "jammed: 2 message(s) unacknowledged for 1.5s" in daemon.log()
        assert len(listing(d, "new")) == 3  # nothing acknowledged, nothing deleted
    finally:
        relay.close()


def test_busy_but_acknowledged_is_not_a_jam(tmp_path, certstore, daemon_factory, observer):
    d = spool(tmp_path)
    daemon_factory("--messages=" + d, "--message-concurrency=%s:1" % d,
                   "--message-jam-timeout=%s:0.3" % d, "--publish-rate=5", certstore=certstore)
    backlog(d, "busy-ok/", 6)  # 1.2 s of sending at 5/s, one slot always busy
    observer.wait_for(lambda ms: ids(observer, "busy-ok/") == set(range(6)), what="all six")
    wait_empty(d)


def test_kill_9_mid_backlog_loses_nothing(tmp_path, certstore, daemon_factory, observer):
    d = spool(tmp_path)
    backlog(d, "kill/", 400)
    daemon = daemon_factory("--messages=" + d, "--publish-rate=200", certstore=certstore)
    observer.wait_for(lambda ms: len(topics(observer, "kill/")) >= 100, what="100 messages")
    daemon.kill()
    assert 0 < len(listing(d, "new")) < 400
    daemon.start()
    observer.wait_for(lambda ms: ids(observer, "kill/") == set(range(400)), timeout=20,
                      what="every message")
    wait_empty(d)


def test_broker_restart_mid_backlog_loses_nothing(tmp_path, certstore, daemon_factory, broker,
                                                  observer):
    d = spool(tmp_path)
    backlog(d, "restart/", 300)
    daemon = daemon_factory("--messages=" + d, "--publish-rate=150", certstore=certstore)
    observer.wait_for(lambda ms: len(topics(observer, "restart/")) >= 60, what="60 messages")
    broker.restart()
    # The daemon waits at least a second before reconnecting; this observer is there first.
    after = Observer(broker.plain_port)
    try:
        daemon.wait_log("connection to .* lost")
        after.wait_for(lambda ms: ids(observer, "restart/") | ids(after, "restart/") ==
                       set(range(300)), timeout=30, what="every message")
        wait_empty(d)
    finally:
        after.close()


def test_cut_connection_mid_backlog_loses_nothing(tmp_path, pki, broker, daemon_factory,
                                                  observer):
    relay, store = relayed_certstore(tmp_path, pki, broker)
    try:
        d = spool(tmp_path)
        backlog(d, "cut/", 300)
        daemon = daemon_factory("--messages=" + d, "--publish-rate=150", certstore=store)
        observer.wait_for(lambda ms: len(topics(observer, "cut/")) >= 60, what="60 messages")
        relay.stall(["down"])  # in-flight messages reach the broker, their PUBACKs never come back
        held = len(topics(observer, "cut/"))
        observer.wait_for(lambda ms: len(topics(observer, "cut/")) >= held + 5,
                          what="messages sent while their PUBACKs are held")
        relay.cut()
        relay.flow()
        daemon.wait_log("connection to .* lost")
        observer.wait_for(lambda ms: ids(observer, "cut/") == set(range(300)), timeout=30,
                          what="every message")
        wait_empty(d)
        assert relay.connections == 2
    finally:
        relay.close()


def test_file_replaced_while_being_sent_is_sent_again(tmp_path, pki, broker, daemon_factory,
                                                      observer):
    relay, store = relayed_certstore(tmp_path, pki, broker)
    try:
        d = spool(tmp_path)
        daemon = daemon_factory("--messages=" + d, certstore=store)
        daemon.wait_log("connected to")
        relay.stall(["down"])
        drop(d, "status", {"topic": "replace/status", "payload": {"v": 1}})
        observer.wait_topic("replace/status")
        drop(d, "status", {"topic": "replace/status", "payload": {"v": 2}})
        relay.flow()
        observer.wait_topic("replace/status", 2)
        assert [m.json()["v"] for m in observer.on("replace/status")] == [1, 2]
        wait_empty(d)
    finally:
        relay.close()


def test_long_backlog_keeps_its_order(tmp_path, certstore, daemon_factory, observer):
    """9,000 files at start-up: the index holds 4,096 names and refills twice."""
    d = spool(tmp_path)
    start = time.time() - 10000
    count = 9000
    for i in range(count):
        # mtime order is i; name order is the reverse.
        drop(d, "%05d" % (count - i), {"topic": "long/m", "payload": {"id": i}}, mtime=start + i)
    daemon_factory("--messages=" + d, "--publish-rate=0", "--message-order=%s:oldest-first" % d,
                   certstore=certstore)
    observer.wait_for(lambda ms: len(topics(observer, "long/")) == count, timeout=60,
                      what="every message")
    assert [m.json()["id"] for m in observer.on("long/m")] == list(range(count))
    wait_empty(d)


def test_polling_mode(tmp_path, certstore, daemon_factory, observer):
    d = spool(tmp_path)
    drop(d, "0-waiting", {"topic": "poll/0", "payload": 0})
    daemon = daemon_factory("--messages=" + d, "--poll-interval=0.1", certstore=certstore,
                            env={"CHARIOTD_NO_INOTIFY": "1"})
    observer.wait_topic("poll/0")
    for i in range(1, 4):
        drop(d, "%d-new" % i, {"topic": "poll/%d" % i, "payload": i})
    drop(d, "bad", raw=b"[]")
    observer.wait_for(lambda ms: len(topics(observer, "poll/")) == 4, what="four messages")
    wait_until(lambda: listing(d, "failed") == ["bad"], what="bad in failed/")
    wait_empty(d)
    assert "new/bad: not a JSON object" in daemon.log()


def test_polling_mode_priority_while_disconnected(tmp_path, certstore, daemon_factory, broker,
                                                  observer):
    d = spool(tmp_path)
    daemon = daemon_factory("--messages=" + d, "--poll-interval=0.1", certstore=certstore,
                            env={"CHARIOTD_NO_INOTIFY": "1"})
    daemon.wait_log("connected to")
    broker.stop()
    daemon.wait_log("connection to .* lost")
    try:
        for name in ("a", "b", "c"):
            drop(d, name, {"topic": "pd/" + name, "payload": 0})
        drop(d, "z-urgent", {"topic": "pd/z-urgent", "payload": 0, "priority": 1})
        drop(d, "sentinel", raw=b"x")
        wait_until(lambda: "sentinel" in listing(d, "failed"), what="the sentinel to be seen")
    finally:
        broker.start()
    after = Observer(broker.plain_port)
    try:
        after.wait_for(lambda ms: len(topics(after, "pd/")) == 4, timeout=20,
                       what="four messages")
        assert topics(after, "pd/") == ["pd/z-urgent", "pd/a", "pd/b", "pd/c"]
    finally:
        after.close()


def test_qos0_messages_survive_a_broker_restart_in_the_queue(tmp_path, certstore, daemon_factory,
                                                             broker, observer):
    """QoS 0 files waiting while the broker is away are sent once it is back."""
    d = spool(tmp_path)
    daemon = daemon_factory("--messages=" + d, certstore=certstore)
    daemon.wait_log("connected to")
    broker.stop()
    daemon.wait_log("connection to .* lost")
    try:
        for i in range(5):
            drop(d, "q%d" % i, {"topic": "q0/m", "payload": {"id": i}, "qos": 0})
        time.sleep(0.3)
        assert len(listing(d, "new")) == 5
    finally:
        broker.start()
    after = Observer(broker.plain_port)
    try:
        after.wait_for(lambda ms: ids(after, "q0/") == set(range(5)), timeout=20,
                       what="five messages")
        wait_empty(d)
    finally:
        after.close()
