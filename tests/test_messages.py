"""--messages through the real daemon and mosquitto: what gets published, in
which order, with which letterhead and compression, and what bad files do."""

import json
import os
import time
import zlib

import pytest
from messagehelpers import drop, listing, spool, topics, wait_empty, wait_failed
from observer import Observer
from process import wait_until

H = 3600


def test_publishes_payloads_as_given_and_deletes_the_files(tmp_path, certstore, daemon_factory,
                                                           observer):
    d = spool(tmp_path)
    drop(d, "1-object", {"topic": "pay/object", "payload": {"a": [1, "ü"]}})
    drop(d, "2-array", {"topic": "pay/array", "payload": [1, 2], "qos": 0})
    daemon = daemon_factory("--messages=" + d, certstore=certstore)
    drop(d, "3-string", {"topic": "pay/string", "payload": "raw {text", "qos": 1})
    observer.wait_topic("pay/string")
    (obj,) = observer.on("pay/object")
    assert obj.json() == {"a": [1, "ü"]} and obj.qos == 1
    assert observer.on("pay/array")[0].payload == b"[1,2]"
    assert observer.on("pay/array")[0].qos == 0
    assert observer.on("pay/string")[0].payload == b"raw {text"
    wait_empty(d)
    assert listing(d, "failed") == []
    assert daemon.stop() == 0


@pytest.mark.parametrize("order, expected", [
    ("lexical", "DBEACF"),
    ("oldest-first", "DBECFA"),
    ("newest-first", "DBEAFC"),
    ("reverse-lexical", "DBEFCA"),
])
def test_backlog_at_start_up_goes_in_the_documented_order(tmp_path, certstore, daemon_factory,
                                                          observer, order, expected):
    d = spool(tmp_path)
    day = time.time() - 30 * H
    files = {
        "A": (23 * H + 12 * 60, {}),
        "B": (11 * H + 51 * 60, {"priority": 2}),
        "C": (3 * H + 22 * 60, {"priority_slot": "xyz", "priority": 1}),
        "D": (11 * H + 51 * 60, {"priority_slot": "xyz", "priority": 1}),
        "E": (16 * H + 20 * 60, {"priority": 3}),
        "F": (11 * H + 45 * 60, {}),
    }
    prefix = "order/%s/" % order
    for name, (offset, keys) in files.items():
        drop(d, name, dict(keys, topic=prefix + name, payload={}), mtime=day + offset)
    daemon_factory("--messages=" + d, "--message-order=%s:%s" % (d, order), certstore=certstore)
    observer.wait_for(lambda ms: len(topics(observer, prefix)) == 6, what="six messages")
    assert "".join(t[-1] for t in topics(observer, prefix)) == expected


def test_files_arriving_while_busy_are_ordered_by_priority(tmp_path, certstore, daemon_factory,
                                                         observer, broker):
    """Files that arrive while the only slot is busy wait, and go out prioritised."""
    d = spool(tmp_path)
    # A letterhead generator that waits for a go-ahead file keeps the one slot busy.
    gate, started = str(tmp_path / "gate"), str(tmp_path / "started")
    generator = "touch %s; while [ ! -e %s ]; do sleep 0.02; done; echo '{}'" % (started, gate)
    daemon = daemon_factory("--messages=" + d, "--message-concurrency=%s:1" % d,
                            "--letterhead-generator=%s:%s" % (d, generator), certstore=certstore)
    daemon.wait_log("connected to")
    drop(d, "first", {"topic": "busy/first", "payload": 0})
    wait_until(lambda: os.path.exists(started), what="the first message to take the slot")
    now = time.time()
    drop(d, "a-plain", {"topic": "busy/a-plain", "payload": 1}, mtime=now - 50)
    drop(d, "s-old", {"topic": "busy/s-old", "payload": 2, "priority_slot": "s"}, mtime=now - 40)
    drop(d, "s-new", {"topic": "busy/s-new", "payload": 3, "priority_slot": "s"}, mtime=now - 30)
    drop(d, "p2", {"topic": "busy/p2", "payload": 4, "priority": 2}, mtime=now - 20)
    drop(d, "p1", {"topic": "busy/p1", "payload": 5, "priority": 1}, mtime=now - 60)
    drop(d, "sentinel", raw=b"not json")  # failed/ as soon as it is seen: all are seen
    wait_failed(d, "sentinel")
    with open(gate, "w"):
        pass
    observer.wait_for(lambda ms: len(topics(observer, "busy/")) == 6, what="six messages")
    assert topics(observer, "busy/") == ["busy/" + n for n in
                                         ("first", "p1", "s-new", "p2", "a-plain", "s-old")]


