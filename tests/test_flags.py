"""Flags of docs/interface.md#command-line that no feature owns: --keepalive, --last-will-*,
--log-timestamps, --poll-interval, --version and --help, as a user sees them."""

import os
import re
import subprocess
import sys
import time

from process import CHARIOTD, drop_action, wait_until

SECTION_1_OPTIONS = (
    "--clientid", "--cacert", "--certstore", "--fleetprov", "--services", "--updates",
    "--defaultshadow", "--empty-array-as-delete-request", "--messages",
    "--default-message-concurrency", "--message-concurrency", "--default-message-retries",
    "--message-retries", "--default-message-keep-failed", "--message-keep-failed",
    "--default-message-jam-timeout", "--message-jam-timeout", "--default-message-order",
    "--message-order", "--default-message-topic-prefix", "--message-topic-prefix",
    "--default-message-topic-suffix", "--message-topic-suffix", "--default-letterhead-file",
    "--letterhead-file", "--default-letterhead-generator", "--letterhead-generator",
    "--subscribe-write", "--subscribe-exec", "--commands", "--tunnelmappings", "--tunnelproxy",
    "--tunnelcadir", "--keepalive", "--last-will-topic", "--last-will-payload", "--help",
    "--publish-rate", "--publish-bytes-rate", "--poll-interval", "--log-timestamps",
    "--version",
)


def broker_lines(broker, since=0):
    with open(broker.log) as f:
        return f.read()[since:].splitlines()


def broker_log_size(broker):
    return os.path.getsize(broker.log)


def test_keepalive_is_sent_in_connect_and_kept_with_pings(certstore, daemon_factory, broker):
    since = broker_log_size(broker)
    d = daemon_factory("--keepalive=2", certstore=certstore, clientid="flags-keepalive")
    d.wait_log("connected to")
    started = time.monotonic()
    assert any("as flags-keepalive (p2, c1, k2," in line for line in broker_lines(broker, since))
    pings = wait_until(lambda: [line for line in broker_lines(broker, since)
                                if "Received PINGREQ from flags-keepalive" in line][2:],
                       timeout=10, what="three PINGREQs")
    # Three pings two seconds apart, and no sooner: the keepalive paces them.
    assert pings and time.monotonic() - started > 3.5
    assert d.stop() == 0


def test_last_will_is_seen_once_whether_the_daemon_stops_or_crashes(certstore, daemon_factory,
                                                                    observer):
    d = daemon_factory("--last-will-topic=devices/flags-will/status",
                       "--last-will-payload=offline", certstore=certstore,
                       clientid="flags-will")
    d.wait_log("connected to")
    assert d.stop() == 0
    observer.wait_topic("devices/flags-will/status", 1)
    d.start()
    d.wait_log("connected to")
    d.kill()
    wills = observer.wait_topic("devices/flags-will/status", 2)
    assert [(m.payload, m.qos) for m in wills] == [(b"offline", 1)] * 2
    # Nothing more arrives afterwards (a clean stop must not add the broker's own copy).
    time.sleep(0.5)
    assert len(observer.on("devices/flags-will/status")) == 2


def test_log_timestamps_prefix_every_line(certstore, daemon_factory):
    plain = daemon_factory(certstore=certstore, clientid="flags-plain")
    plain.wait_log("connected to")
    assert plain.stop() == 0
    plain_log = plain.log()  # read now: both daemons log to one file
    stamped = daemon_factory("--log-timestamps", certstore=certstore, clientid="flags-stamped")
    stamped.wait_log("connected to")
    assert stamped.stop() == 0
    stamp = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (INFO|WARNING|ERROR): ")
    assert all(stamp.match(line) for line in stamped.log().splitlines())
    assert not any(stamp.match(line) for line in plain_log.splitlines())
    assert plain_log.startswith("INFO: ")


def test_poll_interval_paces_directory_scans_without_inotify(tmp_path, certstore,
                                                             daemon_factory):
    commands = tmp_path / "commands"
    d = daemon_factory("--commands=%s" % commands, "--poll-interval=2.5", certstore=certstore,
                       env={"CHARIOTD_NO_INOTIFY": "1"})
    d.wait_log("connected to")

    def handled_after_writing(name):
        drop_action(str(commands), name)
        d.wait_log("new/%s: unknown command" % name)
        return time.monotonic()

    first = handled_after_writing("first")
    # Written just after a scan, the next file waits one whole interval.
    second = handled_after_writing("second")
    assert 2.2 < second - first < 3.5
    assert d.stop() == 0


def run(args):
    return subprocess.run([sys.executable, CHARIOTD] + args, capture_output=True, text=True,
                          timeout=20)


def test_version_prints_one_line_and_exits_0():
    proc = run(["--version"])
    assert proc.returncode == 0 and proc.stderr == ""
    assert re.fullmatch(r"chariotd \d+\.\d+\.\d+\n", proc.stdout)


def test_help_lists_every_option_and_exits_0():
    for flag in ("--help", "-h"):
        proc = run([flag])
        assert proc.returncode == 0 and proc.stderr == ""
        listed = set(re.findall(r"--[a-z-]+", proc.stdout))
        assert set(SECTION_1_OPTIONS) <= listed, set(SECTION_1_OPTIONS) - listed
