"""--subscribe-write and --subscribe-exec, seen from files, FIFOs, commands and the log."""

import os
import time

from observer import Observer
from process import wait_until

PAYLOADS = [b'{"a": 1}\n', b"it's $(not run) `here`\\\n", b"\x00\xffbinary"]


def read(path):
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        return b""


def test_write_appends_each_message_to_a_regular_file(tmp_path, certstore, daemon_factory,
                                                      observer):
    out = tmp_path / "out"
    d = daemon_factory("--subscribe-write=cloud/+/cfg:%s" % out, certstore=certstore)
    d.wait_log("connected to")
    for i, payload in enumerate(PAYLOADS):
        observer.publish("cloud/%d/cfg" % i, payload)
    observer.publish("cloud/other", b"not subscribed")
    expected = b"".join(PAYLOADS)
    wait_until(lambda: len(read(out)) >= len(expected), what="all messages in the file")
    assert read(out) == expected
    assert d.stop() == 0


def test_write_to_fifo_without_reader_warns_and_carries_on(tmp_path, certstore, daemon_factory,
                                                           observer):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    d = daemon_factory("--subscribe-write=cloud/pipe:%s" % fifo, certstore=certstore)
    d.wait_log("connected to")
    observer.publish("cloud/pipe", b"nobody listens")
    d.wait_log(r"%s: message on cloud/pipe dropped: FIFO has no reader" % fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    try:
        observer.publish("cloud/pipe", b"someone listens\n")
        got = wait_until(lambda: _read_nonblocking(reader), what="message through the FIFO")
        assert got == b"someone listens\n"
    finally:
        os.close(reader)
    assert d.proc.poll() is None
    assert d.stop() == 0


def _read_nonblocking(fd):
    try:
        return os.read(fd, 4096)
    except BlockingIOError:
        return b""


def test_exec_gets_each_message_on_stdin_one_at_a_time(tmp_path, certstore, daemon_factory,
                                                       observer):
    out = tmp_path / "out"
    # Each run appends its stdin between markers; overlapping runs would interleave them.
    command = "echo begin >> %s; cat >> %s; sleep 0.1; echo end >> %s" % (out, out, out)
    d = daemon_factory("--subscribe-exec=cloud/run:%s" % command, certstore=certstore)
    d.wait_log("connected to")
    for payload in PAYLOADS:
        observer.publish("cloud/run", payload)
    expected = b"".join(b"begin\n" + p + b"end\n" for p in PAYLOADS)
    wait_until(lambda: len(read(out)) >= len(expected), what="every command run")
    assert read(out) == expected
    assert d.stop() == 0


def test_exec_over_5s_is_killed_and_the_next_message_runs(tmp_path, certstore, daemon_factory,
                                                          observer):
    out = tmp_path / "out"
    command = "read -r word; echo \"start $word\" >> %s; [ $word = slow ] && sleep 30; " \
              "echo \"end $word\" >> %s" % (out, out)
    d = daemon_factory("--subscribe-exec=cloud/run:%s" % command, certstore=certstore)
    d.wait_log("connected to")
    started = time.monotonic()
    observer.publish("cloud/run", b"slow\n")
    observer.publish("cloud/run", b"quick\n")
    d.wait_log(r"subscribe-exec command for message on cloud/run timed out and was killed")
    assert 4.5 < time.monotonic() - started < 9
    wait_until(lambda: b"end quick" in read(out), what="the next message's run")
    assert read(out) == b"start slow\nstart quick\nend quick\n"
    assert d.stop() == 0


def test_exec_flood_is_bounded_and_dropped_messages_are_logged(tmp_path, certstore,
                                                               daemon_factory, observer):
    out, gate = tmp_path / "out", tmp_path / "gate"
    # The first run blocks until the test opens the gate, so the rest pile up.
    command = "while [ ! -e %s ]; do sleep 0.02; done; cat >> %s; echo >> %s" % (gate, out, out)
    d = daemon_factory("--subscribe-exec=cloud/flood:%s" % command, certstore=certstore)
    try:
        d.wait_log("connected to")
        for i in range(30):
            observer.publish("cloud/flood", b"m%02d" % i)
        # 1 running + 10 waiting; the other 19 are dropped, each with a line.
        wait_until(lambda: d.log().count("message on cloud/flood dropped") == 19,
                   what="19 dropped-message lines")
    finally:
        gate.touch()  # never leave the blocked command spinning
    wait_until(lambda: read(out).count(b"\n") == 11, what="11 runs")
    assert read(out).split() == [b"m%02d" % i for i in range(11)]
    assert d.log().count("dropped") == 19
    assert d.stop() == 0


def test_subscriptions_are_renewed_after_a_broker_restart(tmp_path, certstore, daemon_factory,
                                                          broker):
    out = tmp_path / "out"
    d = daemon_factory("--subscribe-write=cloud/again:%s" % out, certstore=certstore)
    d.wait_log("connected to")
    broker.restart()
    d.wait_log(r"connection to .* lost")
    observer = Observer(broker.plain_port)
    try:
        # "connected" is logged before the SUBACK, so publish until one gets through.
        deadline = time.monotonic() + 15
        while not read(out):
            assert time.monotonic() < deadline, "no message after the restart:\n" + d.log()
            observer.publish("cloud/again", b"after restart\n")
            time.sleep(0.2)
    finally:
        observer.close()
    assert read(out).startswith(b"after restart\n")
    assert d.stop() == 0


def test_invalid_topic_filter_is_an_error_with_status_2(tmp_path, certstore, daemon_factory):
    d = daemon_factory("--subscribe-exec=cloud/#/x:true", certstore=certstore)
    assert d.wait_exit() == 2
    assert "--subscribe-exec: 'cloud/#/x' is not a valid MQTT topic filter" in d.log()