def test_bad_files_go_to_failed_with_a_reason_and_the_rest_goes_on(tmp_path, certstore, broker,
                                                                   daemon_factory, observer):
    d = spool(tmp_path)
    deep = "/".join(["l"] * 9)
    bad = {
        "not-json": (b"{'topic': 1", "not JSON"),
        "not-object": (b'["topic", "payload"]', "not a JSON object"),
        "no-topic": (b'{"payload": {}}', "missing topic"),
        "no-payload": (b'{"topic": "t"}', "missing payload"),
        "null-payload": (b'{"topic": "t", "payload": null}', "missing payload"),
        "topic-number": (b'{"topic": 5, "payload": 1}', "topic is not a string"),
        "topic-empty": (b'{"topic": "", "payload": 1}', "empty"),
        "topic-plus": (b'{"topic": "a/+/b", "payload": 1}', "wildcard"),
        "topic-hash": (b'{"topic": "a/#", "payload": 1}', "wildcard"),
        "topic-long": (json.dumps({"topic": "x" * 257, "payload": 1}).encode(), "257 bytes"),
        "topic-deep": (json.dumps({"topic": deep, "payload": 1}).encode(), "8 slashes"),
        "qos-2": (b'{"topic": "t", "payload": 1, "qos": 2}', "qos 2 is not 0 or 1"),
        "qos-text": (b'{"topic": "t", "payload": 1, "qos": "1"}', "is not 0 or 1"),
        "priority-text": (b'{"topic": "t", "payload": 1, "priority": "high"}',
                          "priority \"high\" is not a number"),
        "priority-huge": (b'{"topic": "t", "payload": 1, "priority": 1' + b"0" * 400 + b"}",
                          "0 is not a number"),
        "slot-number": (b'{"topic": "t", "payload": 1, "priority_slot": 3}',
                        "priority_slot 3 is not a string"),
        "payload-big": (json.dumps({"topic": "t", "payload": "x" * (128 * 1024 + 1)}).encode(),
                        "131073 bytes, over AWS's 131072 byte limit"),
        "payload-big-gz": (json.dumps({"topic": "t", "compress": "gzip", "payload":
                                       os.urandom(150 * 1024).hex()}).encode(),
                           "compressed, over AWS's 131072 byte limit"),
        "file-huge": (b'{"topic": "t", "payload": "' + b"x" * (1024 * 1024) + b'"}',
                      "over the 1048576 byte limit"),
        # mosquitto drops the connection of a client that publishes one, at every
        # reconnect again (issue 10 item 12); so would AWS.
        "topic-newline": (json.dumps({"topic": "probe/x\nFAKE", "payload": 1}).encode(),
                          "contains the control character U+000A"),
        "topic-del": (json.dumps({"topic": "probe/\x7f", "payload": 1}).encode(),
                      "contains the control character U+007F"),
        "topic-nul": (b'{"topic": "t\\u0000", "payload": 1}',
                      "contains the control character U+0000"),
        "topic-surrogate": (b'{"topic": "t\\ud800", "payload": 1}',
                            "contains U+D800, which is not a character"),
        "topic-reserved": (b'{"topic": "$aws/things/device-1/shadow/update/accepted", '
                           b'"payload": {}}', "a reserved topic a device may not publish to"),
        "topic-events": (b'{"topic": "$aws/events/presence/connected/x", "payload": {}}',
                         "a reserved topic a device may not publish to"),
        "topic-sys": (b'{"topic": "$SYS/broker/x", "payload": 1}', "reserved topic"),
        "nan": (b'{"topic": "t", "payload": {"v": NaN}}', "NaN, Infinity or a number beyond"),
        "infinity": (b'{"topic": "t", "payload": [-Infinity]}', "NaN, Infinity"),
        "beyond-double": (b'{"topic": "t", "payload": {"v": 1e400}}', "such as 1e400"),
    }
    ingest = Observer(broker.plain_port, topics=("$aws/rules/#",))
    daemon = daemon_factory("--messages=" + d, certstore=certstore)
    daemon.wait_log("connected to")
    for name, (raw, _reason) in bad.items():
        drop(d, name, raw=raw)
    secret = str(tmp_path / "secret")
    with open(secret, "w") as f:
        json.dump({"topic": "bad/secret", "payload": "private"}, f)
    os.symlink(secret, os.path.join(d, "new", "symlink"))
    os.mkfifo(os.path.join(d, "new", "fifo"))
    os.mkdir(os.path.join(d, "new", "directory"))
    # Basic Ingest: its $aws/rules/RULE/ prefix does not count towards the 7 slashes.
    drop(d, "zz-ingest", {"topic": "$aws/rules/r/a/b/c/d/e/f/g/h", "payload": {"v": 1.5}})
    drop(d, "zz-good", {"topic": "bad/good", "payload": "still running"})
    observer.wait_topic("bad/good")
    ingest.wait_topic("$aws/rules/r/a/b/c/d/e/f/g/h")
    ingest.close()
    expected = sorted(list(bad) + ["symlink", "fifo", "directory"])
    wait_until(lambda: listing(d, "failed") == expected, what="every bad file in failed/")
    wait_empty(d)
    log = daemon.log()
    for name, (_raw, reason) in bad.items():
        line = [ln for ln in log.splitlines() if os.path.join(d, "new", name) + ":" in ln]
        assert len(line) == 1 and reason in line[0] and "failed/" in line[0], (name, line)
    for name in ("symlink", "fifo", "directory"):
        assert os.path.join(d, "new", name) + ": not a regular file" in log
    assert observer.on("bad/secret") == [] and observer.on("t") == []
    assert not [m for m in observer.messages if m.topic.startswith("probe/")]
    # Nothing was sent that made the broker drop the connection.
    assert log.count("connected to") == 1 and "connection to" not in log
    assert daemon.proc.poll() is None


