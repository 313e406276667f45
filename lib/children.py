"""Child processes: each in a process group of its own, none outliving the daemon.

`spawn()` starts a program as the leader of a new session (so it and
everything it starts form one process group) and records the group;
`launch()` does that for a child that runs as long as it likes (a tunnel
proxy, a job step), counts it in `running` and tells the loop when it exits;
`stop_group()` ends one group: SIGTERM, then SIGKILL after a grace
(`stop_soon()` does it on a thread of its own, for the loop thread);
`stop_all()` does that to every group still alive when the daemon exits,
so no notify command, subscribe-exec, letterhead generator, tunnel proxy or
job step (nor a background child one of them left behind) outlives the
daemon.

`run()` starts a command with its standard input in an anonymous temporary
file and its output in pipes, drains those on a short-lived thread (keeping
at most OUTPUT_LIMIT bytes: a flood fills neither memory nor /tmp, and is
cut off with SIGPIPE), kills it when it overstays its timeout, and posts the
result back to the loop thread as soon as it exits. Used
for notify commands, letterhead generators, default shadows, subscribe-exec
and the like. A command that times out is killed with its whole process
group, so a shell's own children die with it; what a finished command left
running in its group (a child that holds its output, say) is killed when
the command's timeout would have expired.
"""

import os
import signal
import threading
import time

OUTPUT_LIMIT = 1024 * 1024
STOP_GRACE = 5.0  # seconds between SIGTERM and SIGKILL

_groups = set()  # process group ids of children that may still be running
_stopping = set()  # of those, the groups stop_soon() sent SIGTERM (stop_all() does not again)
_groups_lock = threading.Lock()
running = 0  # children of run() and launch() not yet finished, for --status-file
on_change = None  # on_change() on the loop thread when running changes (lib/status.py)


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


def spawn(args, **popen_args):
    """subprocess.Popen(args, ...) as the leader of a new process group, recorded
    for stop_all(); OSError or ValueError when it cannot start."""
    # Imported here: about 0.5 MB a daemon that never spawns anything keeps.
    import subprocess

    proc = subprocess.Popen(args, start_new_session=True, close_fds=True, **popen_args)
    with _groups_lock:
        _groups.add(proc.pid)
    return proc


def launch(loop, args, exited, **popen_args):
    """spawn() a child that has no timeout here and whose pipes are the
    caller's; it counts in `running` until it exits, and exited(proc) is then
    called on the loop thread. OSError or ValueError when it cannot start."""
    proc = spawn(args, **popen_args)
    threading.Thread(target=_reap, args=(loop, proc, _counted(exited)), daemon=True).start()
    return proc


def _reap(loop, proc, finished):
    proc.wait()
    loop.post(finished, proc)


def group_alive(pgid):
    """True while any process of the group exists (a zombie counts)."""
    return signal_group(pgid, 0)


def signal_group(pgid, sig):
    """Send sig to every process of the group; False when it has none left."""
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        with _groups_lock:
            _groups.discard(pgid)
            _stopping.discard(pgid)
        return False
    except PermissionError:
        pass
    return True


def kill_group(proc, sig=signal.SIGKILL):
    """Signal the child and everything it started in its session."""
    signal_group(proc.pid, sig)


def stop_group(pgid, grace=STOP_GRACE):
    """SIGTERM the group, wait up to grace seconds, then SIGKILL what is left.
    Blocks; for the daemon's exit and for waiter threads."""
    stop_groups([pgid], grace)


def stop_soon(proc, grace=STOP_GRACE):
    """stop_group() for PROC's group without blocking the caller. What the
    group holds dies too, even when its leader exits at the SIGTERM."""
    with _groups_lock:
        _stopping.add(proc.pid)
    threading.Thread(target=stop_group, args=(proc.pid, grace), daemon=True).start()


