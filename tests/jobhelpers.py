"""Helpers for the --jobs tests (no tests here): job documents, and a --jobs
directory of handlers that record how they were run.

The handler is a small Python program (`act`) that records how it was run
(argv, working directory, environment, user) and then does what its
arguments say: `out=TEXT`, `err=TEXT`, `progress=JSON`, `sleep=SEC`,
`wait=FILE` (until FILE exists), `noterm` (ignore SIGTERM), `exit=N`.
"""

import json
import os
import signal
import sys

from process import wait_until

THING = "Gw1"
TERMINAL = ("SUCCEEDED", "FAILED", "REJECTED", "TIMED_OUT", "CANCELED", "REMOVED")

ACT = """#!%s
import json, os, signal, sys, time
record = os.path.join(%r, "%%d-%%d.json" %% (time.monotonic_ns(), os.getpid()))
env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "USER")
       or k.startswith("CHARIOTD_")}
with open(record + ".tmp", "w") as f:
    json.dump({"name": os.path.basename(sys.argv[0]), "argv": sys.argv[1:], "cwd": os.getcwd(),
               "uid": os.getuid(), "env": env, "pid": os.getpid(), "pgid": os.getpgid(0)}, f)
os.rename(record + ".tmp", record)
for arg in sys.argv[1:]:
    key, _, value = arg.partition("=")
    if key == "out":
        print(value, flush=True)
    elif key == "err":
        print(value, file=sys.stderr, flush=True)
    elif key == "progress":
        d = os.environ["CHARIOTD_JOB_STATUS_DIR"]
        with open(os.path.join(d, ".p"), "w") as f:
            f.write(value)
        os.rename(os.path.join(d, ".p"), os.path.join(d, "%%d.json" %% time.monotonic_ns()))
    elif key == "sleep":
        time.sleep(float(value))
    elif key == "wait":
        while not os.path.exists(value):
            time.sleep(0.05)
    elif key == "noterm":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    elif key == "exit":
        sys.exit(int(value))
"""


class Handlers:
    """A --jobs directory of `act` copies, and what their runs recorded."""

    def __init__(self, base):
        self.dir = str(base / "handlers")
        self.records = str(base / "records")
        os.makedirs(self.dir)
        os.makedirs(self.records)
        self.add("act")

    def add(self, name, directory=None):
        path = os.path.join(directory or self.dir, name)
        with open(path, "w") as f:
            f.write(ACT % (sys.executable, self.records))
        os.chmod(path, 0o755)
        return path

    def runs(self):
        names = sorted(n for n in os.listdir(self.records) if n.endswith(".json"))
        result = []
        for n in names:
            with open(os.path.join(self.records, n)) as f:
                result.append(json.load(f))
        return result

    def wait_runs(self, count, timeout=15):
        return wait_until(lambda: len(self.runs()) >= count and self.runs(), timeout,
                          "%d handler run(s)" % count)


def handler_directory(tmp_path):
    """The `handlers` fixture's body, for other test modules' fixtures."""
    h = Handlers(tmp_path)
    yield h
    for run in h.runs():  # never leave a handler behind
        try:
            os.killpg(run["pgid"], signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def start(daemon_factory, certstore, handlers, *options):
    d = daemon_factory("--jobs=%s:%s" % (THING, handlers.dir), *options, certstore=certstore)
    d.wait_log("connected to")
    return d


def step(name, handler="act", args=(), **extra):
    action = {"name": name, "type": "runHandler", "input": {"handler": handler,
                                                            "args": list(args)}}
    action.update(extra)
    return {"action": action}


def doc(*steps, final=None, **extra):
    document = {"version": "1.0", "steps": list(steps)}
    if final:
        document["finalStep"] = final
    document.update(extra)
    return document


def finished(emulator, job_id, timeout=20):
    def done():
        e = emulator.job_execution(THING, job_id)
        return e if e and e["status"] in TERMINAL else None
    return wait_until(done, timeout, "job %s to finish" % job_id)
