"""--jobs=THING:DIR: AWS IoT Jobs on the device, one job at a time per thing.

For each thing it subscribes to `notify-next` (and to the replies of its
own requests, which AWS delivers anyway), asks for the next pending
execution with StartNextPendingJobExecution, runs it and reports the
outcome with UpdateJobExecution. What a document means is lib/jobdoc.py's
business; this module checks it against the system (the handler exists in
a handler directory, the user exists and chariotd may become it, commands
are allowed), runs the steps and talks to the Jobs service:

- Every step is checked before the first runs; a document that cannot run
  is REJECTED with the reason, and nothing runs.
- A step runs as argv (never a shell) with stdin /dev/null, in the job's
  own working directory (a fresh private directory, removed afterwards),
  with a defined environment: PATH, HOME, LANG=C, TZ/TMPDIR/LC_ALL when
  set, and CHARIOTD_THING, CHARIOTD_JOB_ID, CHARIOTD_JOB_EXECUTION,
  CHARIOTD_JOB_STEP, CHARIOTD_JOB_DOCUMENT (a file holding the document),
  CHARIOTD_JOB_PREVIOUS_STATUS (a file holding the statusDetails the
  execution had when it was picked up), CHARIOTD_JOB_STATUS_DIR and
  CHARIOTD_JOBS_DIR. Its stdout and stderr go
  to pipes read on the event loop, of which only the last TAIL_BYTES are
  kept. A waiter thread posts its exit; nothing here blocks the loop.
- Each step is killed (its whole process group) after --jobs-step-timeout
  seconds, or sooner when the document's `timeoutConfig` ends the job;
  that is FAILED (a device cannot report TIMED_OUT; the service sets that
  from its own timers, and the handler is stopped when it does).
- A handler writes JSON objects into CHARIOTD_JOB_STATUS_DIR (as NAME.json,
  written elsewhere and renamed in) to report progress; they go out as
  IN_PROGRESS updates, at most one per PROGRESS_INTERVAL.
- Updates carry expectedVersion; a VersionMismatch is settled from the
  executionState in the reply. A job found CANCELED, TIMED_OUT or removed
  (notify-next moves on, a reply says the execution is terminal or gone,
  or a describe after reconnecting says so) has its handler stopped and is
  not reported on.
- start-next marks each execution it starts with this process's run token
  (statusDetails `chariotdRun`). An execution that comes back IN_PROGRESS
  without our token was interrupted (chariotd crashed, lost power or was
  restarted mid-job): it is reported FAILED with that reason, unless its
  handler asked to be run again after a restart by reporting
  `"resumeAfterRestart": "true"` (reboot.sh does), in which case the job
  runs again from its first step.
"""

import errno
import json
import logging
import os
import pwd
import re
import secrets
import shutil
import signal
import stat
import subprocess
import tempfile
import threading
import time

from . import jobdoc

log = logging.getLogger("chariotd")

THING_NAME = re.compile(r"[a-zA-Z0-9:_-]{1,128}")
TERMINAL = ("SUCCEEDED", "FAILED", "REJECTED", "TIMED_OUT", "CANCELED", "REMOVED")
RUN_KEY = "chariotdRun"
RESUME_KEY = "resumeAfterRestart"
TAIL_BYTES = 8192  # of each of a step's stdout and stderr, kept in memory
STOP_GRACE = 5.0  # SIGTERM, then SIGKILL after this
REPLY_TIMEOUT = 30.0
RETRY_DELAY = 30.0
PROGRESS_INTERVAL = 1.0
PROGRESS_POLL = 0.25
PROGRESS_FILE_LIMIT = 8192
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
PASSED_ENV = ("TZ", "TMPDIR", "LC_ALL")
INTERRUPTED = ("interrupted: chariotd stopped while the job was in progress (crash, power cut "
               "or restart); not run again")

# Marks the executions this process started; any other IN_PROGRESS one was interrupted.
RUN_TOKEN = "%d-%s" % (os.getpid(), secrets.token_hex(6))


