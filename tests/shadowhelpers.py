"""Helpers for the shadow sync tests (no tests here): service definitions,
update files, and what a user observes (outfiles, notify runs, updates)."""

import json
import os
import subprocess
import time

from process import drop_action

THING = "Gw1"
PREFIX = "$aws/things/%s/shadow" % THING
SYNCED = r"shadow \S+: synced"


def wait_synced(d):
    """Wait for the first fetch, and for a missing shadow's creation to be accepted,
    so that a test's own changes come after it."""
    d.wait_log(SYNCED)
    if "does not exist; creating it" in d.log():
        d.wait_log(r"shadow \S+: created it")


def write_file(path, text, mode=None):
    with open(path, "w") as f:
        f.write(text)
    if mode is not None:
        os.chmod(path, mode)
    return str(path)


def read_file(path):
    with open(path) as f:
        return f.read()


def json_service(directory, name, **definition):
    """Write DIRECTORY/NAME.json from keyword arguments."""
    os.makedirs(str(directory), exist_ok=True)
    return write_file(os.path.join(str(directory), name + ".json"), json.dumps(definition))


def notify_counter(tmp_path, name):
    """(notifycmd that records each run and its stdin, function counting the runs)."""
    log = str(tmp_path / ("notified-" + name))
    command = "cat >> %s; echo >> %s" % (log, log)

    def runs():
        return read_file(log).count("\n") if os.path.exists(log) else 0

    return command, runs


def drop_update(directory, name, text):
    """Put an update file into DIRECTORY/new/ the way a writer must: tmp/, then rename
    (failed/ made too, for a test to list before the daemon has made it)."""
    os.makedirs(os.path.join(str(directory), "failed"), exist_ok=True)
    drop_action(str(directory), name, text)


def device_updates(emulator, prefix=PREFIX):
    """The update requests the device published, as parsed JSON."""
    return [m.json() for m in emulator.on(prefix + "/update")]


def assert_quiet(emulator, counters=(), seconds=3.0, prefix=PREFIX):
    """Nothing more happens for SECONDS: no update published, no notify run."""
    updates = len(device_updates(emulator, prefix))
    runs = [c() for c in counters]
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert len(device_updates(emulator, prefix)) == updates, \
            "unexpected update: %r" % device_updates(emulator, prefix)[updates:]
        assert [c() for c in counters] == runs, "unexpected notify run"
        time.sleep(0.05)


def shadow_state(emulator, thing=THING, shadow=None):
    document = emulator.get_shadow(thing, shadow)
    return document["state"] if document else None


def source_in(shell, path, names):
    """The values NAMES have after `. PATH` in SHELL (argv list), exactly, as bytes."""
    script = '. "$1"; shift; for n do eval "v=\\${$n}"; printf "%s\\0" "$v"; done'
    out = subprocess.run(shell + ["-c", script, "sh", str(path)] + list(names),
                         capture_output=True, check=True, timeout=10).stdout
    return out.split(b"\0")[:-1]
