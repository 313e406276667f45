"""A running job handler's progress reports: the files it drops into
CHARIOTD_JOB_STATUS_DIR, read on the event loop.

A handler writes a JSON object as NAME.json (written under another name and
renamed in). `ProgressFiles` looks every PROGRESS_POLL seconds while a step
runs, and once more when it ends; each file is read (at most
PROGRESS_FILE_LIMIT bytes, never through a symlink or a FIFO), deleted and
handed on as statusDetails AWS accepts (lib/jobdoc.py's rules), keys AWS
would refuse left out with a log line. Sending them, rate-limited, is
lib/jobs.py's business.
"""

import errno
import json
import logging
import os
import stat

from . import jobdoc

log = logging.getLogger("chariotd")

PROGRESS_POLL = 0.25
PROGRESS_FILE_LIMIT = 8192


class ProgressFiles:
    """The progress directory of one job; DELIVER(details) gets each report."""

    def __init__(self, loop, directory, label, deliver, running):
        self._loop = loop
        self.directory = directory
        self._label = label  # "job ID on THING", for the log
        self._deliver = deliver
        self._running = running  # whether a step still runs (and polling goes on)
        self._timer = None
        self._closed = False

    def watch(self):
        """A step started: look for files now and then."""
        if self._timer is None and not self._closed:
            self._timer = self._loop.call_later(PROGRESS_POLL, self.poll)

    def poll(self, again=True):
        """Hand on what is there; with AGAIN (the timer's call) look again later."""
        if again:
            self._timer = None
        if self._closed:
            return
        try:
            names = sorted(n for n in os.listdir(self.directory) if n.endswith(".json"))
        except OSError:
            names = []
        for name in names:
            details = self._read(os.path.join(self.directory, name))
            if details:
                self._deliver(details)
        if again and self._running():
            self._timer = self._loop.call_later(PROGRESS_POLL, self.poll)

    def close(self):
        """No more reports wanted (the job ended in the cloud, or is cleaned up)."""
        self._closed = True
        if self._timer:
            self._timer.cancel()
            self._timer = None

    def _read(self, path):
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
        except (ValueError, RecursionError):
            doc = None
        if not isinstance(doc, dict):
            log.warning("%s: progress file %s is not a JSON object of at most %d bytes; "
                        "ignored", self._label, os.path.basename(path), PROGRESS_FILE_LIMIT)
            return None
        details, dropped = jobdoc.status_details(doc)
        if dropped:
            log.warning("%s: progress keys left out (AWS allows [a-zA-Z0-9:_-], at most %d "
                        "pairs): %s", self._label, jobdoc.DETAIL_PAIRS_LIMIT, ", ".join(dropped))
        return details


def _unlink(path):
    try:
        os.unlink(path)
    except OSError:
        pass