def start(daemon):
    opts = daemon.options
    dirs = {}
    for thing, directory in opts.jobs:
        if not THING_NAME.fullmatch(thing):
            log.error("--jobs: %r is not a valid thing name (THING/SHADOW does not apply)", thing)
            daemon.exit(2)
            return None
        if not os.path.isdir(directory):
            log.error("--jobs: %s is not a directory", directory)
            daemon.exit(2)
            return None
        dirs.setdefault(thing, []).append(os.path.abspath(directory))
    return Jobs([ThingJobs(daemon, thing, d, opts.jobs_allow_commands, opts.jobs_step_timeout)
                 for thing, d in dirs.items()])


class Jobs:
    def __init__(self, things):
        self.things = things

    def stop(self):
        for thing in self.things:
            thing.stop()


class Refused(Exception):
    """A job chariotd will not run: REJECTED with this reason."""


class Step:
    """One action ready to run: the program and how."""

    __slots__ = ("action", "argv", "user")

    def __init__(self, action, argv, user):
        self.action = action
        self.argv = argv
        self.user = user  # a pwd entry, or None for chariotd's own user


class Run:
    """The job being run (or reported on) for one thing."""

    def __init__(self, job_id, number, version):
        self.job_id = job_id
        self.number = number
        self.version = version
        self.steps = []
        self.final = None
        self.plan = None
        self.index = 0
        self.in_final = False
        self.proc = None
        self.readers = {}  # fd -> [bytearray tail, lines]
        self.timed_out = None
        self.step_timer = None
        self.kill_timer = None
        self.deadline = None
        self.workdir = None
        self.status_dir = None
        self.poll_timer = None
        self.progress = None  # details waiting to go out
        self.progress_sent = 0.0
        self.progress_timer = None
        self.final_update = None  # (status, details)
        self.inflight = None  # the update body in flight
        self.abandoned = False
        self.last_stdout = b""