def test_a_file_with_another_hard_link_is_never_sent_and_only_its_name_goes(
        tmp_path, certstore, daemon_factory, observer):
    """A second name of a secret renamed into new/ must not publish the secret;
    nor may failed/ keep a name of it. The secret itself is left alone."""
    d = spool(tmp_path)
    secret = str(tmp_path / "secret.json")
    with open(secret, "w") as f:
        json.dump({"topic": "link/secret", "payload": "private"}, f)
    os.link(secret, os.path.join(d, "new", "at-start"))  # found by the first scan
    daemon = daemon_factory("--messages=" + d, certstore=certstore)
    daemon.wait_log("connected to")
    os.link(secret, os.path.join(d, "tmp", "while-running"))
    os.rename(os.path.join(d, "tmp", "while-running"), os.path.join(d, "new", "while-running"))
    drop(d, "zz-good", {"topic": "link/good", "payload": "still running"})
    observer.wait_topic("link/good")
    wait_empty(d)
    with open(secret) as f:
        assert json.load(f)["payload"] == "private"
    assert os.stat(secret).st_nlink == 1 and listing(d, "failed") == []
    assert observer.on("link/secret") == []
    log = daemon.log()
    for name in ("at-start", "while-running"):
        lines = [ln for ln in log.splitlines() if os.path.join(d, "new", name) + ":" in ln]
        assert len(lines) == 1, lines
        assert "2 hard links" in lines[0] and "not read or sent" in lines[0], lines
    assert daemon.proc.poll() is None


