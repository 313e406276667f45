"""Publishes the messages dropped into `--messages` directories, losing none.

Each directory is a `Spool`: a file renamed into `new/` is read once when
found (for its priority, slot and mtime; see lib/spoolindex.py for the
order), read again when its turn comes (unless that is at once), given its
letterhead, made into what to publish (lib/messagedoc.py: the pure part,
AWS's limits included) and handed to the shared publisher. At most
`concurrency` messages per directory are in flight, none while the
connection is down. A file is deleted only once the publisher reports it
done (PUBACK for QoS 1, written to the socket for QoS 0), so a crash, kill -9
or lost connection means it is sent again (at least once). A bad file goes
to `failed/` with a one-line log saying why, and so does one the endpoint
refused by closing the connection each time it was sent alone (the
publisher finds it); the rest carry on. A file with more than one hard link
is not read: only its name in new/ is removed. If every slot stays busy with
no acknowledgement for the jam timeout the daemon exits for a clean restart.
This module does not pace publishes or re-send after a reconnect (the
publisher does), and keeps no per-file state beyond the index.
"""

import collections
import functools
import logging
import os
import stat
import time

from . import letterheads, messagedoc
from .actiondir import ActionDir, LinkedFile
from .messagedoc import FILE_LIMIT, BadMessage
from .publisher import REFUSAL_STRIKES
from .spoolindex import SpoolIndex

log = logging.getLogger("chariotd")

RESCAN_SHARE = 0.1  # most of the time that looking at all of new/ again may take

# The file a message was read from, to tell whether new/NAME is another one now.
Identity = collections.namedtuple("Identity", "ino dev mtime_ns")


def _identity(st):
    return Identity(st.st_ino, st.st_dev, st.st_mtime_ns)

# A message file read: its name, JSON object and lstat.
Loaded = collections.namedtuple("Loaded", "name doc stat")


class LinkedMessage(Exception):
    """A file of new/ with another hard link: the text says how many."""


def start(daemon):
    return Spools([Spool(daemon, settings) for settings in daemon.options.messages])


class Spools:
    """The messages part: one spool per --messages directory."""

    def __init__(self, spools):
        self.spools = spools

    def stop(self):
        for spool in self.spools:
            spool.stop()

    def status(self):
        """{directory: {waiting, in_flight, failed}} for --status-file."""
        return {spool.path: spool.counts() for spool in self.spools}


class Sending:
    """A message taken from the index and not finished yet."""

    __slots__ = ("name", "identity", "was_prioritised", "attempt", "message")

    def __init__(self, name, identity, was_prioritised):
        self.name = name
        self.identity = identity  # Identity of the file read
        self.was_prioritised = was_prioritised
        self.attempt = 0
        self.message = None  # messagedoc.Message once built


