"""Child processes that never block the event loop.

`run()` starts a command, feeds it its standard input and collects its
output on a short-lived waiter thread, kills it when it overstays its
timeout, and posts the result back to the loop thread. Used for notify
commands, letterhead generators, default shadows, subscribe-exec and the
like. Process groups make sure a shell's own children die with it.
"""

import logging
import os
import signal
import subprocess
import threading

log = logging.getLogger("chariotd")

OUTPUT_LIMIT = 1024 * 1024


class Result:
    __slots__ = ("returncode", "stdout", "stderr", "timed_out", "error")

    def __init__(self, returncode=None, stdout=b"", stderr=b"", timed_out=False, error=None):
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr
        self.timed_out = timed_out
        self.error = error

    @property
    def ok(self):
        return self.returncode == 0 and not self.timed_out and self.error is None

    def describe(self):
        """A short phrase for a log line: why the command did not succeed."""
        if self.error:
            return self.error
        if self.timed_out:
            return "timed out and was killed"
        detail = self.stderr.decode("utf-8", "replace").strip().splitlines()
        tail = (": " + detail[-1][:200]) if detail else ""
        if self.returncode < 0:
            return "killed by signal %d%s" % (-self.returncode, tail)
        return "exited with status %d%s" % (self.returncode, tail)


def run(loop, command, done, stdin=b"", timeout=10, env=None, shell=True):
    """Run command (a shell string, or argv when shell=False); done(Result) on the loop."""
    try:
        proc = subprocess.Popen(command, shell=shell, stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                                start_new_session=True, close_fds=True)
    except OSError as e:
        loop.post(done, Result(error="cannot start: %s" % (e.strerror or e)))
        return None
    threading.Thread(target=_wait, args=(loop, proc, stdin, timeout, done),
                     daemon=True).start()
    return proc


def _wait(loop, proc, stdin, timeout, done):
    try:
        out, err = proc.communicate(stdin, timeout=timeout)
        result = Result(proc.returncode, out[:OUTPUT_LIMIT], err[-4096:])
    except subprocess.TimeoutExpired:
        kill_group(proc)
        out, err = proc.communicate()
        result = Result(proc.returncode, out[:OUTPUT_LIMIT], err[-4096:], timed_out=True)
    except OSError as e:
        kill_group(proc)
        proc.wait()
        result = Result(proc.returncode, error="i/o with the command failed: %s" % e.strerror)
    loop.post(done, result)


def kill_group(proc, sig=signal.SIGKILL):
    """Signal the child and everything it started in its session."""
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass
