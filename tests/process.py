"""Runs the real chariotd as a process for tests, the way a supervisor would."""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHARIOTD = os.path.join(ROOT, "chariotd.py")


def make_certstore(directory, endpoint, certs):
    """Lay out a certstore: endpoint.txt and one entry per (id, cert, key)."""
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, "endpoint.txt"), "w") as f:
        f.write(endpoint + "\n")
    for cert_id, cert, key in certs:
        entry = os.path.join(directory, cert_id)
        os.makedirs(entry, exist_ok=True)
        shutil.copy(cert, os.path.join(entry, cert_id + "-certificate.pem.crt"))
        shutil.copy(key, os.path.join(entry, cert_id + "-private.pem.key"))
        os.chmod(os.path.join(entry, cert_id + "-private.pem.key"), 0o600)
    return directory


def drop_action(directory, name, data=b""):
    """Put a file into an action directory the way a writer must: tmp/, then rename to new/."""
    for sub in ("tmp", "new"):
        os.makedirs(os.path.join(directory, sub), exist_ok=True)
    tmp = os.path.join(directory, "tmp", name)
    with open(tmp, "wb") as f:
        f.write(data.encode() if isinstance(data, str) else data)
    os.rename(tmp, os.path.join(directory, "new", name))


def read_status(path):
    """The --status-file document at path, None while there is none."""
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        return None


def wait_until(condition, timeout=10, what="condition"):
    """Poll condition() until it returns something truthy, and return that."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for %s" % what)
        time.sleep(0.02)


def alive(pid):
    """Whether process pid runs (a zombie does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open("/proc/%d/stat" % pid) as f:
        return f.read().split(")")[-1].split()[0] != "Z"


class DaemonProcess:
    """One chariotd process at a time; restartable, with its log in a file."""

    command_prefix = ()  # e.g. ("unshare", "-U"): run it as an unprivileged user

    def __init__(self, workdir, args, env=None):
        self.workdir = workdir
        self.args = list(args)
        self.env = dict(os.environ, PYTHONUNBUFFERED="1", **(env or {}))
        self.logpath = os.path.join(workdir, "chariotd.log")
        self.proc = None
        self._logfile = None

    def start(self):
        self._logfile = open(self.logpath, "ab")  # noqa: SIM115 (kept for the process)
        self._log_start = self._logfile.tell()
        argv = list(self.command_prefix) + [sys.executable, CHARIOTD] + self.args
        self.proc = subprocess.Popen(argv, cwd=self.workdir,
                                     stdin=subprocess.DEVNULL, stdout=self._logfile,
                                     stderr=subprocess.STDOUT, env=self.env)
        return self

    def log(self, all_runs=False):
        with open(self.logpath, "rb") as f:
            if not all_runs:
                f.seek(self._log_start)
            return f.read().decode("utf-8", "replace")

    def wait_log(self, pattern, timeout=15, all_runs=False):
        """Wait for a log line matching the regex PATTERN; return the match."""
        deadline = time.monotonic() + timeout
        rx = re.compile(pattern)
        while True:
            m = rx.search(self.log(all_runs))
            if m:
                return m
            if self.proc.poll() is not None and not rx.search(self.log(all_runs)):
                raise AssertionError("chariotd exited (%s) before logging %r:\n%s"
                                     % (self.proc.returncode, pattern, self.log()))
            if time.monotonic() > deadline:
                raise AssertionError("no log line %r within %s s:\n%s"
                                     % (pattern, timeout, self.log()))
            time.sleep(0.02)

    def wait_exit(self, timeout=15):
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError("chariotd still running after %s s:\n%s"
                                 % (timeout, self.log())) from None

    def signal(self, sig):
        self.proc.send_signal(sig)

    def stop(self, timeout=10):
        """SIGTERM and wait; return the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.wait_exit(timeout)

    def kill(self):
        """kill -9, as a power cut or an OOM kill would."""
        self.proc.kill()
        self.proc.wait()

    def restart(self):
        if self.proc.poll() is None:
            self.stop()
        return self.start()

    def close(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if self._logfile:
            self._logfile.close()
