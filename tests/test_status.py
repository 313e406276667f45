"""--status-file and `chariotd --status`: the file follows a connect, a
disconnect, a backlog draining and a failed message, is never seen
half-written, and neither health feature is imported when not configured."""

import json
import os
import re
import stat
import subprocess
import sys
import threading

from process import CHARIOTD, drop_action, wait_until

from lib.status import describe


class Reader:
    """Reads the status file over and over on a thread, as a person's tool would,
    keeping every distinct version seen; any read that is not a whole JSON
    document is kept as a failure."""

    def __init__(self, path):
        self.path = path
        self.versions = []  # (mtime_ns, doc)
        self.broken = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop.is_set():
            try:
                with open(self.path, "rb") as f:
                    st = os.fstat(f.fileno())
                    data = f.read()
            except FileNotFoundError:
                continue
            try:
                doc = json.loads(data)
            except ValueError:
                self.broken.append(data)
                continue
            if not self.versions or self.versions[-1][1] != doc:
                self.versions.append((st.st_mtime_ns, doc))

    def latest(self):
        return self.versions[-1][1] if self.versions else None

    def wait(self, condition, what, timeout=15):
        return wait_until(lambda: self.latest() is not None and condition(self.latest()) and
                          self.latest(), timeout, what)

    def close(self):
        self._stop.set()
        self._thread.join()


def test_status_file_follows_the_daemon(tmp_path, broker, certstore, daemon_factory):
    path = str(tmp_path / "run" / "status.json")
    os.makedirs(os.path.dirname(path))
    messages = str(tmp_path / "messages")
    reader = Reader(path)
    try:
        daemon = daemon_factory("--messages=" + messages, "--status-file=" + path,
                                certstore=certstore)
        # Connect.
        doc = reader.wait(lambda d: d["connection"]["connected"], "connected")
        conn = doc["connection"]
        assert conn["endpoint"] == "localhost:%d" % broker.tls_port
        assert conn["certificate"] == "device-1" and conn["clientid"] == "device-1"
        assert conn["since"] and doc["running"] and doc["pid"] == daemon.proc.pid
        assert doc["messages"] == {messages: {"waiting": 0, "in_flight": 0, "failed": 0}}
        mode = stat.S_IMODE(os.stat(path).st_mode)
        assert mode == 0o644, oct(mode)

        # Disconnect: the broker goes away; a backlog builds up meanwhile.
        broker.stop()
        try:
            doc = reader.wait(lambda d: not d["connection"]["connected"], "disconnected")
            for i in range(5):
                drop_action(messages, "m%d.json" % i,
                            json.dumps({"topic": "status/test", "payload": {"n": i}}))
            doc = reader.wait(lambda d: d["messages"][messages]["waiting"] == 5, "5 waiting")
            assert not doc["connection"]["connected"]
            reader.wait(lambda d: (d["connection"]["last_error"] or {}).get("error"),
                        "a connection error")
            doc = reader.wait(lambda d: d["connection"]["offline_attempts_in_a_row"] >= 2,
                              "two offline attempts counted")
            assert doc["connection"]["failures_in_a_row"] == 0  # refused: not the certificate
            attempts = doc["connection"]["offline_attempts_in_a_row"]
            assert re.search(r"\(offline; attempt %d in a row\)" % attempts, daemon.log())
        finally:
            broker.start()

        # The backlog drains once the connection is back.
        doc = reader.wait(lambda d: d["connection"]["connected"] and
                          d["connection"]["offline_attempts_in_a_row"] == 0 and
                          d["messages"][messages]["waiting"] == 0 and
                          d["messages"][messages]["in_flight"] == 0, "drained")
        assert "connection" in doc["connection"]["last_error"]["error"] or \
            "connect" in doc["connection"]["last_error"]["error"]

        # A failed message.
        drop_action(messages, "bad.json", "{not json")
        doc = reader.wait(lambda d: d["messages"][messages]["failed"] == 1, "one failed")

        # For a person.
        out = subprocess.run([sys.executable, CHARIOTD, "--status", path], check=True,
                             stdout=subprocess.PIPE, text=True).stdout
        assert "connected to localhost:%d since" % broker.tls_port in out
        assert "messages %s: 0 waiting, 0 in flight, 1 failed" % messages in out
        assert len(out.splitlines()) <= 8

        daemon.stop()
        reader.wait(lambda d: not d["running"], "the last word at exit")
    finally:
        reader.close()
    assert not reader.broken, "half-written status seen: %r" % reader.broken[:1]
    # Written only on change and at most once a second.
    stamps = [mtime for mtime, _ in reader.versions]
    gaps = [(b - a) / 1e9 for a, b in zip(stamps, stamps[1:])]
    assert all(g > 0.9 for g in gaps[:-1]), gaps  # (the exit's last word may come sooner)
    assert os.listdir(os.path.dirname(path)) == ["status.json"]  # no temporary files left


