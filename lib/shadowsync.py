"""Device shadow sync: the conversation with each thing's shadow.

One `ShadowSync` per thing named in --services, --updates or
--defaultshadow (`THING` for the classic shadow, `THING/NAME` for a named
one) speaks the shadow's MQTT API (docs/aws-facts.md#device-shadow): it fetches
the document on every (re)connect, SIGHUP and `refetch`, creates a missing
shadow, hands desired state and deltas to the thing's services
(lib.shadowservices: what a change means for the configs and what to
report), takes local updates from --updates directories, and reports back.
This module decides when to ask and what to tell the cloud, not what a
change does on the device.

Decisions:
- Local updates (lib.updatefiles) wait in `new/` until the first fetch has
  told the daemon the current configs, and are deleted once reported.
- Update batching. At most one request (get or update) per shadow is
  awaiting an answer. An update is not a queue of changes: it is computed
  when it is sent, as the difference between what the shadow is known to
  report and the current configs, plus a null for every desired key that
  was handled. So changes that arrive while one is in flight merge into the
  next, and a retry sends whatever is true by then.
- Retries. Every request carries a clientToken (a per-process random prefix
  and a counter) since every subscriber sees every answer; answers with
  another token are not ours. A rejected request, or one without an answer
  within RESPONSE_TIMEOUT, is retried after a delay doubling from
  RETRY_FIRST to RETRY_CAP (reset by the next success). An update refused
  for good (NEVER_TAKEN, or over AWS's payload limit) is not: its reports go
  one at a time, and one refused alone is left out (lib.shadowservices).
- Desired keys handled are cleared by an update that carries the version
  the shadow had when we last heard of it. Should the cloud change desired
  state between our reading it and our clearing it, the update is refused
  (409) and the document fetched again; otherwise a change the daemon had
  applied but not yet reported when it was killed would be cleared from
  desired and lost.
- Delta versions. The version of each fetched document and delta handled is
  remembered; a delta (or a refetched document) with an older version is
  stale and ignored. The versions of our own accepted updates do not count:
  they change reported and cleared desired, so a delta sent just before one
  of them still holds news. Deltas that come before the first fetch is
  answered are held (the newest one) and handled after it when they are
  newer than the document. A deleted shadow's numbering may restart, so the
  remembered version is forgotten when the shadow is deleted or missing and
  when the connection drops (the next document is then the truth); a
  deleted shadow is fetched, and so created, again at once.
"""

import itertools
import json
import logging
import os
import time

from . import shadowservices
from .awslimits import PAYLOAD_LIMIT
from .shadowservices import NEVER_TAKEN, RETRY_CAP, RETRY_FIRST, ShadowServices
from .updatefiles import UpdateFiles

log = logging.getLogger("chariotd")

RESPONSE_TIMEOUT = 15.0

# What the sync knows of its shadow (ShadowSync's phase).
STARTING = "starting"  # no document since start: the configs are not known yet
CREATING = "creating"  # the shadow is missing: the next update creates it
SYNCED = "synced"  # the shadow exists and the configs are known

_DOING = {"get": "fetch", "update": "update", "create": "creating the shadow:"}
_TOKEN_PREFIX = "chariotd-" + os.urandom(4).hex()
_token_numbers = itertools.count(1)


def start(daemon):
    """One ShadowSync per thing; returns them by thing."""
    opts = daemon.options
    things = list(dict.fromkeys([t for t, _ in opts.services] + [t for t, _ in opts.updates]
                                + list(opts.defaultshadow)))
    syncs = {thing: ShadowSync(daemon, thing,
                               shadowservices.load([d for t, d in opts.services if t == thing]),
                               [d for t, d in opts.updates if t == thing],
                               opts.defaultshadow.get(thing))
             for thing in things}
    daemon.on_refetch(lambda: [sync.fetch() for sync in syncs.values()])
    return Shadows(syncs)


class Shadows(dict):
    """The ShadowSyncs by thing, and what --status-file shows of them."""

    def status(self):
        return {thing: sync.status() for thing, sync in self.items()}


class _Request:
    """A get or update awaiting its answer, or a shadow being created."""

    __slots__ = ("kind", "token", "timer", "reported", "clear", "files", "creates")

    def __init__(self, kind):
        self.kind, self.timer, self.creates = kind, None, False
        self.token = "%s-%d" % (_TOKEN_PREFIX, next(_token_numbers))
        self.reported, self.clear, self.files = {}, set(), []  # what an update carries


