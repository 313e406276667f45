"""Running one job's steps on this device: the checks against the system,
the handler processes, their output and their timeouts.

What a document means is lib/jobdoc.py's business and talking to the Jobs
service lib/jobs.py's; a `Runner` takes a parsed document to an outcome:

- Every step is checked (lib/jobcheck.py) before the first runs; a
  document that cannot run raises jobcheck.Refused (or
  jobdoc.JobDocumentError) and nothing runs.
- A step runs as argv (never a shell) with stdin /dev/null, in the job's
  own working directory (a fresh private directory, removed afterwards),
  with a defined environment: PATH, HOME, LANG=C, TZ/TMPDIR/LC_ALL when
  set, and CHARIOTD_THING, CHARIOTD_JOB_ID, CHARIOTD_JOB_EXECUTION,
  CHARIOTD_JOB_STEP, CHARIOTD_JOB_DOCUMENT (a file holding the document),
  CHARIOTD_JOB_PREVIOUS_STATUS (a file holding the statusDetails the
  execution had when it was picked up), CHARIOTD_JOB_STATUS_DIR and
  CHARIOTD_JOBS_DIR. Its stdout and stderr go to pipes read on the event
  loop, of which only the last TAIL_BYTES are kept. It is started by
  children.launch (which posts its exit and counts it among the children
  running); nothing here blocks the loop.
- Each step is killed (its whole process group) after --jobs-step-timeout
  seconds, or sooner when the document's `timeoutConfig` ends the job;
  that is FAILED (a device cannot report TIMED_OUT).
- Steps run in order and stop at the first failure (unless it is to be
  ignored); `finalStep` runs when all succeeded. The outcome, SUCCEEDED or
  FAILED with statusDetails, goes to `on_outcome`; progress files
  (lib/jobprogress.py) to `on_progress`; after `abandon()` or `terminate()`
  `on_ended` is called once no handler runs any more; `on_change` when a
  step starts (for --status-file, with `status()`).
"""

import json
import logging
import os
import shutil
import subprocess
import tempfile
import time

from . import children, jobcheck, jobdoc
from .jobprogress import ProgressFiles

log = logging.getLogger("chariotd")

TAIL_BYTES = 8192  # of each of a step's stdout and stderr, kept in memory
PASSED_ENV = ("TZ", "TMPDIR", "LC_ALL")


