"""AWS IoT Jobs device API logic (docs/aws-facts.md#jobs), with no MQTT in it.

`JobsService` keeps each thing's job executions in memory and answers the
device-side requests (get, start-next, JOBID/get incl. `$next`,
JOBID/update) as a list of (topic, payload dict), adding the `notify` and
`notify-next` events a change causes. The app side queues jobs (with
CreateJob's in-progress timeout if it likes), cancels, removes and deletes
them; `expire()` times out (TIMED_OUT) executions whose step timer
(`stepTimeoutInMinutes`) or in-progress timer (`inProgressTimeoutInMinutes`,
from the time it went IN_PROGRESS) ran out. Timestamps come from an injectable clock, in
seconds; a timer's minute lasts `minute` seconds of it (60 unless a test
wants its timeouts short).

It does not route replies to the requesting client only (the caller
publishes them on ordinary topics), model jobs beyond one execution per
thing (no rollouts, retries, executionNumber > 1, job-level status) or
throttle by rate (`throttle()` refuses a thing's next requests, for tests).
"""

import json
import math
import re
import time

QUEUED, IN_PROGRESS = "QUEUED", "IN_PROGRESS"
DEVICE_STATUSES = ("IN_PROGRESS", "SUCCEEDED", "FAILED", "REJECTED")
PENDING = (QUEUED, IN_PROGRESS)
NOTIFY_LIMIT = 10
MAX_STEP_TIMEOUT = 10080  # minutes, for step and in-progress timers alike
MAX_TOKEN_CHARS = 64

_JOB_ID = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
_DETAIL_KEY = re.compile(r"^[a-zA-Z0-9:_-]{1,128}$")
_CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f-\x9f]")


class JobsError(Exception):
    """A rejected request: string CODE, MESSAGE and maybe the execution's state."""

    def __init__(self, code, message, execution_state=None):
        super().__init__("%s: %s" % (code, message))
        self.code = code
        self.message = message
        self.execution_state = execution_state


def parse_topic(topic):
    """(thing, api, job id) for a Jobs request topic; None for anything else.

    api is "pending", "start-next", "describe", "update", or "invalid" for a
    topic under `$aws/things/THING/jobs/` that names no API. Reply and
    notification topics (what this service publishes) give None.
    """
    parts = topic.split("/")
    if len(parts) < 5 or parts[:2] != ["$aws", "things"] or parts[3] != "jobs":
        return None
    thing, rest = parts[2], parts[4:]
    if rest[-1] in ("accepted", "rejected") or rest[0].startswith("notify"):
        return None
    if rest in (["get"], ["start-next"]):
        return thing, "pending" if rest == ["get"] else "start-next", None
    if len(rest) == 2 and rest[1] == "get" and (rest[0] == "$next" or _JOB_ID.match(rest[0])):
        return thing, "describe", rest[0]
    if len(rest) == 2 and rest[1] == "update" and _JOB_ID.match(rest[0]):
        return thing, "update", rest[0]
    return thing, "invalid", None