class Spool:
    def __init__(self, daemon, settings):
        self.path = settings.path  # the --messages directory
        self._settings = settings
        self._adir = ActionDir(settings.path, settings.keep_failed)
        self._index = SpoolIndex(settings.order)
        self._loop = daemon.loop
        self._connection = daemon.connection
        self._publisher = daemon.publisher
        self._exit = daemon.exit
        self._status_changed = daemon.status_changed
        self._sending = {}  # name -> Sending
        self._stopped = False
        self._jam_timer = None
        self._progress = time.monotonic()  # last acknowledgement, or when all slots filled
        self._next_rescan = 0.0
        self._rescan_timer = None
        daemon.connection.on_up(self._resume)
        daemon.connection.on_down(self._pause)
        # Watch first, then scan: a file arriving in between is reported, not missed.
        daemon.watcher.watch(self._adir.new, self._changed)
        self._discover_all()
        log.info("%s: %d message(s) waiting", settings.path, len(self._index))

    def stop(self):
        """Send nothing more; what is in flight stays in new/ for the next run."""
        self._stopped = True
        self._cancel_jam_timer()
        if self._rescan_timer is not None:
            self._rescan_timer.cancel()

    def counts(self):
        """Messages waiting, in flight, and kept in failed/."""
        try:
            failed = len(os.listdir(self._adir.failed))
        except OSError:
            failed = None
        in_flight = len(self._sending)
        # The index counts what it handed out until it is finished.
        return {"waiting": max(0, len(self._index) - in_flight), "in_flight": in_flight,
                "failed": failed}

    # -- finding files ------------------------------------------------------

    def _changed(self, _path, names):
        just_read = None
        if names is None:
            self._rescan()
        else:
            for name in names:
                if name in self._sending:
                    continue  # replaced while being sent: noticed when it is done
                if name in self._index.known:
                    self._index.forget(name)  # replaced while waiting: classify it anew
                loaded = self._discover(name)
                if loaded is not None:
                    just_read = loaded
        # A file that arrives while the spool keeps up goes out in this turn: read once.
        self._pump(just_read)

    def _rescan(self):
        """Look at the whole of new/ again (polling, inotify overflow), but with a
        huge backlog spend at most RESCAN_SHARE of the time doing it."""
        wait = self._next_rescan - time.monotonic()
        if wait > 0:
            if self._rescan_timer is None:
                self._rescan_timer = self._loop.call_later(wait, self._deferred_rescan)
            return
        started = time.monotonic()
        self._discover_all()
        self._next_rescan = started + (time.monotonic() - started) / RESCAN_SHARE

    def _deferred_rescan(self):
        self._rescan_timer = None
        self._rescan()
        self._pump()

    def _discover_all(self):
        self._adir.refresh()
        with os.scandir(self._adir.new) as entries:
            for entry in entries:
                name = entry.name
                if name not in self._sending and name not in self._index.known:
                    self._discover(name)

    def _discover(self, name):
        """Read a new file for its place in the order (failed/ if it is bad); return
        the Loaded file, or None."""
        try:
            st = self._adir.lstat(name)
            if not stat.S_ISREG(st.st_mode):
                raise BadMessage("not a regular file")  # so it is never opened
            if st.st_nlink > 1:
                raise LinkedMessage("%d hard links" % st.st_nlink)  # nor this one
            loaded = self._load(name)
            priority, slot = messagedoc.priority_of(loaded.doc)
        except FileNotFoundError:
            return None
        except BadMessage as e:
            self._adir.fail(name, str(e))
            return None
        except LinkedMessage as e:
            self._unlink(name, str(e))
            return None
        self._index.add(name, loaded.stat.st_mtime_ns, priority, slot)
        return loaded

    def _listing(self):
        """(name, mtime_ns) of every entry of new/; mtime only when the order needs it."""
        by_mtime = self._index.by_mtime
        self._adir.refresh()
        with os.scandir(self._adir.new) as entries:
            for entry in entries:
                if not by_mtime:
                    yield entry.name, 0
                    continue
                try:
                    yield entry.name, entry.stat(follow_symlinks=False).st_mtime_ns
                except FileNotFoundError:
                    continue

    def _path(self, name):
        return os.path.join(self._adir.new, name)

    def _load(self, name):
        """The Loaded file; BadMessage when it holds no JSON object."""
        try:
            data, st = self._adir.read_with_stat(name, FILE_LIMIT, max_links=1)
        except FileNotFoundError:
            raise
        except LinkedFile as e:
            raise LinkedMessage(str(e)) from None
        except OSError as e:
            raise BadMessage(e.strerror or str(e)) from None
        return Loaded(name, messagedoc.parse(data), st)

    # -- sending --------------------------------------------------------------

    def _pump(self, just_read=None):
        """Send while slots are free; just_read is the Loaded file read in this
        turn of the loop, so not to be read again."""
        self._status_changed()  # a pump follows every change of the counts
        if self._stopped or not self._connection.connected:
            return
        while len(self._sending) < self._settings.concurrency:
            if self._index.needs_refill:
                self._index.refill(self._listing())
            taken = self._index.take()
            if taken is None:
                break
            name, was_prioritised = taken
            loaded = just_read if just_read and just_read.name == name else None
            self._send(name, was_prioritised, loaded)
        self._watch_jam()

    def _send(self, name, was_prioritised, loaded=None):
        try:
            loaded = loaded or self._load(name)
        except FileNotFoundError:
            self._index.finished(name)  # someone else removed it
            return
        except BadMessage as e:
            self._fail(name, str(e))
            return
        except LinkedMessage as e:
            self._index.finished(name)
            self._unlink(name, str(e))
            return
        sending = Sending(name, _identity(loaded.stat), was_prioritised)
        self._sending[name] = sending
        doc = loaded.doc
        try:
            if self._settings.letterhead_generator:
                self._generate(sending, doc)
                return
            if self._settings.letterhead_file:
                doc = messagedoc.over_letterhead(
                    letterheads.read_file(self._settings.letterhead_file), doc)
            self._publish(sending, doc)
        except BadMessage as e:
            self._fail(name, str(e))

    def _generate(self, sending, doc):
        settings = self._settings
        variables = messagedoc.generator_env(
            doc, settings.topic_prefix, settings.topic_suffix,
            os.path.abspath(self._path(sending.name)), sending.identity.mtime_ns,
            sending.was_prioritised)
        letterheads.generate(self._loop, settings.letterhead_generator, variables,
                             functools.partial(self._generated, sending, doc))

    def _generated(self, sending, doc, head, error):
        if self._stopped or self._sending.get(sending.name) is not sending:
            return
        try:
            if error is not None:
                raise error
            self._publish(sending, messagedoc.over_letterhead(head, doc))
        except BadMessage as e:
            self._fail(sending.name, str(e))
            self._pump()

    def _publish(self, sending, doc):
        settings = self._settings
        sending.message = messagedoc.build(doc, settings.topic_prefix, settings.topic_suffix)
        method = messagedoc.unknown_compress(doc)
        if method is not None:
            log.warning("%s: unknown compress %s; sending uncompressed",
                        self._path(sending.name), method)
        self._hand_over(sending)

    def _hand_over(self, sending):
        sending.attempt += 1
        message = sending.message
        self._publisher.publish(message.topic, message.payload, message.qos,
                                functools.partial(self._done, sending, sending.attempt),
                                functools.partial(self._refused, sending, sending.attempt))

    def _done(self, sending, attempt, ok):
        if self._sending.get(sending.name) is not sending or attempt != sending.attempt:
            return  # an earlier attempt's late answer
        self._progress = time.monotonic()
        if ok:
            del self._sending[sending.name]
            self._delete(sending)
        elif attempt <= self._settings.retries:
            log.warning("%s: publish to %s failed; retry %d of %d", self._path(sending.name),
                        sending.message.topic, attempt, self._settings.retries)
            self._hand_over(sending)
            return
        else:
            self._fail(sending.name, "publish to %s failed %d times"
                       % (sending.message.topic, attempt))
        self._pump()

    def _refused(self, sending, attempt):
        """The endpoint closed the connection each time this message was sent alone."""
        if self._sending.get(sending.name) is not sending or attempt != sending.attempt:
            return
        self._progress = time.monotonic()
        self._fail(sending.name, "the endpoint closed the connection each of the %d times "
                   "it was sent alone (topic %s)" % (REFUSAL_STRIKES, sending.message.topic))
        self._pump()

    def _delete(self, sending):
        """Delete the sent file, unless a new one took its name meanwhile."""
        self._index.finished(sending.name)
        if self._replaced(sending):
            self._discover(sending.name)  # send the new one too
            return
        self._adir.done(sending.name)

    def _fail(self, name, reason):
        sending = self._sending.pop(name, None)
        self._index.finished(name)
        if sending is not None and self._replaced(sending):
            log.error("%s: %s; a new file has taken its name and is sent instead",
                      self._path(name), reason)
            self._discover(name)
            return
        self._adir.fail(name, reason)

    def _unlink(self, name, links):
        """A file with more than one hard link may be another name of anything
        (a secret, say): it is not read or sent, and not moved to failed/,
        which would keep a name of it there; only its name in new/ goes."""
        log.error("%s: %s, so perhaps another name of a file not meant to be sent; "
                  "not read or sent, and only this name removed (the file's other names "
                  "are left alone)", self._path(name), links)
        self._adir.done(name)

    def _replaced(self, sending):
        """Whether new/NAME is now another file than the one read (not when it is gone)."""
        try:
            st = self._adir.lstat(sending.name)
        except FileNotFoundError:
            return False
        return _identity(st) != sending.identity

    # -- connection and jams --------------------------------------------------

    def _resume(self):
        self._progress = time.monotonic()
        self._pump()

    def _pause(self):
        self._cancel_jam_timer()

    def _watch_jam(self):
        busy = len(self._sending) >= self._settings.concurrency
        if not busy or self._jam_timer is not None or self._stopped:
            return
        # All slots have just filled up (or the connection came back): the clock starts now.
        self._progress = time.monotonic()
        self._jam_timer = self._loop.call_later(self._settings.jam_timeout, self._jam_check)

    def _jam_check(self):
        self._jam_timer = None
        if self._stopped or not self._connection.connected or \
                len(self._sending) < self._settings.concurrency:
            return
        quiet = time.monotonic() - self._progress
        if quiet < self._settings.jam_timeout:
            self._jam_timer = self._loop.call_later(self._settings.jam_timeout - quiet,
                                                    self._jam_check)
            return
        log.error("%s: jammed: %d message(s) unacknowledged for %gs; exiting for a restart",
                  self._settings.path, len(self._sending), self._settings.jam_timeout)
        self._exit(1)

    def _cancel_jam_timer(self):
        if self._jam_timer is not None:
            self._jam_timer.cancel()
            self._jam_timer = None