class Runner:
    """The steps of one job execution on THING, run one after the other."""

    def __init__(self, loop, thing, job_id, number, dirs, allow_commands, step_timeout,
                 on_progress, on_outcome, on_ended, on_change=lambda: None):
        self._loop = loop
        self.thing = thing
        self.job_id = job_id
        self.number = number
        self._dirs = dirs
        self._allow_commands = allow_commands
        self._step_timeout = step_timeout
        self._on_progress = on_progress
        self._on_outcome = on_outcome
        self._on_ended = on_ended
        self._on_change = on_change  # a step started (what --status-file shows changed)
        self.plan = None
        self.steps = []
        self.final = None
        self.index = 0
        self.in_final = False
        self.step = None  # the Step running, or last run
        self.step_started = None  # time.time() it started
        self.proc = None
        self.readers = {}  # fd -> [bytearray tail, lines, open]
        self.timed_out = None
        self.step_timer = None
        self.killed = None  # the step process being stopped
        self.deadline = None
        self.workdir = None
        self.progress = None
        self.stopping = False
        self.last_stdout = b""

    # -- checking ----------------------------------------------------------

    def prepare(self, document, details):
        """Check every step and make the working directory; Refused or
        jobdoc.JobDocumentError if the job cannot run."""
        plan = self.plan = jobdoc.parse(document)
        self.steps, self.final = jobcheck.resolve(plan, self._dirs, self._allow_commands)
        if plan.timeout:
            self.deadline = time.monotonic() + plan.timeout
        owner = None
        users = {s.user.pw_name: s.user for s in self.steps + ([self.final] if self.final else [])
                 if s.user is not None}
        if len(users) == 1:
            owner = next(iter(users.values()))
        self.workdir = tempfile.mkdtemp(prefix="chariotd-job-")
        status_dir = os.path.join(self.workdir, "status")
        os.mkdir(status_dir, 0o700)
        self.progress = ProgressFiles(self._loop, status_dir, "job %s on %s" % (self.job_id,
                                                                                self.thing),
                                      self._on_progress, lambda: self.proc is not None)
        files = [os.path.join(self.workdir, name) for name in ("job.json", "previous-status.json")]
        for path, content in zip(files, (document, details)):
            with open(path, "w") as f:
                json.dump(content, f)
        if users:
            # The steps' users must be able to write progress; with several
            # users the directories are shared with the group-less world.
            for path in [self.workdir, status_dir] + files:
                if owner is not None:
                    os.chown(path, owner.pw_uid, owner.pw_gid)
                else:
                    os.chmod(path, 0o1777 if os.path.isdir(path) else 0o644)

    # -- running -----------------------------------------------------------

    def start(self):
        self._next_step()

    def _next_step(self):
        if self.stopping:
            self._on_ended()
            return
        if self.index < len(self.steps):
            step = self.steps[self.index]
        elif self.final is not None and not self.in_final:
            self.in_final = True
            step = self.final
        else:
            details = {"reason": "%d step(s) succeeded" % (len(self.steps) +
                                                          (1 if self.final else 0))}
            if self.plan.include_stdout:
                details["stdout"] = self.last_stdout
            self._on_outcome("SUCCEEDED", jobdoc.status_details(details)[0])
            return
        self._spawn(step)

    def _environment(self, step):
        env = {"PATH": os.environ.get("PATH") or jobcheck.DEFAULT_PATH, "LANG": "C",
               "HOME": step.user.pw_dir if step.user else os.environ.get("HOME", "/"),
               "CHARIOTD_THING": self.thing, "CHARIOTD_JOB_ID": self.job_id,
               "CHARIOTD_JOB_EXECUTION": str(self.number or 1),
               "CHARIOTD_JOB_STEP": step.action.name,
               "CHARIOTD_JOB_DOCUMENT": os.path.join(self.workdir, "job.json"),
               "CHARIOTD_JOB_PREVIOUS_STATUS": os.path.join(self.workdir, "previous-status.json"),
               "CHARIOTD_JOB_STATUS_DIR": self.progress.directory,
               "CHARIOTD_JOBS_DIR": self._dirs[0]}
        for name in PASSED_ENV:
            if name in os.environ:
                env[name] = os.environ[name]
        if step.user:
            env["USER"] = env["LOGNAME"] = step.user.pw_name
        return env

    def _spawn(self, step):
        self.step, self.step_started = step, time.time()
        pipes = [os.pipe(), os.pipe()]
        kwargs = {}
        if step.user is not None:
            kwargs = {"user": step.user.pw_uid, "group": step.user.pw_gid,
                      "extra_groups": os.getgrouplist(step.user.pw_name, step.user.pw_gid)}
        try:
            proc = children.launch(self._loop, step.argv,
                                   lambda proc: self._exited(step, proc),
                                   stdin=subprocess.DEVNULL, stdout=pipes[0][1],
                                   stderr=pipes[1][1], cwd=self.workdir,
                                   env=self._environment(step), **kwargs)
        except (OSError, ValueError, subprocess.SubprocessError) as e:
            for r, w in pipes:
                os.close(r)
                os.close(w)
            self._step_failed(step, "could not start: %s" % (getattr(e, "strerror", None) or e),
                              b"", b"")
            return
        for r, w in pipes:
            os.close(w)
            os.set_blocking(r, False)
        self.proc = proc
        self.readers = {pipes[0][0]: [bytearray(), 0, True], pipes[1][0]: [bytearray(), 0, True]}
        self.out_fd, self.err_fd = pipes[0][0], pipes[1][0]
        for fd in self.readers:
            self._loop.add_reader(fd, lambda fd=fd: self._read(fd))
        self.timed_out = None
        timeout = self._step_timeout
        if self.deadline is not None:
            timeout = min(timeout, max(0.0, self.deadline - time.monotonic()))
        self.step_timer = self._loop.call_later(timeout, self._step_timeout_due, timeout)
        self.progress.watch()
        log.info("job %s on %s: step %r started (pid %d)", self.job_id, self.thing,
                 step.action.name, proc.pid)
        self._on_change()

    def _read(self, fd):
        entry = self.readers.get(fd)
        if entry is None or not entry[2]:
            return
        try:
            data = os.read(fd, 65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._close_reader(fd)
            return
        _keep(entry, data)

    def _close_reader(self, fd):
        entry = self.readers.get(fd)
        if entry is not None and entry[2]:
            self._loop.remove_reader(fd)
            os.close(fd)
            entry[2] = False

    def _drain(self):
        """(tail, lines) of stdout and stderr, with what the step wrote before it
        ended (a child of its may hold the pipes open, so no waiting for EOF)."""
        result = []
        for fd in (self.out_fd, self.err_fd):
            entry = self.readers[fd]
            for _ in range(64):
                if not entry[2]:
                    break
                try:
                    data = os.read(fd, 65536)
                except OSError:
                    break
                if not data:
                    break
                _keep(entry, data)
            self._close_reader(fd)
            tail, lines = bytes(entry[0]), entry[1]
            if tail and not tail.endswith(b"\n"):
                lines += 1
            result.append((tail, lines))
        self.readers = {}
        return result

    def _step_timeout_due(self, timeout):
        self.step_timer = None
        if self.proc is not None:
            self.timed_out = timeout
            self._kill()

    def _kill(self):
        """SIGTERM to the step's process group, SIGKILL to what is left of it
        children.STOP_GRACE later (children.stop_soon), once per step."""
        if self.killed is not self.proc:
            self.killed = self.proc
            children.stop_soon(self.proc)

    def _exited(self, step, proc):
        (out, _), (err, err_lines) = self._drain()
        if self.step_timer:
            self.step_timer.cancel()
        self.step_timer = None
        self.proc = None
        self.progress.poll(again=False)
        if self.stopping:
            self._on_ended()
            return
        status = proc.returncode
        action = step.action
        if self.timed_out is not None:
            why = "timed out after %ss and was killed" % _seconds(self.timed_out)
        elif status < 0:
            why = "was killed by signal %d" % -status
        elif status != 0:
            why = "exited with status %d" % status
        elif action.allow_stderr is not None and err_lines > action.allow_stderr:
            why = "wrote %d line(s) to stderr, more than allowStdErr %d" % (err_lines,
                                                                           action.allow_stderr)
        else:
            why = None
        self.last_stdout = out
        if why is None:
            log.info("job %s on %s: step %r succeeded", self.job_id, self.thing, action.name)
        else:
            self._step_failed(step, why, out, err)
            return
        self.index += 1
        self._next_step()

    def _step_failed(self, step, why, out, err):
        action = step.action
        if action.ignore_failure:
            log.warning("job %s on %s: step %r %s; ignored (ignoreStepFailure)", self.job_id,
                        self.thing, action.name, why)
            self.last_stdout = out
            self.index += 1
            self._next_step()
            return
        log.warning("job %s on %s: step %r %s", self.job_id, self.thing, action.name, why)
        details = {"reason": "step %r %s" % (action.name, why), "failedStep": action.name,
                   "stderr": err}
        if self.plan.include_stdout:
            details["stdout"] = out
        self._on_outcome("FAILED", jobdoc.status_details(details)[0])

    # -- stopping ----------------------------------------------------------

    def abandon(self):
        """The job ended in the cloud: kill the handler (as _kill does) and
        report nothing; on_ended follows, now if none runs."""
        self._stopping()
        if self.proc is not None:
            self._kill()
        else:
            self._on_ended()

    def terminate(self):
        """The daemon exits: the handler is killed (as _kill does; the daemon's
        children.stop_all makes sure). The job stays IN_PROGRESS in the cloud
        (and is reported FAILED, interrupted, after the restart)."""
        self._stopping()
        if self.proc is not None:
            log.info("stopping job %s's handler (pid %d)", self.job_id, self.proc.pid)
            self._kill()

    def _stopping(self):
        self.stopping = True
        if self.progress is not None:
            self.progress.close()

    def cleanup(self):
        if self.progress is not None:
            self.progress.close()
        if self.step_timer:
            self.step_timer.cancel()
            self.step_timer = None
        if self.workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None

    def status(self):
        """What runs now, for --status-file: the step, its number and pid."""
        if self.step is None:
            return {}
        total = len(self.steps) + (1 if self.final else 0)
        return {"step": self.step.action.name,
                "step_number": len(self.steps) + 1 if self.in_final else self.index + 1,
                "steps": total, "final_step": self.in_final,
                "pid": None if self.proc is None else self.proc.pid,
                "step_started": utc(self.step_started)}


def _keep(entry, data):
    """Add data to a stream's [tail, lines, open]: the last TAIL_BYTES only."""
    tail = entry[0]
    tail += data
    entry[1] += data.count(b"\n")
    if len(tail) > TAIL_BYTES:
        del tail[:len(tail) - TAIL_BYTES]


def utc(t):
    """Seconds since the epoch as ISO 8601 UTC (as --status-file shows times)."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def _seconds(value):
    return "%d" % value if value == int(value) else "%.1f" % value