class ThingJobs:
    def __init__(self, daemon, thing, dirs, allow_commands, step_timeout):
        self._loop = daemon.loop
        self._publisher = daemon.publisher
        self._conn = daemon.connection
        self.thing = thing
        self._dirs = dirs
        self._allow_commands = allow_commands
        self._step_timeout = step_timeout
        self._prefix = "$aws/things/%s/jobs" % thing
        self._run = None
        self._waiting = {}  # clientToken -> (on_accepted, on_rejected, timer)
        self._starting = False
        self._seq = 0
        self._retry = None
        self._stopped = False
        for suffix in ("notify-next", "start-next/accepted", "start-next/rejected",
                       "+/update/accepted", "+/update/rejected", "+/get/accepted",
                       "+/get/rejected"):
            self._conn.subscribe(self._prefix + "/" + suffix, self._message)
        self._conn.on_up(self._connected)
        self._conn.on_down(self._disconnected)

    # -- the Jobs service ---------------------------------------------------

    def _request(self, suffix, body, accepted, rejected, lost=None):
        self._seq += 1
        token = "chariotd-%s-%d" % (RUN_TOKEN, self._seq)
        body = dict(body, clientToken=token)
        timer = self._loop.call_later(REPLY_TIMEOUT, self._no_reply, token, lost)
        self._waiting[token] = (accepted, rejected, timer)
        self._publisher.publish(self._prefix + "/" + suffix,
                                json.dumps(body, separators=(",", ":")).encode(), 1,
                                lambda ok: None)

    def _no_reply(self, token, lost):
        if self._waiting.pop(token, None) is not None:
            log.warning("jobs for %s: no reply to a request within %ds", self.thing, REPLY_TIMEOUT)
            if lost:
                lost()

    def _message(self, topic, payload):
        try:
            doc = json.loads(payload)
        except ValueError:
            log.warning("jobs for %s: a message on %s is not JSON; ignored", self.thing, topic)
            return
        if not isinstance(doc, dict):
            return
        rest = topic[len(self._prefix) + 1:]
        if rest == "notify-next":
            self._notify_next(doc)
            return
        waiting = self._waiting.pop(doc.get("clientToken"), None)
        if waiting is None:
            return  # someone else's reply, or a repeat
        accepted, rejected, timer = waiting
        timer.cancel()
        (accepted if rest.endswith("/accepted") else rejected)(doc)

    def _connected(self):
        for _accepted, _rejected, timer in self._waiting.values():
            timer.cancel()
        self._waiting.clear()
        self._starting = False
        run = self._run
        if run is None:
            self._start_next()
            return
        run.inflight = None
        if run.final_update is None:
            self._describe(run)  # still ours, or canceled while we were away?
        self._send_update(run)

    def _disconnected(self):
        pass  # requests in flight are settled again once the connection is back

    def _notify_next(self, doc):
        execution = doc.get("execution")
        run = self._run
        if run is None:
            if isinstance(execution, dict):
                self._start_next()
            return
        if not isinstance(execution, dict) or execution.get("jobId") != run.job_id:
            # The head moved on: ours is perhaps no longer pending. Ask.
            self._describe(run)

    def _start_next(self):
        if self._stopped or self._run is not None or self._starting or not self._conn.connected:
            return
        if self._retry:
            self._retry.cancel()
            self._retry = None
        self._starting = True
        self._request("start-next", {"statusDetails": {RUN_KEY: RUN_TOKEN}},
                      self._start_accepted, self._start_rejected, self._start_lost)

    def _start_lost(self):
        self._starting = False
        self._start_next()

    def _start_rejected(self, doc):
        self._starting = False
        log.error("jobs for %s: start-next rejected: %s %s", self.thing, doc.get("code"),
                  doc.get("message"))
        self._retry = self._loop.call_later(RETRY_DELAY, self._start_next)

    def _start_accepted(self, doc):
        self._starting = False
        execution = doc.get("execution")
        if not isinstance(execution, dict):
            log.info("jobs for %s: no pending job", self.thing)
            return
        if self._run is not None:
            return
        job_id = execution.get("jobId")
        version = execution.get("versionNumber")
        if not isinstance(job_id, str) or not isinstance(version, int):
            log.error("jobs for %s: start-next gave an execution without jobId/versionNumber",
                      self.thing)
            return
        run = self._run = Run(job_id, execution.get("executionNumber"), version)
        details = execution.get("statusDetails") or {}
        if details.get(RUN_KEY) != RUN_TOKEN:
            if details.get(RESUME_KEY) == "true":
                log.info("job %s on %s was interrupted and asked to run again after a restart; "
                         "running it again", job_id, self.thing)
            else:
                log.warning("job %s on %s was left in progress by an earlier run; reporting it "
                            "FAILED", job_id, self.thing)
                self._finish(run, "FAILED", {"reason": INTERRUPTED})
                return
        try:
            self._prepare(run, execution.get("jobDocument"), details)
        except (jobdoc.JobDocumentError, Refused) as e:
            log.error("job %s on %s REJECTED: %s", job_id, self.thing, e)
            self._finish(run, "REJECTED", {"reason": str(e)})
            return
        log.info("job %s on %s: %d step(s)%s", job_id, self.thing, len(run.steps),
                 " and a final step" if run.final else "")
        self._next_step(run)

    def _describe(self, run):
        self._request("%s/get" % run.job_id, {"includeJobDocument": False},
                      lambda doc: self._described(run, doc),
                      lambda doc: self._describe_rejected(run, doc))

    def _described(self, run, doc):
        execution = doc.get("execution") or {}
        status = execution.get("status")
        if status in TERMINAL:
            self._abandon(run, status)
        elif isinstance(execution.get("versionNumber"), int) and run.inflight is None:
            run.version = execution["versionNumber"]

    def _describe_rejected(self, run, doc):
        code = doc.get("code")
        if code in ("ResourceNotFound", "TerminalStateReached"):
            self._abandon(run, (doc.get("executionState") or {}).get("status") or
                          "no longer pending (%s)" % code)

    # -- reporting ------------------------------------------------------------

    def _progress(self, run, details):
        if run.final_update is not None or run.abandoned:
            return
        run.progress = dict(run.progress or {}, **details)
        self._send_update(run)

    def _finish(self, run, status, details):
        run.final_update = (status, details)
        run.progress = None
        self._send_update(run)

    def _send_update(self, run):
        if run.inflight is not None or run.abandoned or run is not self._run:
            return
        if run.final_update is not None:
            status, details = run.final_update
        elif run.progress is not None:
            wait = run.progress_sent + PROGRESS_INTERVAL - time.monotonic()
            if wait > 0:
                if run.progress_timer is None:
                    run.progress_timer = self._loop.call_later(wait, self._progress_due, run)
                return
            status, details = "IN_PROGRESS", run.progress
            run.progress = None
            run.progress_sent = time.monotonic()
        else:
            return
        if not self._conn.connected:
            if status == "IN_PROGRESS":
                run.progress = details  # goes out once connected
            return
        body = {"status": status, "expectedVersion": run.version,
                "includeJobExecutionState": True}
        if details:
            body["statusDetails"] = details
        if run.number is not None:
            body["executionNumber"] = run.number
        run.inflight = body
        self._request("%s/update" % run.job_id, body, lambda doc: self._updated(run, doc),
                      lambda doc: self._update_rejected(run, doc), lambda: self._update_lost(run))

    def _progress_due(self, run):
        run.progress_timer = None
        self._send_update(run)

    def _update_lost(self, run):
        body, run.inflight = run.inflight, None
        if body and body["status"] == "IN_PROGRESS" and run.final_update is None:
            run.progress = dict(body.get("statusDetails") or {}, **(run.progress or {}))
        self._send_update(run)

    def _updated(self, run, doc):
        body, run.inflight = run.inflight, None
        state = doc.get("executionState") or {}
        version = state.get("versionNumber")
        run.version = version if isinstance(version, int) else run.version + 1
        if body and body["status"] != "IN_PROGRESS":
            log.info("job %s on %s reported %s", run.job_id, self.thing, body["status"])
            self._done(run)
            return
        self._send_update(run)

    def _update_rejected(self, run, doc):
        body, run.inflight = run.inflight, None
        code = doc.get("code")
        state = doc.get("executionState") or {}
        status = state.get("status")
        if body and status is not None and status == body["status"] and status in TERMINAL:
            # Our own final update got there; its reply was lost.
            self._done(run)
            return
        if status in TERMINAL or code in ("InvalidStateTransition", "ResourceNotFound"):
            self._abandon(run, status or "no longer pending (%s)" % code)
            return
        if code == "VersionMismatch" and isinstance(state.get("versionNumber"), int):
            log.info("job %s on %s: version %s, not %s; updating again", run.job_id, self.thing,
                     state["versionNumber"], run.version)
            run.version = state["versionNumber"]
            if body and body["status"] == "IN_PROGRESS" and run.final_update is None:
                run.progress = dict(body.get("statusDetails") or {}, **(run.progress or {}))
            self._send_update(run)
            return
        log.error("job %s on %s: update rejected: %s %s", run.job_id, self.thing, code,
                  doc.get("message"))
        if body and body["status"] != "IN_PROGRESS":
            if body.get("statusDetails"):
                # Perhaps the details; the outcome matters more than they do.
                status, _details = run.final_update
                run.final_update = (status, None)
                self._send_update(run)
            else:
                self._done(run)
        else:
            self._send_update(run)

    def _abandon(self, run, status):
        """The service ended the job (canceled, timed out, removed): stop, report nothing."""
        if run.abandoned or run is not self._run:
            return
        run.abandoned = True
        log.warning("job %s on %s is %s in the cloud; stopping it", run.job_id, self.thing, status)
        if run.proc is not None:
            self._kill(run)
        else:
            self._done(run)

    def _done(self, run):
        if run is not self._run:
            return
        self._cleanup(run)
        self._run = None
        self._start_next()

    # -- preparing and running --------------------------------------------

    def _prepare(self, run, document, details):
        plan = jobdoc.parse(document)
        run.plan = plan
        run.steps = [self._resolve(a, plan) for a in plan.steps]
        run.final = self._resolve(plan.final, plan) if plan.final else None
        if plan.timeout:
            run.deadline = time.monotonic() + plan.timeout
        owner = None
        users = {s.user.pw_name: s.user for s in run.steps + ([run.final] if run.final else [])
                 if s.user is not None}
        if len(users) == 1:
            owner = next(iter(users.values()))
        run.workdir = tempfile.mkdtemp(prefix="chariotd-job-")
        run.status_dir = os.path.join(run.workdir, "status")
        os.mkdir(run.status_dir, 0o700)
        files = [os.path.join(run.workdir, name) for name in ("job.json", "previous-status.json")]
        for path, content in zip(files, (document, details)):
            with open(path, "w") as f:
                json.dump(content, f)
        if users:
            # The steps' users must be able to write progress; with several
            # users the directories are shared with the group-less world.
            for path in [run.workdir, run.status_dir] + files:
                if owner is not None:
                    os.chown(path, owner.pw_uid, owner.pw_gid)
                else:
                    os.chmod(path, 0o1777 if os.path.isdir(path) else 0o644)

    def _resolve(self, action, plan):
        user = self._user(action.run_as_user)
        if action.kind == "command":
            if not self._allow_commands:
                raise Refused("step %r: runCommand is off on this device (--jobs-allow-commands)"
                              % action.name)
            return Step(action, [self._program(action.argv[0], action.name)] +
                        action.arguments(), user)
        directory = jobdoc.path_in_dirs(action.path, self._dirs)
        if directory is None or not self._inside(directory):
            raise Refused("step %r: path %r is outside the handler directories"
                          % (action.name, action.path))
        program = os.path.join(directory, action.handler)
        if not (os.path.isfile(program) and os.access(program, os.X_OK)):
            if plan.schema == "old" and self._allow_commands and not action.path:
                program = self._program(action.handler, action.name)
            else:
                raise Refused("step %r: unknown handler %r (no executable %s)"
                              % (action.name, action.handler, program))
        return Step(action, [program] + action.arguments(), user)

    def _inside(self, directory):
        real = os.path.realpath(directory)
        for d in self._dirs:
            base = os.path.realpath(d)
            if real == base or real.startswith(base.rstrip("/") + "/"):
                return True
        return False

    def _program(self, name, step):
        if "/" in name:
            found = name if os.path.isabs(name) and os.access(name, os.X_OK) else None
        else:
            found = shutil.which(name, path=os.environ.get("PATH") or DEFAULT_PATH)
        if not found:
            raise Refused("step %r: command %r not found" % (step, name))
        return found

    def _user(self, name):
        if not name:
            return None
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            raise Refused("runAsUser %r: no such user" % name) from None
        if os.geteuid() == 0 or entry.pw_uid == os.geteuid():
            return entry if entry.pw_uid != os.geteuid() else None
        raise Refused("runAsUser %r needs chariotd to run as root" % name)

    def _next_step(self, run):
        if run.abandoned:
            self._done(run)
            return
        if run.index < len(run.steps):
            step = run.steps[run.index]
        elif run.final is not None and not run.in_final:
            run.in_final = True
            step = run.final
        else:
            details = {"reason": "%d step(s) succeeded" % (len(run.steps) +
                                                          (1 if run.final else 0))}
            if run.plan.include_stdout:
                details["stdout"] = run.last_stdout
            self._finish(run, "SUCCEEDED", jobdoc.status_details(details)[0])
            return
        self._spawn(run, step)

    def _environment(self, run, step):
        env = {"PATH": os.environ.get("PATH") or DEFAULT_PATH, "LANG": "C",
               "HOME": step.user.pw_dir if step.user else os.environ.get("HOME", "/"),
               "CHARIOTD_THING": self.thing, "CHARIOTD_JOB_ID": run.job_id,
               "CHARIOTD_JOB_EXECUTION": str(run.number or 1),
               "CHARIOTD_JOB_STEP": step.action.name,
               "CHARIOTD_JOB_DOCUMENT": os.path.join(run.workdir, "job.json"),
               "CHARIOTD_JOB_PREVIOUS_STATUS": os.path.join(run.workdir, "previous-status.json"),
               "CHARIOTD_JOB_STATUS_DIR": run.status_dir, "CHARIOTD_JOBS_DIR": self._dirs[0]}
        for name in PASSED_ENV:
            if name in os.environ:
                env[name] = os.environ[name]
        if step.user:
            env["USER"] = env["LOGNAME"] = step.user.pw_name
        return env

    def _spawn(self, run, step):
        pipes = [os.pipe(), os.pipe()]
        kwargs = {}
        if step.user is not None:
            kwargs = {"user": step.user.pw_uid, "group": step.user.pw_gid,
                      "extra_groups": os.getgrouplist(step.user.pw_name, step.user.pw_gid)}
        try:
            proc = subprocess.Popen(step.argv, stdin=subprocess.DEVNULL, stdout=pipes[0][1],
                                    stderr=pipes[1][1], cwd=run.workdir,
                                    env=self._environment(run, step), start_new_session=True,
                                    close_fds=True, **kwargs)
        except (OSError, ValueError, subprocess.SubprocessError) as e:
            for r, w in pipes:
                os.close(r)
                os.close(w)
            self._step_failed(run, step, "could not start: %s" % (getattr(e, "strerror", None)
                                                                   or e), b"", b"")
            return
        for r, w in pipes:
            os.close(w)
            os.set_blocking(r, False)
        run.proc = proc
        run.readers = {pipes[0][0]: [bytearray(), 0, True], pipes[1][0]: [bytearray(), 0, True]}
        run.out_fd, run.err_fd = pipes[0][0], pipes[1][0]
        for fd in run.readers:
            self._loop.add_reader(fd, lambda fd=fd: self._read(run, fd))
        run.timed_out = None
        timeout = self._step_timeout
        if run.deadline is not None:
            timeout = min(timeout, max(0.0, run.deadline - time.monotonic()))
        run.step_timer = self._loop.call_later(timeout, self._step_timeout_due, run, timeout)
        if run.poll_timer is None:
            run.poll_timer = self._loop.call_later(PROGRESS_POLL, self._poll_status, run)
        log.info("job %s on %s: step %r started (pid %d)", run.job_id, self.thing,
                 step.action.name, proc.pid)
        threading.Thread(target=self._wait, args=(run, step, proc), daemon=True).start()

    def _wait(self, run, step, proc):
        proc.wait()
        self._loop.post(self._exited, run, step, proc)

    def _read(self, run, fd):
        entry = run.readers.get(fd)
        if entry is None or not entry[2]:
            return
        try:
            data = os.read(fd, 65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._close_reader(run, fd)
            return
        _keep(entry, data)

    def _close_reader(self, run, fd):
        entry = run.readers.get(fd)
        if entry is not None and entry[2]:
            self._loop.remove_reader(fd)
            os.close(fd)
            entry[2] = False

    def _drain(self, run):
        """(tail, lines) of stdout and stderr, with what the step wrote before it
        ended (a child of its may hold the pipes open, so no waiting for EOF)."""
        result = []
        for fd in (run.out_fd, run.err_fd):
            entry = run.readers[fd]
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
            self._close_reader(run, fd)
            tail, lines = bytes(entry[0]), entry[1]
            if tail and not tail.endswith(b"\n"):
                lines += 1
            result.append((tail, lines))
        run.readers = {}
        return result

    def _step_timeout_due(self, run, timeout):
        run.step_timer = None
        if run.proc is not None:
            run.timed_out = timeout
            self._kill(run)

    def _kill(self, run):
        _signal_group(run.proc, signal.SIGTERM)
        if run.kill_timer is None:
            run.kill_timer = self._loop.call_later(STOP_GRACE, _signal_group, run.proc,
                                                   signal.SIGKILL)

    def _exited(self, run, step, proc):
        (out, _), (err, err_lines) = self._drain(run)
        for timer in (run.step_timer, run.kill_timer):
            if timer:
                timer.cancel()
        run.step_timer = run.kill_timer = None
        run.proc = None
        self._poll_status(run, again=False)
        if run.abandoned or self._stopped:
            self._done(run)
            return
        status = proc.returncode
        action = step.action
        if run.timed_out is not None:
            why = "timed out after %ss and was killed" % _seconds(run.timed_out)
        elif status < 0:
            why = "was killed by signal %d" % -status
        elif status != 0:
            why = "exited with status %d" % status
        elif action.allow_stderr is not None and err_lines > action.allow_stderr:
            why = "wrote %d line(s) to stderr, more than allowStdErr %d" % (err_lines,
                                                                           action.allow_stderr)
        else:
            why = None
        run.last_stdout = out
        if why is None:
            log.info("job %s on %s: step %r succeeded", run.job_id, self.thing, action.name)
        else:
            self._step_failed(run, step, why, out, err)
            return
        run.index += 1
        self._next_step(run)

    def _step_failed(self, run, step, why, out, err):
        action = step.action
        if action.ignore_failure:
            log.warning("job %s on %s: step %r %s; ignored (ignoreStepFailure)", run.job_id,
                        self.thing, action.name, why)
            run.last_stdout = out
            run.index += 1
            self._next_step(run)
            return
        log.warning("job %s on %s: step %r %s", run.job_id, self.thing, action.name, why)
        details = {"reason": "step %r %s" % (action.name, why), "failedStep": action.name,
                   "stderr": err}
        if run.plan.include_stdout:
            details["stdout"] = out
        self._finish(run, "FAILED", jobdoc.status_details(details)[0])

    # -- progress files ---------------------------------------------------

    def _poll_status(self, run, again=True):
        if again:
            run.poll_timer = None
        if run.status_dir is None or run.abandoned:
            return
        try:
            names = sorted(n for n in os.listdir(run.status_dir) if n.endswith(".json"))
        except OSError:
            names = []
        for name in names:
            details = self._read_status(run, os.path.join(run.status_dir, name))
            if details:
                self._progress(run, details)
        if again and run.proc is not None and run is self._run:
            run.poll_timer = self._loop.call_later(PROGRESS_POLL, self._poll_status, run)

    def _read_status(self, run, path):
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as e:
            if e.errno != errno.ENOENT:
                _unlink(path)
            return None
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                return None
            data = os.read(fd, PROGRESS_FILE_LIMIT + 1)
        finally:
            os.close(fd)
            _unlink(path)
        try:
            doc = json.loads(data) if len(data) <= PROGRESS_FILE_LIMIT else None
        except ValueError:
            doc = None
        if not isinstance(doc, dict):
            log.warning("job %s on %s: progress file %s is not a JSON object of at most %d "
                        "bytes; ignored", run.job_id, self.thing, os.path.basename(path),
                        PROGRESS_FILE_LIMIT)
            return None
        details, dropped = jobdoc.status_details(doc)
        if dropped:
            log.warning("job %s on %s: progress keys left out (AWS allows [a-zA-Z0-9:_-], at "
                        "most %d pairs): %s", run.job_id, self.thing, jobdoc.DETAIL_PAIRS_LIMIT,
                        ", ".join(dropped))
        return details

    # -- the end ----------------------------------------------------------

    def _cleanup(self, run):
        for timer in (run.poll_timer, run.progress_timer, run.step_timer):
            if timer:
                timer.cancel()
        run.poll_timer = run.progress_timer = None
        if run.workdir:
            shutil.rmtree(run.workdir, ignore_errors=True)
            run.workdir = run.status_dir = None

    def stop(self):
        """Daemon exit: stop a running handler; the job stays IN_PROGRESS in the cloud
        (and is reported FAILED, interrupted, after the restart)."""
        self._stopped = True
        run = self._run
        if run is not None and run.proc is not None:
            log.info("stopping job %s's handler (pid %d)", run.job_id, run.proc.pid)
            _signal_group(run.proc, signal.SIGTERM)


def _signal_group(proc, sig):
    if proc.returncode is None:
        try:
            os.killpg(proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


def _keep(entry, data):
    """Add data to a stream's [tail, lines, open]: the last TAIL_BYTES only."""
    tail = entry[0]
    tail += data
    entry[1] += data.count(b"\n")
    if len(tail) > TAIL_BYTES:
        del tail[:len(tail) - TAIL_BYTES]


def _seconds(value):
    return "%d" % value if value == int(value) else "%.1f" % value


def _unlink(path):
    try:
        os.unlink(path)
    except OSError:
        pass