def test_failed_keeps_only_the_newest(tmp_path, certstore, daemon_factory):
    d = spool(tmp_path)
    daemon = daemon_factory("--messages=" + d, "--message-keep-failed=%s:3" % d,
                            certstore=certstore)
    daemon.wait_log("connected to")
    now = time.time()
    for i in range(6):
        drop(d, "bad-%d" % i, raw=b"nope", mtime=now - 100 + i)
        wait_failed(d, "bad-%d" % i)
    assert listing(d, "failed") == ["bad-3", "bad-4", "bad-5"]


def test_compression(tmp_path, certstore, daemon_factory, observer):
    d = spool(tmp_path)
    payload = {"values": list(range(200))}
    daemon = daemon_factory("--messages=" + d, certstore=certstore)
    drop(d, "gzip", {"topic": "zip/gzip", "payload": payload, "compress": "gzip"})
    drop(d, "deflate", {"topic": "zip/deflate", "payload": "text " * 50, "compress": "deflate"})
    drop(d, "lzma", {"topic": "zip/lzma", "payload": payload, "compress": "lzma"})
    observer.wait_for(lambda ms: len(topics(observer, "zip/")) == 3, what="three messages")
    gz = observer.on("zip/gzip")[0].payload
    assert gz[:2] == b"\x1f\x8b" and json.loads(zlib.decompress(gz, 31)) == payload
    assert zlib.decompress(observer.on("zip/deflate")[0].payload) == b"text " * 50
    assert json.loads(observer.on("zip/lzma")[0].payload) == payload
    assert daemon.wait_log(r"new/lzma: unknown compress \"lzma\"; sending uncompressed")
    wait_empty(d)


def test_topic_prefix_and_suffix_per_directory(tmp_path, certstore, daemon_factory, observer):
    one, two, three = spool(tmp_path, "one"), spool(tmp_path, "two"), spool(tmp_path, "three")
    daemon_factory("--messages=" + one, "--messages=" + two, "--messages=" + three,
                   "--default-message-topic-prefix=dflt/",
                   "--message-topic-prefix=%s/:one/" % two,  # same directory, trailing slash
                   "--message-topic-suffix=%s:/end" % two,
                   "--message-topic-suffix=%s:/3" % three, certstore=certstore)
    for d in (one, two, three):
        drop(d, "m", {"topic": "fix", "payload": 1})
    drop(three, "long", {"topic": "x" * 255, "payload": 1})  # 255 + "/3" is too long
    observer.wait_for(lambda ms: len(topics(observer, "dflt/")) + len(topics(observer, "one/"))
                      == 3, what="three messages")
    assert sorted(topics(observer, "dflt/") + topics(observer, "one/")) == \
        ["dflt/fix", "dflt/fix/3", "one/fix/end"]
    wait_failed(three, "long")