def stop_groups(pgids, grace=STOP_GRACE, terminated=()):
    """SIGTERM each group (but those in TERMINATED, which have had theirs), wait up
    to grace seconds for them to go, then SIGKILL what is left."""
    alive = [g for g in pgids
             if (group_alive(g) if g in terminated else signal_group(g, signal.SIGTERM))]
    deadline = time.monotonic() + grace
    while alive and time.monotonic() < deadline:
        time.sleep(0.02)
        alive = [g for g in alive if group_alive(g)]
    for g in alive:
        signal_group(g, signal.SIGKILL)


def stop_all(grace=STOP_GRACE):
    """The daemon is exiting: stop every child process group still running."""
    with _groups_lock:
        pgids = list(_groups)
        terminated = _stopping & _groups
    if pgids:
        stop_groups(pgids, grace, terminated)


def run(loop, command, done, stdin=b"", timeout=10, env=None, shell=True):
    """Run command (a shell string, or argv when shell=False); done(Result) on the loop."""
    import subprocess
    import tempfile

    # Standard input is an anonymous file (a child that never reads cannot
    # block a writer); standard output and error are pipes that a waiter
    # thread drains, keeping at most OUTPUT_LIMIT bytes of each, so a command
    # that floods them fills neither memory nor /tmp. The command is done when
    # it exits, even if something it started still holds the pipes.
    try:
        stdin_file = tempfile.TemporaryFile()  # noqa: SIM115 (closed by _wait)
    except OSError as e:
        loop.post(done, Result(error="cannot make a temporary file: %s" % e.strerror))
        return None
    try:
        stdin_file.write(stdin)
        stdin_file.seek(0)
        proc = spawn(command, shell=shell, stdin=stdin_file, stdout=subprocess.PIPE,
                     stderr=subprocess.PIPE, env=env)
    except OSError as e:
        stdin_file.close()
        loop.post(done, Result(error="cannot start: %s" % (e.strerror or e)))
        return None
    stdin_file.close()  # the child has its own descriptor
    threading.Thread(target=_wait, args=(loop, proc, timeout, _counted(done)),
                     daemon=True).start()
    return proc


def _counted(done):
    """done, counting the command as running until it is called."""
    global running
    running += 1
    if on_change:
        on_change()

    def finished(result):
        global running
        running -= 1
        if on_change:
            on_change()
        done(result)

    return finished


def _wait(loop, proc, timeout, done):
    import select
    import subprocess

    deadline = time.monotonic() + timeout
    out_fd, err_fd = proc.stdout.fileno(), proc.stderr.fileno()
    kept = {out_fd: bytearray(), err_fd: bytearray()}
    pipes = {out_fd: proc.stdout, err_fd: proc.stderr}
    timed_out = False
    while pipes:
        left = deadline - time.monotonic()
        if left <= 0:
            timed_out = True
            break
        exited = proc.poll() is not None
        ready = select.select(list(pipes), [], [], 0 if exited else min(left, 0.5))[0]
        for fd in ready:
            data = os.read(fd, 65536)
            if data and len(kept[fd]) < OUTPUT_LIMIT:
                kept[fd] += data[:OUTPUT_LIMIT - len(kept[fd])]
            elif data:
                data = b""  # over the limit: close it, the writer gets SIGPIPE
            if not data:
                pipes.pop(fd).close()
        if exited and not ready:
            break  # it has exited; what is still open belongs to a child it left
    for pipe in pipes.values():
        pipe.close()
    if not timed_out:
        try:
            proc.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            timed_out = True
    if timed_out:
        kill_group(proc)
        proc.wait()
    loop.post(done, Result(proc.returncode, bytes(kept[out_fd]), bytes(kept[err_fd][-4096:]),
                           timed_out=timed_out))
    # What the command left behind in its group lives until its timeout.
    while group_alive(proc.pid):
        left = deadline - time.monotonic()
        if left <= 0:
            signal_group(proc.pid, signal.SIGKILL)
            break
        time.sleep(min(left, 0.2))