class Execution:
    """One job execution on one thing."""

    def __init__(self, job_id, document, now, order, in_progress_timeout=None):
        self.job_id = job_id
        self.document = document
        self.status = QUEUED
        self.queued_at = self.last_updated_at = now
        self.started_at = None
        self.version = 1
        self.number = 1
        self.details = {}
        self.in_progress_timeout = in_progress_timeout  # minutes, or None
        self.step_deadline = None  # clock() when the step timer runs out, or None
        self.in_progress_deadline = None  # the same for the in-progress timer
        self.order = order

    @property
    def terminal(self):
        return self.status not in PENDING

    def summary(self):
        """JobExecutionSummary as in get/accepted and notify."""
        result = {"jobId": self.job_id, "queuedAt": self.queued_at}
        if self.started_at is not None:
            result["startedAt"] = self.started_at
        result.update(lastUpdatedAt=self.last_updated_at, executionNumber=self.number,
                      versionNumber=self.version)
        return result

    def deadline(self):
        """When the first of its timers runs out (clock seconds), or None."""
        deadlines = [d for d in (self.step_deadline, self.in_progress_deadline) if d is not None]
        return min(deadlines) if deadlines else None

    def data(self, include_document=True, now=None):
        """JobExecutionData as in start-next, describe and notify-next, with
        approximateSecondsBeforeTimedOut while a timer runs (given NOW).

        thingName is left out: live MQTT replies omit it (docs/aws-facts.md#jobs).
        """
        result = {"jobId": self.job_id, "status": self.status}
        if include_document:
            result["jobDocument"] = self.document
        result["queuedAt"] = self.queued_at
        if self.started_at is not None:
            result["startedAt"] = self.started_at
        result.update(lastUpdatedAt=self.last_updated_at, versionNumber=self.version,
                      executionNumber=self.number)
        if self.details:
            result["statusDetails"] = dict(self.details)
        if now is not None and self.deadline() is not None:
            result["approximateSecondsBeforeTimedOut"] = max(0, math.ceil(self.deadline() - now))
        return result

    def state(self):
        """JobExecutionState as in update/accepted and error replies."""
        result = {"status": self.status}
        if self.details:
            result["statusDetails"] = dict(self.details)
        result["versionNumber"] = self.version
        return result

    def change(self, status, now, details=None, step_timeout=None, minute=60.0, at=None):
        """Move to STATUS: bump the version, stamp times (NOW, whole seconds), set
        or clear the timers (from AT, the clock's exact time, MINUTE seconds a minute)."""
        at = now if at is None else at
        self.status = status
        if status == IN_PROGRESS and self.started_at is None:
            self.started_at = now
            if self.in_progress_timeout is not None:
                self.in_progress_deadline = at + self.in_progress_timeout * minute
        if details is not None:
            self.details = details
        self.version += 1
        self.last_updated_at = now
        if self.terminal:
            self.step_deadline = self.in_progress_deadline = None
        elif step_timeout == -1:
            self.step_deadline = None
        elif step_timeout is not None:
            self.step_deadline = at + step_timeout * minute


