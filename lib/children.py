"""Child processes that never block the event loop.

`run()` starts a command with its standard input and output in anonymous
temporary files, waits for it on a short-lived thread, kills it when it
overstays its timeout, and posts the result back to the loop thread. Used
for notify commands, letterhead generators, default shadows, subscribe-exec
and the like. A command that times out is killed with its whole process
group, so a shell's own children die with it.
"""

import os
import signal
import threading

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
    # Imported here: about 0.5 MB a daemon that never spawns anything keeps.
    import subprocess
    import tempfile

    # Standard input and output are anonymous files, not pipes: a daemon the
    # command starts may keep them open for ever, and the command's end must
    # not wait for that (nor may a child that never reads block our writer).
    try:
        files = [tempfile.TemporaryFile() for _ in range(3)]  # noqa: SIM115 (closed by _wait)
    except OSError as e:
        loop.post(done, Result(error="cannot make temporary files: %s" % e.strerror))
        return None
    files[0].write(stdin)
    files[0].seek(0)
    try:
        proc = subprocess.Popen(command, shell=shell, stdin=files[0], stdout=files[1],
                                stderr=files[2], env=env, start_new_session=True,
                                close_fds=True)
    except OSError as e:
        _close(files)
        loop.post(done, Result(error="cannot start: %s" % (e.strerror or e)))
        return None
    threading.Thread(target=_wait, args=(loop, proc, files, timeout, done), daemon=True).start()
    return proc


def _wait(loop, proc, files, timeout, done):
    import subprocess

    timed_out = False
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
        kill_group(proc)
        proc.wait()
    out = _read(files[1], OUTPUT_LIMIT)
    err = _read(files[2], None)[-4096:]
    _close(files)
    loop.post(done, Result(proc.returncode, out, err, timed_out=timed_out))


def _read(f, limit):
    f.seek(0)
    return f.read() if limit is None else f.read(limit)


def _close(files):
    for f in files:
        f.close()


def kill_group(proc, sig=signal.SIGKILL):
    """Signal the child and everything it started in its session."""
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass
