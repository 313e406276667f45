"""--status-file: what the daemon is doing, as a JSON file a field engineer can read.

The daemon's parts call `daemon.status_changed()` when something shown here
changes; this part then writes the whole document again, at most once a
second and only when its content changed, as a temporary file in the same
directory renamed over PATH (mode 0644), so a reader only ever sees a
complete document and reading it costs the daemon nothing. It holds the
connection (up or not and since when, endpoint, client id, certificate id,
the last connection error, failed attempts in a row), each message directory's waiting, in-flight
and failed counts, each shadow's last synced version and time and the
desired keys not yet applied, what any other part reports of itself
(`status()`), and how many child processes run. Nothing secret: no keys,
certificates' contents or tokens. `show(path)` is `chariotd --status PATH`:
the document in a few lines for a person. Imported only when either is used.
"""

import json
import logging
import os
import time

from . import atomicwrite, children

log = logging.getLogger("chariotd")

MIN_INTERVAL = 1.0
MODE = 0o644


def start(daemon):
    return StatusFile(daemon)


def when(t):
    """Seconds since the epoch as ISO 8601 UTC, or None."""
    return None if t is None else time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


class StatusFile:
    def __init__(self, daemon):
        self.path = daemon.options.status_file
        self._daemon = daemon
        self._loop = daemon.loop
        self._connection = daemon.connection
        self._pending = False
        self._last_write = -MIN_INTERVAL
        self._written = None
        self._started = time.time()
        self._since = None  # when the connection last went up or down
        self._last_error = None  # (time, text)
        self._running = True
        daemon.status = self
        children.on_change = self.changed
        self._connection.on_up(self._went_up)
        self._connection.on_down(self._went_down)
        self._connection.on_error(self._error)
        self.changed()  # once every part has started

    def stop(self):
        # The last word, written now whatever the once-a-second limit says.
        self._running = False
        self._pending = False
        self._flush(force=True)

    def _went_up(self):
        self._since = time.time()
        self.changed()

    def _went_down(self):
        self._since = time.time()
        self.changed()

    def _error(self, text):
        self._last_error = (time.time(), text)
        self.changed()

    def changed(self):
        """Something shown changed: write soon, and at most once a second."""
        if self._pending:
            return
        self._pending = True
        wait = self._last_write + MIN_INTERVAL - time.monotonic()
        if wait > 0:
            self._loop.call_later(wait, self._flush)
        else:
            self._loop.post(self._flush)  # after the rest of this turn's changes

    def _flush(self, force=False):
        if not self._pending and not force:
            return
        self._pending = False
        doc = self.document()
        text = json.dumps(doc, indent=1, sort_keys=True)
        if text == self._written:
            return
        try:
            _write_atomically(self.path, (text + "\n").encode())
        except OSError as e:
            log.warning("--status-file %s: cannot write: %s", self.path, e.strerror or e)
            return
        self._written = text
        self._last_write = time.monotonic()

    def document(self):
        conn = self._connection
        error = None
        if self._last_error is not None:
            error = {"at": when(self._last_error[0]), "error": self._last_error[1]}
        endpoint = conn.endpoint
        doc = {
            "pid": os.getpid(),
            "running": self._running,
            "started": when(self._started),
            "connection": {
                "connected": conn.connected,
                "since": when(self._since),
                "endpoint": None if endpoint is None else str(endpoint),
                "clientid": self._daemon.options.clientid,
                "certificate": conn.certificate_id,
                "failures_in_a_row": conn.failures,
                # The N of the log's "(offline; attempt N in a row)": failed
                # attempts since the last CONNACK, whatever their cause.
                "offline_attempts_in_a_row": conn.attempts,
                "last_error": error,
            },
            "children_running": children.running,
        }
        for name, part in sorted(self._daemon.parts.items()):
            status = getattr(part, "status", None)
            if status is not None and part is not self:
                doc[name] = status()
        return doc


def _write_atomically(path, data):
    directory, base = os.path.split(os.path.abspath(path))
    tmp = os.path.join(directory, ".%s.%d.tmp" % (base, os.getpid()))
    try:
        os.unlink(tmp)  # left by a writer of the same pid killed before its rename
    except FileNotFoundError:
        pass
    atomicwrite.write_new(tmp, data, MODE, exact_mode=True, durable=False)  # on /run: no fsync
    try:
        os.replace(tmp, path)
    except OSError:
        os.unlink(tmp)
        raise


# -- chariotd --status PATH ---------------------------------------------------------


def show(path, out=None):
    """Print the status file at path for a person; returns the exit status."""
    import sys

    out = out or sys.stdout
    try:
        with open(path) as f:
            doc = json.load(f)
    except (OSError, ValueError) as e:
        sys.stderr.write("chariotd: cannot read the status file %s: %s\n"
                         % (path, getattr(e, "strerror", None) or e))
        return 1
    out.write(describe(doc))
    return 0


def describe(doc, now=None):
    """The status document as a few lines of text."""
    now = time.time() if now is None else now
    lines = []
    conn = doc.get("connection") or {}
    state = "connected" if conn.get("connected") else "NOT connected"
    since = conn.get("since")
    lines.append("chariotd (pid %s, started %s): %s to %s%s" % (
        doc.get("pid"), doc.get("started"), state, conn.get("endpoint"),
        " since %s (%s)" % (since, _ago(since, now)) if since else ""))
    lines.append("  client id %s, certificate %s" % (conn.get("clientid"),
                                                     conn.get("certificate")))
    error = conn.get("last_error")
    if error:
        lines.append("  last connection error %s (%s): %s" % (
            error.get("at"), _ago(error.get("at"), now), error.get("error")))
    if conn.get("offline_attempts_in_a_row") and not conn.get("connected"):
        lines.append("  offline: %d connection attempts in a row failed"
                     % conn["offline_attempts_in_a_row"])
    if conn.get("failures_in_a_row"):
        lines.append("  %d connection failures in a row" % conn["failures_in_a_row"])
    for path, counts in sorted((doc.get("messages") or {}).items()):
        lines.append("  messages %s: %s waiting, %s in flight, %s failed" % (
            path, counts.get("waiting"), counts.get("in_flight"), counts.get("failed")))
    for thing, shadow in sorted((doc.get("shadowsync") or {}).items()):
        left = shadow.get("desired_left") or []
        lines.append("  shadow %s: version %s synced %s%s" % (
            thing, shadow.get("version"), shadow.get("synced_at") or "never",
            "; left in desired: " + ", ".join(left) if left else ""))
    for thing, job in sorted((doc.get("jobs") or {}).items()):
        lines.append(_job_line(thing, job, now))
    defender = doc.get("defender")
    if defender:
        lines.append("  defender %s every %ss: last report %s sent %s, %s" % (
            defender.get("thing"), defender.get("interval"), defender.get("report_id"),
            defender.get("sent") or "never", defender.get("answer") or "no answer yet"))
    lines.append("  %s child process(es) running" % doc.get("children_running", 0))
    return "\n".join(lines) + "\n"


def _job_line(thing, job, now):
    """One thing's job: which, since when, which step with which pid, what it reports."""
    if not job:
        return "  jobs for %s: none running" % thing
    text = "  job %s on %s since %s (%s)" % (job.get("job_id"), thing, job.get("started"),
                                              _ago(job.get("started"), now))
    if job.get("step"):
        text += ": %s %r" % ("final step" if job.get("final_step") else "step %s of %s" % (
            job.get("step_number"), job.get("steps")), job["step"])
        if job.get("pid") is not None:
            text += ", pid %s, running for %s" % (job["pid"],
                                                  _elapsed(job.get("step_started"), now))
    if job.get("reporting"):
        text += "; reporting %s" % job["reporting"]
    return text


def _ago(stamp, now):
    elapsed = _elapsed(stamp, now)
    return elapsed if elapsed == "?" else elapsed + " ago"


def _elapsed(stamp, now):
    """How long ago STAMP (ISO 8601 UTC) was, as 40s, 5m, 3h or 2d; "?" if unreadable."""
    import calendar

    try:
        t = calendar.timegm(time.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ"))
    except (TypeError, ValueError):
        return "?"
    seconds = max(0, int(now - t))
    if seconds < 120:
        return "%ds" % seconds
    if seconds < 7200:
        return "%dm" % (seconds // 60)
    if seconds < 172800:
        return "%dh" % (seconds // 3600)
    return "%dd" % (seconds // 86400)
