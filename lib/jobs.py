"""--jobs=THING:DIR: AWS IoT Jobs on the device, one job at a time per
thing; this part talks to the Jobs service.

For each thing it subscribes to `notify-next` (and to the replies of its
own requests, which AWS delivers anyway), asks for the next pending
execution with StartNextPendingJobExecution, has lib/jobrunner.py run it
(a document that cannot run is REJECTED with the reason) and reports the
outcome with UpdateJobExecution:

- Progress (lib/jobprogress.py) goes out as IN_PROGRESS updates, at most
  one per PROGRESS_INTERVAL, later reports merged into the next.
- Updates carry expectedVersion; a VersionMismatch is settled from the
  executionState in the reply; a RequestThrottled or InternalError one is
  sent again UPDATE_RETRY_DELAY later. Requests and their replies are
  matched by lib/jobrequests.py. A job found CANCELED, TIMED_OUT or removed
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
- `status()` tells --status-file the job being run on each thing.
"""

import json
import logging
import os
import re
import time

from . import jobdoc
from .jobcheck import Refused
from .jobrequests import RUN_TOKEN, Requests
from .jobrunner import Runner, utc

log = logging.getLogger("chariotd")

THING_NAME = re.compile(r"[a-zA-Z0-9:_-]{1,128}")
TERMINAL = ("SUCCEEDED", "FAILED", "REJECTED", "TIMED_OUT", "CANCELED", "REMOVED")
RUN_KEY = "chariotdRun"
RESUME_KEY = "resumeAfterRestart"
RETRY_DELAY = 30.0
UPDATE_RETRY_DELAY = 5.0
TRANSIENT = ("RequestThrottled", "InternalError")  # update refused for now, not for good
PROGRESS_INTERVAL = 1.0
INTERRUPTED = ("interrupted: chariotd stopped while the job was in progress (crash, power cut "
               "or restart); not run again")


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

    def status(self):
        """{THING: the job being run, or None}, for --status-file."""
        return {thing.thing: thing.status() for thing in self.things}


class Run:
    """The job execution being run (or reported on) for one thing, as the
    service sees it."""

    def __init__(self, job_id, number, version):
        self.job_id = job_id
        self.number = number
        self.version = version
        self.started = utc(time.time())
        self.runner = None  # its jobrunner.Runner, once its document is read
        self.progress = None  # details waiting to go out
        self.progress_sent = 0.0
        self.progress_timer = None
        self.final_update = None  # (status, details)
        self.inflight = None  # the update body in flight
        self.abandoned = False


class ThingJobs:
    def __init__(self, daemon, thing, dirs, allow_commands, step_timeout):
        self._daemon = daemon
        self._loop = daemon.loop
        self._conn = daemon.connection
        self.thing = thing
        self._run_options = (dirs, allow_commands, step_timeout)
        self._requests = Requests(self._loop, daemon.publisher, thing)
        self._prefix = self._requests.prefix
        self._run = None
        self._starting = False
        self._retry = None
        self._stopped = False
        for suffix in ("notify-next", "start-next/accepted", "start-next/rejected",
                       "+/update/accepted", "+/update/rejected", "+/get/accepted",
                       "+/get/rejected"):
            self._conn.subscribe(self._prefix + "/" + suffix, self._message)
        self._conn.on_up(self._connected)  # requests in flight are settled again then

    # -- the Jobs service ---------------------------------------------------

    def _message(self, topic, payload):
        try:
            doc = json.loads(payload)
        except (ValueError, RecursionError):
            log.warning("jobs for %s: a message on %s is not JSON; ignored", self.thing, topic)
            return
        if not isinstance(doc, dict):
            return
        rest = topic[len(self._prefix) + 1:]
        if rest == "notify-next":
            self._notify_next(doc)
        else:
            self._requests.reply(rest, doc)

    def _connected(self):
        self._requests.forget()
        self._starting = False
        run = self._run
        if run is None:
            self._start_next()
            return
        run.inflight = None
        if run.final_update is None:
            self._describe(run)  # still ours, or canceled while we were away?
        self._send_update(run)

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
        self._requests.send("start-next", {"statusDetails": {RUN_KEY: RUN_TOKEN}},
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
        self._daemon.status_changed()
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
        runner = run.runner = Runner(
            self._loop, self.thing, job_id, run.number, *self._run_options,
            lambda details: self._progress(run, details),
            lambda status, details: self._finish(run, status, details), lambda: self._done(run),
            self._daemon.status_changed)
        try:
            runner.prepare(execution.get("jobDocument"), details)
        except (jobdoc.JobDocumentError, Refused) as e:
            log.error("job %s on %s REJECTED: %s", job_id, self.thing, e)
            self._finish(run, "REJECTED", {"reason": str(e)})
            return
        log.info("job %s on %s: %d step(s)%s", job_id, self.thing, len(runner.steps),
                 " and a final step" if runner.final else "")
        runner.start()

    def _describe(self, run):
        self._requests.send("%s/get" % run.job_id, {"includeJobDocument": False},
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
        self._daemon.status_changed()
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
        self._requests.send("%s/update" % run.job_id, body, lambda doc: self._updated(run, doc),
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
        if code in TRANSIENT and body:
            # Throttled (the fleet shares the account's rate) or a fault: the same
            # update again later, holding back others meanwhile.
            log.warning("job %s on %s: update refused for now (%s); again in %ds", run.job_id,
                        self.thing, code, UPDATE_RETRY_DELAY)
            run.inflight = body
            self._loop.call_later(UPDATE_RETRY_DELAY, lambda: run.inflight is body and
                                  self._update_lost(run))
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
        if run.runner is not None:
            run.runner.abandon()
        else:
            self._done(run)

    def _done(self, run):
        if run is not self._run:
            return
        if run.progress_timer:
            run.progress_timer.cancel()
            run.progress_timer = None
        if run.runner is not None:
            run.runner.cleanup()
        self._run = None
        self._daemon.status_changed()
        self._start_next()

    def stop(self):
        """Daemon exit: stop a running handler; the job stays IN_PROGRESS in the cloud
        (and is reported FAILED, interrupted, after the restart)."""
        self._stopped = True
        run = self._run
        if run is not None and run.runner is not None:
            run.runner.terminate()

    def status(self):
        """The job being run, for --status-file; None when there is none."""
        run = self._run
        if run is None:
            return None
        return dict(run.runner.status() if run.runner else {}, job_id=run.job_id,
                    started=run.started, reporting=(run.final_update or (None,))[0])