class JobsService:
    """Job executions of all things; requests in, (topic, payload) lists out."""

    def __init__(self, clock=time.time, minute=60.0):
        self.clock = clock
        self.minute = minute  # seconds of CLOCK in a timer's minute
        self._things = {}
        self._throttled = {}  # thing -> how many more of its requests to refuse
        self._order = 0

    # -- app side --

    def queue_job(self, thing, job_id, document, in_progress_timeout=None):
        """Queue a new execution of JOB_ID on THING, timed out IN_PROGRESS_TIMEOUT
        minutes after it goes IN_PROGRESS (CreateJob's timeoutConfig) if given;
        returns the notifications."""
        if not _JOB_ID.match(job_id or ""):
            raise ValueError("job id must be 1-64 characters of [a-zA-Z0-9_-]: %r" % job_id)
        if not isinstance(document, dict):
            raise ValueError("a job document must be a JSON object")
        if in_progress_timeout is not None and not (
                isinstance(in_progress_timeout, int) and not isinstance(in_progress_timeout, bool)
                and 1 <= in_progress_timeout <= MAX_STEP_TIMEOUT):
            raise ValueError("inProgressTimeoutInMinutes must be 1-%d" % MAX_STEP_TIMEOUT)
        if self._find(thing, job_id) is not None:
            raise ValueError("job %s already exists for %s" % (job_id, thing))
        before = self._heads(thing)
        self._order += 1
        execution = Execution(job_id, json.loads(json.dumps(document)), self._now(), self._order,
                              in_progress_timeout)
        self._things.setdefault(thing, []).append(execution)
        return self._notifications(thing, before)

    def cancel_job(self, thing, job_id, status="CANCELED"):
        """Cancel a pending execution (CancelJobExecution), or with status REMOVED
        end it as AWS does when the thing leaves a continuous job's targets;
        returns the notifications."""
        execution = self._find(thing, job_id)
        if execution is None or execution.terminal:
            raise ValueError("no pending job %s on %s" % (job_id, thing))
        before = self._heads(thing)
        self._change(execution, status)
        return self._notifications(thing, before)

    def delete_job(self, thing, job_id, force=False):
        """DeleteJobExecution: the execution is gone (a pending one only with
        FORCE); returns the notifications."""
        execution = self._find(thing, job_id)
        if execution is None or not (force or execution.terminal):
            raise ValueError("no %sjob %s on %s" % ("" if force else "terminal ", job_id, thing))
        before = self._heads(thing)
        self._things[thing].remove(execution)
        return self._notifications(thing, before)

    def throttle(self, thing, count):
        """Refuse THING's next COUNT requests with RequestThrottled, as AWS does when
        the account's Jobs API rate is exceeded (tests: a device must retry)."""
        self._throttled[thing] = count

    def execution(self, thing, job_id):
        """A copy of the execution as describe shows it, or None."""
        execution = self._find(thing, job_id)
        return None if execution is None else execution.data(now=self.clock())

    def expire(self):
        """Time out executions whose step or in-progress timer has run out;
        returns the notifications."""
        at = self.clock()
        replies = []
        for thing, executions in self._things.items():
            due = [e for e in executions
                   if not e.terminal and e.deadline() is not None and e.deadline() <= at]
            if due:
                before = self._heads(thing)
                for execution in due:
                    self._change(execution, "TIMED_OUT")
                replies += self._notifications(thing, before)
        return replies

    # -- device side --

    def handle(self, topic, payload):
        """Answer an MQTT request on TOPIC; [] if TOPIC is not a Jobs request."""
        parsed = parse_topic(topic)
        if parsed is None:
            return []
        thing, api, job_id = parsed
        token = None
        try:
            if api == "invalid":
                raise JobsError("InvalidTopic", "The topic %s does not name a Jobs API" % topic)
            request = _parse(payload)
            token = _client_token(request)
            if self._throttled.get(thing):
                self._throttled[thing] -= 1
                # The message text is the emulator's; AWS's is not documented.
                raise JobsError("RequestThrottled", "Rate exceeded for %s" % thing)
            before = self._heads(thing)
            reply = self._handlers[api](self, thing, job_id, request)
        except JobsError as e:
            return [(topic + "/rejected", self._error(e, token))]
        reply["timestamp"] = self._now()
        if token is not None:
            reply["clientToken"] = token
        return [(topic + "/accepted", reply)] + self._notifications(thing, before)

    def _pending(self, thing, job_id, request):
        executions = self._pending_list(thing)
        return {"inProgressJobs": [e.summary() for e in executions if e.status == IN_PROGRESS],
                "queuedJobs": [e.summary() for e in executions if e.status == QUEUED]}

    def _start_next(self, thing, job_id, request):
        details = _status_details(request)
        step_timeout = _step_timeout(request, allow_cancel=False)
        execution = self._next(thing)
        if execution is None:
            return {}  # nothing pending: no "execution" field, not an error
        if execution.status == QUEUED:
            self._change(execution, IN_PROGRESS, details, step_timeout)
        return {"execution": execution.data(now=self.clock())}

    def _describe(self, thing, job_id, request):
        include_document = _flag(request, "includeJobDocument", True)
        number = _execution_number(request)
        if job_id == "$next":
            execution = self._next(thing)
            # With nothing pending the reply has no execution, as for
            # start-next; AWS's answer here is unconfirmed.
            return {} if execution is None else {
                "execution": execution.data(include_document, self.clock())}
        execution = self._existing(thing, job_id, number)
        if execution.terminal:
            # Per the jobs-api ErrorResponse docs (docs/aws-facts.md#jobs).
            raise JobsError("TerminalStateReached", "Job execution %s is in terminal state %s"
                            % (job_id, execution.status))
        return {"execution": execution.data(include_document, self.clock())}

    def _update(self, thing, job_id, request):
        status = request.get("status")
        if status is None:
            raise JobsError("InvalidRequest", "status is required")
        if status not in DEVICE_STATUSES:
            raise JobsError("InvalidRequest", "status must be one of " + ", ".join(DEVICE_STATUSES))
        details = _status_details(request)
        step_timeout = _step_timeout(request, allow_cancel=True)
        include_state = _flag(request, "includeJobExecutionState", False)
        include_document = _flag(request, "includeJobDocument", False)
        expected = _expected_version(request)
        execution = self._existing(thing, job_id, _execution_number(request))
        if expected is not None and expected != execution.version:
            raise JobsError("VersionMismatch", "expectedVersion %d does not match version %d"
                            % (expected, execution.version), execution.state())
        if execution.terminal:
            raise JobsError("InvalidStateTransition", "Cannot update %s from terminal status %s"
                            " to %s" % (job_id, execution.status, status), execution.state())
        self._change(execution, status, details, step_timeout)
        reply = {}
        if include_state:
            reply["executionState"] = execution.state()
        if include_document:
            reply["jobDocument"] = execution.document
        return reply

    _handlers = {"pending": _pending, "start-next": _start_next, "describe": _describe,
                 "update": _update}

    # -- helpers --

    def _now(self):
        return int(self.clock())

    def _change(self, execution, status, details=None, step_timeout=None):
        at = self.clock()
        execution.change(status, int(at), details, step_timeout, self.minute, at)

    def _find(self, thing, job_id):
        for execution in self._things.get(thing, ()):
            if execution.job_id == job_id:
                return execution
        return None

    def _existing(self, thing, job_id, number):
        execution = self._find(thing, job_id)
        if execution is None or (number is not None and number != execution.number):
            raise JobsError("ResourceNotFound", "Job execution %s not found for thing %s"
                            % (job_id, thing))
        return execution

    def _pending_list(self, thing):
        """Pending executions, IN_PROGRESS first, each group oldest first."""
        pending = [e for e in self._things.get(thing, ()) if not e.terminal]
        return sorted(pending, key=lambda e: (e.status != IN_PROGRESS, e.queued_at, e.order))

    def _next(self, thing):
        pending = self._pending_list(thing)
        return pending[0] if pending else None

    def _heads(self, thing):
        """What notify and notify-next depend on: the pending set and $next."""
        nxt = self._next(thing)
        return (frozenset(e.job_id for e in self._pending_list(thing)),
                nxt.job_id if nxt else None)

    def _notifications(self, thing, before):
        pending_ids, next_id = self._heads(thing)
        now = self._now()
        prefix = "$aws/things/%s/jobs" % thing
        replies = []
        if pending_ids != before[0]:
            replies.append((prefix + "/notify", {"timestamp": now, "jobs": self._grouped(thing)}))
        if next_id != before[1]:
            event = {"timestamp": now}
            if next_id is not None:
                event["execution"] = self._next(thing).data(now=self.clock())
            replies.append((prefix + "/notify-next", event))
        return replies

    def _grouped(self, thing):
        """Pending summaries keyed by status, at most NOTIFY_LIMIT, empty keys left out."""
        jobs = {}
        for execution in self._pending_list(thing)[:NOTIFY_LIMIT]:
            jobs.setdefault(execution.status, []).append(execution.summary())
        return jobs

    def _error(self, error, token):
        payload = {"code": error.code, "message": error.message, "timestamp": self._now()}
        if token is not None:
            payload["clientToken"] = token
        if error.execution_state is not None:
            payload["executionState"] = error.execution_state
        return payload


