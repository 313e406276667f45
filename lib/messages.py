"""Publishes the messages dropped into `--messages` directories, losing none.

Each directory is a `Spool`: a file renamed into `new/` is read once when
found (for its priority, slot and mtime; see lib/spoolindex.py for the
order), read again when its turn comes (unless that is at once), laid over
its letterhead, checked against AWS IoT Core's limits and handed to the
shared publisher. At most `concurrency` messages per directory are in
flight, and none is started while the connection is down. A file is
deleted only once the publisher reports it done (PUBACK for QoS 1, written
to the socket for QoS 0), so a crash, kill -9 or lost connection means it
is sent again (at least once). A bad file goes to `failed/` with a
one-line log saying why, and so does one the endpoint refused by closing
the connection each time it was sent alone (the publisher finds it); the
rest carry on. A file with more than one hard link is not read: only its
name in new/ is removed. If every slot stays busy with no acknowledgement
for the jam timeout the daemon exits for a clean restart.

This module does not pace publishes or re-send after a reconnect (the
publisher does), and keeps no per-file state beyond the index.
"""

import functools
import json
import logging
import math
import os
import stat
import time
import zlib

from . import awslimits, children, shadowdoc
from .actiondir import ActionDir, LinkedFile
from .publisher import REFUSAL_STRIKES
from .spoolindex import SpoolIndex

log = logging.getLogger("chariotd")

FILE_LIMIT = 1024 * 1024  # a message file bigger than this is refused unread
GENERATOR_TIMEOUT = 5
RESCAN_SHARE = 0.1  # most of the time that looking at all of new/ again may take
COMPRESSORS = {
    "gzip": lambda data: _compress(data, 31),  # wbits 16+15: gzip header and trailer
    "deflate": lambda data: _compress(data, 15),  # zlib stream
}


# What json.dumps(payload, separators=(",", ":"), ensure_ascii=False,
# allow_nan=False) would build on every call. NaN, Infinity and numbers
# beyond a double (1e400 reads as infinity) are not JSON: refused.
_PAYLOAD_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False,
                                    allow_nan=False)


class BadMessage(Exception):
    """A message that cannot be sent; the text says why, for the log line."""


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
        return {spool._settings.path: spool.counts() for spool in self.spools}


class Sending:
    """A message taken from the index and not finished yet."""

    __slots__ = ("name", "identity", "was_prioritised", "attempt", "message")

    def __init__(self, name, identity, was_prioritised):
        self.name = name
        self.identity = identity  # (st_ino, st_dev, st_mtime_ns) of the file read
        self.was_prioritised = was_prioritised
        self.attempt = 0
        self.message = None  # (topic, payload, qos) once built