def test_letterhead_file_is_laid_under_the_message(tmp_path, certstore, daemon_factory, observer):
    plain, own = spool(tmp_path, "plain"), spool(tmp_path, "own")
    default = tmp_path / "default.json"
    default.write_text(json.dumps({"topic": "lh/default", "qos": 0,
                                   "payload": {"device": "d1", "nested": {"a": 1, "b": 1}}}))
    specific = tmp_path / "specific.json"
    specific.write_text(json.dumps({"payload": {"from": "specific"}}))
    daemon = daemon_factory("--messages=" + plain, "--messages=" + own,
                            "--default-letterhead-file=%s" % default,
                            "--letterhead-file=%s:%s" % (own, specific), certstore=certstore)
    drop(plain, "m", {"payload": {"nested": {"b": 2}, "temp": 5}})
    drop(own, "m", {"topic": "lh/own", "payload": {"temp": 6}})
    observer.wait_topic("lh/own")
    (merged,) = observer.wait_topic("lh/default")
    assert merged.json() == {"device": "d1", "nested": {"a": 1, "b": 2}, "temp": 5}
    assert merged.qos == 0
    assert observer.on("lh/own")[0].json() == {"from": "specific", "temp": 6}
    # The letterhead is read for each message: a broken one fails the message.
    default.write_text("{not json")
    drop(plain, "m2", {"topic": "lh/m2", "payload": {}})
    wait_failed(plain, "m2")
    assert daemon.wait_log(r"new/m2: letterhead .*default.json is not JSON")
    default.unlink()
    drop(plain, "m3", {"topic": "lh/m3", "payload": {}})
    wait_failed(plain, "m3")
    assert daemon.wait_log(r"new/m3: letterhead .*default.json: No such file")
    drop(own, "m4", {"topic": "lh/m4", "payload": {}})
    observer.wait_topic("lh/m4")


def test_letterhead_generator_sees_the_message(tmp_path, certstore, daemon_factory, observer):
    good, failing, garbage = spool(tmp_path, "good"), spool(tmp_path, "fail"), \
        spool(tmp_path, "garbage")
    envdir = tmp_path / "env"
    envdir.mkdir()
    script = tmp_path / "gen.sh"
    script.write_text("#!/bin/sh\nenv | grep ^MESSAGE_ > %s/$(basename $MESSAGE_FILENAME)\n"
                      "printf '{\"payload\": {\"generated\": true, \"n\": 1}}'\n" % envdir)
    script.chmod(0o755)
    mtime = 1700000000.25
    daemon = daemon_factory("--messages=" + good, "--messages=" + failing,
                            "--messages=" + garbage,
                            "--message-topic-prefix=%s:pre/" % good,
                            "--default-letterhead-generator=%s" % script,
                            "--letterhead-generator=%s:echo oops >&2; exit 3" % failing,
                            "--letterhead-generator=%s:echo nope" % garbage, certstore=certstore)
    daemon.wait_log("connected to")
    drop(good, "slot", {"topic": "gen", "payload": {"n": 2}, "priority_slot": "s"}, mtime=mtime)
    drop(good, "plain", {"topic": "gen2", "payload": {"n": 3}}, mtime=mtime)
    drop(failing, "f", {"topic": "gen/f", "payload": 1})
    drop(garbage, "g", {"topic": "gen/g", "payload": 1})
    observer.wait_for(lambda ms: observer.on("pre/gen") and observer.on("pre/gen2"),
                      what="both generated messages")
    assert observer.on("pre/gen")[0].json() == {"generated": True, "n": 2}

    def env_of(name):
        lines = (envdir / name).read_text().splitlines()
        return dict(line.split("=", 1) for line in lines)

    assert env_of("slot") == {
        "MESSAGE_TOPIC": "pre/gen",
        "MESSAGE_FILENAME": os.path.join(good, "new", "slot"),
        "MESSAGE_TIMESTAMP": "1700000000250.000000",
        "MESSAGE_TIMESTAMP_S": "1700000000",
        "MESSAGE_PRIORITY": "1",
        "MESSAGE_PRIORITY_SLOT": "s",
        "MESSAGE_WAS_PRIORITISED": "1",
    }
    plain_env = env_of("plain")
    assert plain_env["MESSAGE_PRIORITY"] == "" and plain_env["MESSAGE_WAS_PRIORITISED"] == ""
    assert "MESSAGE_PRIORITY_SLOT" not in plain_env
    wait_failed(failing, "f")
    wait_failed(garbage, "g")
    assert daemon.wait_log(r"new/f: letterhead generator exited with status 3: oops")
    assert daemon.wait_log(r"new/g: letterhead generator is not JSON")
    assert observer.on("gen/f") == [] and observer.on("gen/g") == []