def test_describe_in_a_few_lines():
    doc = {"pid": 12, "running": True, "started": "2027-01-15T08:00:00Z",
           "connection": {"connected": False, "since": "2027-01-15T08:59:00Z",
                          "endpoint": "x-ats.iot.eu-west-1.amazonaws.com:8883",
                          "clientid": "gw-7", "certificate": "abc123",
                          "failures_in_a_row": 2, "offline_attempts_in_a_row": 7,
                          "last_error": {"at": "2027-01-15T08:59:30Z",
                                         "error": "cannot connect: Connection refused"}},
           "messages": {"/data/msgs": {"waiting": 3, "in_flight": 1, "failed": 0}},
           "shadowsync": {"Gw1": {"version": 9, "synced": True,
                                  "synced_at": "2027-01-15T08:30:00Z",
                                  "desired_left": ["network"]}},
           "children_running": 1}
    text = describe(doc, now=1800000000)
    assert "NOT connected to x-ats.iot.eu-west-1.amazonaws.com:8883 since 2027-01-15T08:59:00Z" \
        in text
    assert "cannot connect: Connection refused" in text
    assert "offline: 7 connection attempts in a row failed" in text
    assert "shadow Gw1: version 9 synced 2027-01-15T08:30:00Z; left in desired: network" in text
    assert "/data/msgs: 3 waiting, 1 in flight, 0 failed" in text
    assert len(text.splitlines()) <= 8


def test_describe_running_jobs_in_a_line_each():
    doc = {"pid": 12, "started": "2027-01-15T08:00:00Z", "connection": {"connected": True},
           "jobs": {"Gw1": {"job_id": "fw-7", "started": "2027-01-15T07:55:00Z",
                            "step": "install", "step_number": 2, "steps": 3,
                            "final_step": False, "pid": 812,
                            "step_started": "2027-01-15T07:59:20Z", "reporting": None},
                    "Gw2": None,
                    "Gw3": {"job_id": "bad", "started": "2027-01-15T07:59:59Z",
                            "reporting": "REJECTED"}}}
    lines = describe(doc, now=1800000000).splitlines()  # 2027-01-15T08:00:00Z
    assert "  job fw-7 on Gw1 since 2027-01-15T07:55:00Z (5m ago): step 2 of 3 'install', " \
        "pid 812, running for 40s" in lines
    assert "  jobs for Gw2: none running" in lines
    assert "  job bad on Gw3 since 2027-01-15T07:59:59Z (1s ago); reporting REJECTED" in lines
    assert not any("{" in line for line in lines)  # no raw JSON


def _imported(daemon):
    """Modules the daemon loaded, from its PYTHONVERBOSE lines (-X importtime
    would miss the features: importlib.import_module bypasses it)."""
    names = set()
    for line in daemon.log().splitlines():
        if line.startswith("import '"):
            names.add(line.split("'")[1])
    return names


HEALTH_MODULES = {"lib.defender", "lib.defenderreport", "lib.status"}


def test_neither_feature_is_imported_unless_configured(tmp_path, broker, certstore,
                                                        daemon_factory):
    plain = daemon_factory("--messages=" + str(tmp_path / "m"), certstore=certstore,
                           env={"PYTHONVERBOSE": "1"})
    plain.wait_log("connected to")
    plain.stop()
    assert not HEALTH_MODULES & _imported(plain)
    assert "lib.messages" in _imported(plain)  # the check sees the daemon's imports

    both = daemon_factory("--messages=" + str(tmp_path / "m"), "--defender=Gw1",
                          "--status-file=" + str(tmp_path / "status.json"),
                          certstore=certstore, env={"PYTHONVERBOSE": "1"})
    both.wait_log("connected to")
    both.stop()
    assert _imported(both) >= HEALTH_MODULES