class Spool:
    def __init__(self, daemon, settings):
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
                    just_read = (name, loaded)
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
        what was read, (doc, stat), or None."""
        try:
            st = self._adir.lstat(name)
            if not stat.S_ISREG(st.st_mode):
                raise BadMessage("not a regular file")  # so it is never opened
            if st.st_nlink > 1:
                raise LinkedMessage("%d hard links" % st.st_nlink)  # nor this one
            doc, st = self._load(name)
            priority, slot = _priority_of(doc)
        except FileNotFoundError:
            return None
        except BadMessage as e:
            self._adir.fail(name, str(e))
            return None
        except LinkedMessage as e:
            self._unlink(name, str(e))
            return None
        self._index.add(name, st.st_mtime_ns, priority, slot)
        return doc, st

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
        """(the file's JSON object, its stat); BadMessage when it cannot be one."""
        try:
            data, st = self._adir.read_with_stat(name, FILE_LIMIT, max_links=1)
        except FileNotFoundError:
            raise
        except LinkedFile as e:
            raise LinkedMessage(str(e)) from None
        except OSError as e:
            raise BadMessage(e.strerror or str(e)) from None
        try:
            doc = json.loads(data)
        except (ValueError, RecursionError) as e:
            raise BadMessage("not JSON (%s)" % e) from None
        if not isinstance(doc, dict):
            raise BadMessage("not a JSON object")
        return doc, st

    # -- sending --------------------------------------------------------------

    def _pump(self, just_read=None):
        """Send while slots are free; just_read is (name, (doc, stat)) of a file
        read in this turn of the loop, so not to be read again."""
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
            loaded = just_read[1] if just_read and just_read[0] == name else None
            self._send(name, was_prioritised, loaded)
        self._watch_jam()

    def _send(self, name, was_prioritised, loaded=None):
        try:
            doc, st = loaded or self._load(name)
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
        sending = Sending(name, (st.st_ino, st.st_dev, st.st_mtime_ns), was_prioritised)
        self._sending[name] = sending
        try:
            if self._settings.letterhead_generator:
                self._generate(sending, doc)
                return
            if self._settings.letterhead_file:
                doc = _over_letterhead(_letterhead_file(self._settings.letterhead_file), doc)
            self._publish(sending, doc)
        except BadMessage as e:
            self._fail(name, str(e))

    def _generate(self, sending, doc):
        try:
            children.run(self._loop, self._settings.letterhead_generator,
                         functools.partial(self._generated, sending, doc),
                         timeout=GENERATOR_TIMEOUT, env=self._generator_env(sending, doc))
        except ValueError as e:  # a topic or slot the environment cannot carry
            raise BadMessage("letterhead generator: %s" % e) from None

    def _generated(self, sending, doc, result):
        if self._stopped or self._sending.get(sending.name) is not sending:
            return
        try:
            if not result.ok:
                raise BadMessage("letterhead generator %s" % result.describe())
            self._publish(sending, _over_letterhead(
                _letterhead(result.stdout, "letterhead generator"), doc))
        except BadMessage as e:
            self._fail(sending.name, str(e))
            self._pump()

    def _generator_env(self, sending, doc):
        mtime_ns = sending.identity[2]
        topic = doc.get("topic")
        priority = doc.get("priority")
        slot = doc.get("priority_slot")
        if priority is None and slot is not None:
            priority = 1
        env = dict(os.environ,
                   MESSAGE_TOPIC=self._full_topic(topic) if isinstance(topic, str) else "",
                   MESSAGE_FILENAME=os.path.abspath(self._path(sending.name)),
                   MESSAGE_TIMESTAMP="%d.%06d" % divmod(mtime_ns, 1000000),
                   MESSAGE_TIMESTAMP_S=str(mtime_ns // 1000000000),
                   MESSAGE_PRIORITY="" if priority is None else json.dumps(priority),
                   MESSAGE_WAS_PRIORITISED="1" if sending.was_prioritised else "")
        if slot is not None:
            env["MESSAGE_PRIORITY_SLOT"] = str(slot)
        return env

    def _publish(self, sending, doc):
        topic = doc.get("topic")
        if topic is None:
            raise BadMessage("missing topic")
        if not isinstance(topic, str):
            raise BadMessage("topic is not a string")
        topic = self._full_topic(topic)
        problem = topic_problem(topic)
        if problem:
            raise BadMessage("topic %r: %s" % (topic[:300], problem))
        qos = doc.get("qos", 1)
        if isinstance(qos, bool) or qos not in (0, 1):
            raise BadMessage("qos %s is not 0 or 1" % json.dumps(qos)[:50])
        payload = self._payload(sending.name, doc)
        sending.message = (topic, payload, int(qos))
        self._hand_over(sending)

    def _full_topic(self, topic):
        return self._settings.topic_prefix + topic + self._settings.topic_suffix

    def _payload(self, name, doc):
        payload = doc.get("payload")
        if payload is None:
            raise BadMessage("missing payload")
        try:
            if isinstance(payload, str):
                data = payload.encode("utf-8")
            else:
                data = _PAYLOAD_ENCODER.encode(payload).encode()
        except UnicodeEncodeError:
            raise BadMessage("payload is not valid UTF-8 text") from None
        except RecursionError:
            raise BadMessage("payload is nested too deeply") from None
        except ValueError:  # allow_nan=False
            raise BadMessage("payload holds NaN, Infinity or a number beyond a double "
                             "(such as 1e400), which JSON cannot carry") from None
        method = doc.get("compress")
        compress = COMPRESSORS.get(method) if isinstance(method, str) else None
        if compress is not None:
            data = compress(data)
        elif method is not None:
            log.warning("%s: unknown compress %s; sending uncompressed",
                        self._path(name), json.dumps(method)[:50])
        if awslimits.payload_problem(len(data)):
            raise BadMessage("payload is %d bytes%s, over AWS's %d byte limit"
                             % (len(data), " compressed" if compress else "",
                                awslimits.PAYLOAD_LIMIT))
        return data

    def _hand_over(self, sending):
        sending.attempt += 1
        topic, payload, qos = sending.message
        self._publisher.publish(topic, payload, qos,
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
                        sending.message[0], attempt, self._settings.retries)
            self._hand_over(sending)
            return
        else:
            self._fail(sending.name, "publish to %s failed %d times"
                       % (sending.message[0], attempt))
        self._pump()

    def _refused(self, sending, attempt):
        """The endpoint closed the connection each time this message was sent alone."""
        if self._sending.get(sending.name) is not sending or attempt != sending.attempt:
            return
        self._progress = time.monotonic()
        self._fail(sending.name, "the endpoint closed the connection each of the %d times "
                   "it was sent alone (topic %s)" % (REFUSAL_STRIKES, sending.message[0]))
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
        return (st.st_ino, st.st_dev, st.st_mtime_ns) != sending.identity

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


def _priority_of(doc):
    priority = doc.get("priority")
    slot = doc.get("priority_slot")
    if priority is not None and (isinstance(priority, bool) or
                                 not isinstance(priority, (int, float)) or
                                 not _finite(priority)):
        raise BadMessage("priority %s is not a number" % json.dumps(priority)[:50])
    if slot is not None and not isinstance(slot, str):
        raise BadMessage("priority_slot %s is not a string" % json.dumps(slot)[:50])
    return priority, slot


def _finite(number):
    try:
        return math.isfinite(number)
    except OverflowError:  # an integer of hundreds of digits
        return False


# A spool's messages mostly share a few topics: check each once.
topic_problem = functools.lru_cache(maxsize=256)(awslimits.topic_problem)


def _compress(data, wbits):
    compressor = zlib.compressobj(wbits=wbits)
    return compressor.compress(data) + compressor.flush()


def _letterhead_file(path):
    try:
        with open(path, "rb") as f:
            data = f.read(FILE_LIMIT + 1)
    except OSError as e:
        raise BadMessage("letterhead %s: %s" % (path, e.strerror)) from None
    return _letterhead(data, "letterhead " + path)


def _letterhead(data, what):
    try:
        letterhead = json.loads(data)
    except ValueError as e:
        raise BadMessage("%s is not JSON (%s)" % (what, e)) from None
    if not isinstance(letterhead, dict):
        raise BadMessage("%s is not a JSON object" % what)
    return letterhead


def _over_letterhead(letterhead, doc):
    """doc deep-merged onto its letterhead: objects merge key by key, anything
    else replaces (a null too: a message deletes nothing of its letterhead)."""
    return shadowdoc.deep_merge(letterhead, doc, share=True)