class ShadowSync:
    def __init__(self, daemon, thing, services, update_dirs, default_cmd):
        self.thing = thing
        name, _, shadow = thing.partition("/")
        self._prefix = "$aws/things/%s/shadow" % name + ("/name/" + shadow if shadow else "")
        self._loop = daemon.loop
        self._connection = daemon.connection
        self._publisher = daemon.publisher
        self._status_changed = daemon.status_changed
        self._services = ShadowServices(self._loop, thing, services, default_cmd,
                                        daemon.options.empty_array_as_delete_request, self.fetch)
        self._updates = UpdateFiles(daemon.watcher, update_dirs, self._services.take_file,
                                    self._next)
        self._phase = STARTING
        self._version = 0  # newest document or delta version handled
        self._cloud_version = None  # the shadow's version as far as we know (None: unknown)
        self._early_delta = None  # the newest delta that came before the first document
        self._request = None
        self._fetch_wanted = False
        self._retry_timer = None
        self._failures = 0
        self._synced_at = None  # for --status-file: when a document, delta or update last landed
        for suffix, handler in (("/get/accepted", self._got), ("/get/rejected", self._get_refused),
                                ("/update/accepted", self._updated),
                                ("/update/rejected", self._update_refused),
                                ("/update/delta", self._delta_arrived),
                                ("/delete/accepted", self._deleted)):
            self._connection.subscribe(self._prefix + suffix, self._answer(handler))
        self._connection.on_up(self.fetch)
        self._connection.on_down(self._connection_lost)
        log.info("shadow %s: services %s%s", thing, ", ".join(self._services.keys()) or "none",
                 "".join("; updates from %s" % adir.path for adir in self._updates.dirs))

    # -- requests -------------------------------------------------------------

    def fetch(self):
        """Fetch the document (on connect, SIGHUP, `refetch`) once nothing is in flight."""
        self._fetch_wanted = True
        self._next()

    def status(self):
        return {"version": self._version, "synced": self._phase != STARTING,
                "synced_at": None if self._synced_at is None else
                time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self._synced_at)),
                "desired_left": self._services.desired_left()}

    def _next(self):
        """Send what is due, unless a request is awaiting its answer."""
        self._status_changed()  # every answer and change ends here
        if self._request or self._retry_timer or not self._connection.connected:
            return
        if self._fetch_wanted:
            self._fetch_wanted = False
            self._send(_Request("get"), {})
            return
        if self._phase == STARTING:
            return
        req = _Request("update")
        req.reported, req.clear, keys = self._services.next_update()
        req.files = self._updates.pending(keys)
        req.creates = self._phase == CREATING
        if not req.reported and not req.clear and not req.creates:
            self._updates.finish(req.files)
            return
        state = {"desired": dict.fromkeys(req.clear)} if req.clear else {}
        if req.reported or req.creates:
            # Even with nothing to report, the update is what creates the shadow.
            state["reported"] = req.reported
        body = {"state": state}
        if req.clear and not req.creates and self._cloud_version is not None:
            body["version"] = self._cloud_version  # clear only what we have seen
        self._send(req, body)

    def _send(self, req, body):
        body["clientToken"] = req.token
        payload = json.dumps(body, separators=(",", ":")).encode()
        self._request = req
        if len(payload) > PAYLOAD_LIMIT:  # AWS would close the connection
            self._refused(req, "%d bytes, over AWS's message size limit" % len(payload))
            return
        topic = self._prefix + ("/get" if req.kind == "get" else "/update")
        self._publisher.publish(topic, payload, 1, lambda ok: self._sent(req, ok))

    def _sent(self, req, ok):
        if req is self._request and ok:
            req.timer = self._loop.call_later(RESPONSE_TIMEOUT, self._timed_out, req)
        elif req is self._request:
            self._failed(req, "could not be published")

    def _timed_out(self, req):
        if req is self._request:
            self._failed(req, "got no answer within %ds" % RESPONSE_TIMEOUT)

    def _failed(self, req, reason):
        self._drop(req)
        self._failures += 1
        delay = min(RETRY_CAP, RETRY_FIRST * 2 ** (self._failures - 1))
        log.error("shadow %s: %s %s; retrying in %ds", self.thing, _DOING[req.kind], reason,
                  delay)
        if req.kind != "update":
            self._fetch_wanted = True
        self._retry_timer = self._loop.call_later(delay, self._retry)

    def _retry(self):
        self._retry_timer = None
        self._next()

    def _drop(self, req):
        """Forget req; what it carried goes out with the next update (the phase
        still says whether that update creates the shadow)."""
        if req.timer:
            req.timer.cancel()
        self._request = None
        self._services.put_back(req.clear)

    def _connection_lost(self):
        self._version = 0  # what happened meanwhile is unknown; the next document is the truth
        self._cloud_version = None
        if self._request:
            self._drop(self._request)
        if self._retry_timer:
            self._retry_timer.cancel()
            self._retry_timer = None

    # -- answers ----------------------------------------------------------------

    def _answer(self, handler):
        """handler(msg) for a JSON object on a response topic (every topic's payload)."""

        def parse(topic, payload):
            try:
                msg = json.loads(payload)
            except (ValueError, RecursionError):
                msg = None
            if not isinstance(msg, dict):
                log.warning("shadow %s: ignoring a message on %s that is not a JSON object",
                            self.thing, topic)
                return
            handler(msg)

        return parse

    def _ours(self, msg, kind):
        """The request msg answers (taken off the books), or None if it is not ours."""
        req = self._request
        if req is None or req.kind != kind or msg.get("clientToken") != req.token:
            return None
        if req.timer:
            req.timer.cancel()
        self._request = None
        return req

    def _got(self, msg):
        if self._ours(msg, "get") is None:
            return
        self._failures = 0
        self._document(msg)
        self._next()

    def _get_refused(self, msg):
        req = self._ours(msg, "get")
        if req is None:
            return
        if msg.get("code") == 404:
            self._version = 0
            self._create()
        else:
            self._failed(req, "refused: %s" % _error(msg))

    def _updated(self, msg):
        req = self._ours(msg, "update")
        if req is None:
            return
        self._failures = 0
        self._synced_at = time.time()
        if isinstance(msg.get("version"), int):
            self._cloud_version = msg["version"]
        if req.creates:
            self._phase = SYNCED
        self._services.accepted(req.reported)
        self._updates.finish(req.files)
        done = ["created it"] if req.creates else []
        if req.reported:
            done.append("reported " + ", ".join(sorted(req.reported)))
        if req.clear:
            done.append("cleared desired " + ", ".join(sorted(req.clear)))
        log.info("shadow %s: %s", self.thing, "; ".join(done))
        self._next()

    def _update_refused(self, msg):
        req = self._ours(msg, "update")
        if req is None:
            return
        if msg.get("code") == 409 or msg.get("message") == "Invalid version":
            # Desired state changed (or the shadow went) since we last saw it: read it again.
            log.info("shadow %s: changed meanwhile (version conflict); fetching it again",
                     self.thing)
            self._drop(req)
            self._cloud_version = None
            self.fetch()
        elif msg.get("code") in NEVER_TAKEN:
            self._refused(req, _error(msg))
        else:
            self._failed(req, "refused: %s" % _error(msg))

    def _refused(self, req, reason):
        """The shadow will never take req as it is: the reports to blame are
        found and left out (ShadowServices.refused), the rest sent at once."""
        if not req.reported:  # nothing to leave out
            self._failed(req, "refused: %s" % reason)
            return
        self._drop(req)
        culprits = self._services.refused(req.reported, reason)
        self._updates.fail(req.files, culprits, "the shadow cannot take it: " + reason)
        self._next()

    def _deleted(self, _msg):
        log.info("shadow %s was deleted; fetching it again", self.thing)
        self._version = 0
        self._cloud_version = None
        self.fetch()

    def _delta_arrived(self, msg):
        if not isinstance(msg.get("state"), dict):
            log.warning("shadow %s: ignoring a delta without a state object", self.thing)
            return
        if self._phase == STARTING:
            if self._early_delta is None or _version(msg) >= _version(self._early_delta):
                self._early_delta = msg
            return
        self._delta(msg)
        self._next()

    # -- syncing ----------------------------------------------------------------

    def _document(self, doc):
        version = _version(doc)
        first = self._phase == STARTING
        if not first and version < self._version:
            log.info("shadow %s: ignoring document version %d, older than %d already handled",
                     self.thing, version, self._version)
            return
        self._services.take_document(doc.get("state"), first)
        self._version = max(self._version, version)
        self._synced_at = time.time()
        self._cloud_version = version
        self._phase = SYNCED  # it exists, even if the answer to our creating update was lost
        if first:
            self._synced(version)

    def _delta(self, msg):
        version = _version(msg)
        if version < self._version:
            log.info("shadow %s: ignoring delta version %d, older than %d already handled",
                     self.thing, version, self._version)
            return
        self._version = version
        self._synced_at = time.time()
        if self._cloud_version is not None:
            self._cloud_version = max(self._cloud_version, version)
        self._services.take_delta(msg["state"], "delta version %d" % version)

    def _synced(self, version):
        """The first document (or a new shadow's seed) has told the configs."""
        log.info("shadow %s: synced (version %d)", self.thing, version)
        early, self._early_delta = self._early_delta, None
        if early is not None and _version(early) > self._version:
            self._delta(early)
        self._updates.start()

    def _create(self):
        log.info("shadow %s does not exist; creating it", self.thing)
        req = self._request = _Request("create")
        self._services.defaults_for_new_shadow(lambda seed, why: self._seeded(req, seed, why))

    def _seeded(self, req, seed, why):
        if req is not self._request:
            return  # the connection dropped meanwhile; the next fetch starts over
        if seed is None:
            self._failed(req, why)
            return
        self._request = None
        first = self._phase == STARTING
        self._services.take_new_shadow(seed, first)
        self._phase = CREATING
        if first:
            self._synced(0)
        self._next()


def _version(msg):
    version = msg.get("version")
    return version if isinstance(version, int) and not isinstance(version, bool) else 0


def _error(msg):
    return "%s %s" % (msg.get("code", "?"), msg.get("message", "(no message)"))