# ---- request field parsing --------------------------------------------------

def _parse(payload):
    if isinstance(payload, dict):
        return payload
    try:
        text = bytes(payload).decode("utf-8")
        request = json.loads(text) if text.strip() else {}
    except ValueError:  # UnicodeDecodeError and JSONDecodeError both are
        raise JobsError("InvalidJson", "The payload is not valid UTF-8 JSON") from None
    if not isinstance(request, dict):
        raise JobsError("InvalidJson", "The payload must be a JSON object")
    return request


def _client_token(request):
    token = request.get("clientToken")
    if token is not None and (not isinstance(token, str) or not 0 < len(token) <= MAX_TOKEN_CHARS):
        raise JobsError("InvalidRequest", "clientToken must be a string of 1-64 characters")
    return token


def _status_details(request):
    """The request's statusDetails map, or None when absent (details stay unchanged)."""
    details = request.get("statusDetails")
    if details is None:
        return None
    if not isinstance(details, dict):
        raise JobsError("InvalidRequest", "statusDetails must be a map of strings")
    for key, value in details.items():
        if not _DETAIL_KEY.match(key):
            raise JobsError("InvalidRequest", "Invalid statusDetails key: %r" % key)
        if not isinstance(value, str) or not 0 < len(value) <= 1024 or _CONTROL_CHARS.search(value):
            raise JobsError("InvalidRequest", "Invalid statusDetails value for %r" % key)
    return dict(details)


def _step_timeout(request, allow_cancel):
    minutes = request.get("stepTimeoutInMinutes")
    if minutes is None:
        return None
    valid = isinstance(minutes, int) and not isinstance(minutes, bool) and (
        1 <= minutes <= MAX_STEP_TIMEOUT or (allow_cancel and minutes == -1))
    if not valid:
        raise JobsError("InvalidRequest", "stepTimeoutInMinutes must be 1-%d%s"
                        % (MAX_STEP_TIMEOUT, " or -1" if allow_cancel else ""))
    return minutes


def _flag(request, name, default):
    value = request.get(name, default)
    if not isinstance(value, bool):
        raise JobsError("InvalidRequest", "%s must be a boolean" % name)
    return value


def _integer(request, name):
    value = request.get(name)
    if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
        raise JobsError("InvalidRequest", "%s must be an integer" % name)
    return value


def _execution_number(request):
    return _integer(request, "executionNumber")


def _expected_version(request):
    return _integer(request, "expectedVersion")
