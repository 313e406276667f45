"""Device shadow sync: each thing's shadow against the device's services.

One `ShadowSync` per thing named in --services, --updates or
--defaultshadow (`THING` for the classic shadow, `THING/NAME` for a named
one) speaks the shadow's MQTT API (docs/aws-facts.md#device-shadow): it fetches
the document on every (re)connect, SIGHUP and `refetch`, creates a missing
shadow, merges desired state and deltas into the services' configs
(lib.servicestate writes the outfiles and runs the notify commands), takes
local updates from --updates directories, and reports back. How a config
is applied is servicestate's business; this module decides what changes
and what to tell the cloud.

Decisions:
- Where a service's current config comes from. The daemon keeps each
  service's config in memory and reports it; it never reads it back from
  an outfile that may not hold it faithfully. At the first fetch after start
  it is taken from the shadow's `reported` section, the record of what was
  applied and reported before; only a key the shadow has no record of (a new
  shadow, a newly added service) is read back from the outfile, once, and
  then reported. Whether to write the outfile is decided on every fetch by
  comparing it with the file on disk (servicestate: the same bytes, or text
  that reads as the same config), so a missing or really different outfile
  is brought back in line (and notified), and one that says the same, in
  whatever whitespace or key order, is left alone.
- Local updates (lib.updatefiles) wait in `new/` until the first fetch has
  told the daemon the current configs. Each file is deleted only once the
  update that reports it has been accepted.
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
  RETRY_FIRST to RETRY_CAP (reset by the next success), so an update the
  cloud keeps refusing (413: too large) costs one log line per RETRY_CAP.
- Desired keys handled are cleared whole (only those, so desired state of
  services this device lacks is left alone), by an update that carries the
  version the shadow had when we last heard of it. Should the cloud change
  desired state between our reading it and our clearing it, the update is
  refused (409) and the document fetched again; otherwise a change the
  daemon had applied but not yet reported when it was killed would be
  cleared from desired and lost. A refused change is handled: it is
  logged and cleared, and the reported config shows it was not taken. A
  change that failed on the device (outfile not writable: a full or
  read-only disk) is left in desired and tried again by a fetch after
  RETRY_FIRST seconds, doubling up to RETRY_CAP while it keeps failing.
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

from . import children, formats, shadowdoc
from .actiondir import ActionFailed
from .awslimits import PAYLOAD_LIMIT
from .services import load_services
from .servicestate import ChangeFailed, ChangeRefused, ServiceState
from .updatefiles import UpdateFiles

log = logging.getLogger("chariotd")

RESPONSE_TIMEOUT = 15.0
RETRY_FIRST = 2.0
RETRY_CAP = 300.0
DEFAULTSHADOW_TIMEOUT = 10

_DOING = {"get": "fetch", "update": "update", "create": "creating the shadow:"}
_TOKEN_PREFIX = "chariotd-" + os.urandom(4).hex()
_token_numbers = itertools.count(1)


def start(daemon):
    """One ShadowSync per thing; returns them by thing."""
    opts = daemon.options
    things = list(dict.fromkeys([t for t, _ in opts.services] + [t for t, _ in opts.updates]
                                + list(opts.defaultshadow)))
    syncs = {}
    for thing in things:
        services = _load_services([d for t, d in opts.services if t == thing])
        sync = syncs[thing] = ShadowSync(daemon, thing, services,
                                         [d for t, d in opts.updates if t == thing],
                                         opts.defaultshadow.get(thing))
        log.info("shadow %s: services %s%s", thing, ", ".join(sorted(services)) or "none",
                 "".join("; updates from %s" % a.path for a in sync.updates.dirs))
    daemon.on_refetch(lambda: [sync.fetch() for sync in syncs.values()])
    return Shadows(syncs)


class Shadows(dict):
    """The ShadowSyncs by thing, and what --status-file shows of them."""

    def status(self):
        return {thing: sync.status() for thing, sync in self.items()}


def _load_services(directories):
    services = {}
    for directory in directories:
        loaded, errors = load_services(directory)
        for error in errors:
            log.error("%s", error)
        for key, service in loaded.items():
            if key in services:
                log.error("%s: service key %r is already defined by %s; skipped",
                          service.path, key, services[key].path)
            else:
                services[key] = service
    return services


class _Request:
    """A get or update awaiting its answer, or a shadow being created."""

    __slots__ = ("kind", "token", "timer", "reported", "clear", "files", "creates")

    def __init__(self, kind):
        self.kind = kind
        self.token = "%s-%d" % (_TOKEN_PREFIX, next(_token_numbers))
        self.timer = None
        self.reported = {}
        self.clear = set()
        self.files = []
        self.creates = False


class ShadowSync:
    def __init__(self, daemon, thing, services, update_dirs, default_cmd):
        self.thing = thing
        name, _, shadow = thing.partition("/")
        self.prefix = "$aws/things/%s/shadow" % name + ("/name/" + shadow if shadow else "")
        self.loop = daemon.loop
        self.connection = daemon.connection
        self.publisher = daemon.publisher
        self.empty_array_deletes = daemon.options.empty_array_as_delete_request
        self.default_cmd = default_cmd
        self.services = {key: ServiceState(self.loop, svc) for key, svc in sorted(services.items())}
        self.updates = UpdateFiles(daemon.watcher, update_dirs, self._take_file, self._next)
        self.reported = {}  # the shadow's reported section, as far as we know
        self.extra = {}  # keys without a service (update files): the value to report
        self.clear = set()  # handled desired keys, to be nulled by the next update
        self.synced = False  # the first fetch since start has been handled
        self.creating = False  # a missing shadow is to be created by the next update
        self.version = 0  # newest document or delta version handled
        self.cloud_version = None  # the shadow's version as far as we know (None: unknown)
        self.early_delta = None
        self.request = None
        self.fetch_wanted = False
        self.retry_timer = None
        self.failures = 0
        self.apply_retry = None  # the refetch that tries a failed change again
        self.apply_failures = 0
        self.synced_at = None  # for --status-file: when a document, delta or update last landed
        self.not_applied = set()  # desired keys a service failed to apply
        self._status_changed = daemon.status_changed
        for suffix, handler in (("/get/accepted", self._got), ("/get/rejected", self._get_refused),
                                ("/update/accepted", self._updated),
                                ("/update/rejected", self._update_refused),
                                ("/update/delta", self._delta_arrived),
                                ("/delete/accepted", self._deleted)):
            self.connection.subscribe(self.prefix + suffix, self._answer(handler))
        self.connection.on_up(self.fetch)
        self.connection.on_down(self._connection_lost)

    # -- requests -------------------------------------------------------------

    def fetch(self):
        """Fetch the document (on connect, SIGHUP, `refetch`) once nothing is in flight."""
        self.fetch_wanted = True
        self._next()

    def status(self):
        return {"version": self.version, "synced": self.synced,
                "synced_at": None if self.synced_at is None else
                time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.synced_at)),
                "desired_left": sorted(self.not_applied | self.clear)}

    def _next(self):
        """Send what is due, unless a request is awaiting its answer."""
        self._status_changed()  # every answer and change ends here
        if self.request or self.retry_timer or not self.connection.connected:
            return
        if self.fetch_wanted:
            self.fetch_wanted = False
            self._send(_Request("get"), {})
            return
        if not self.synced:
            return
        req = _Request("update")
        req.reported = self._changed_reported()
        req.clear, self.clear = self.clear, set()
        req.files = self.updates.pending()
        req.creates, self.creating = self.creating, False
        if not req.reported and not req.clear and not req.creates:
            self.updates.finish(req.files)
            return
        state = {"desired": dict.fromkeys(req.clear)} if req.clear else {}
        if req.reported or req.creates:
            # Even with nothing to report, the update is what creates the shadow.
            state["reported"] = req.reported
        body = {"state": state}
        if req.clear and not req.creates and self.cloud_version is not None:
            body["version"] = self.cloud_version  # clear only what we have seen
        self._send(req, body)

    def _changed_reported(self):
        """The reported update that brings the shadow in line with the configs."""
        wanted = {key: st.config for key, st in self.services.items() if st.reports}
        wanted.update(self.extra)
        return shadowdoc.diff({key: self.reported.get(key) for key in wanted}, wanted)

    def _send(self, req, body):
        body["clientToken"] = req.token
        payload = json.dumps(body, separators=(",", ":")).encode()
        self.request = req
        if len(payload) > PAYLOAD_LIMIT:
            self._failed(req, "is %d bytes, over AWS's message size limit" % len(payload))
            return
        topic = self.prefix + ("/get" if req.kind == "get" else "/update")
        self.publisher.publish(topic, payload, 1, lambda ok: self._sent(req, ok))

    def _sent(self, req, ok):
        if req is not self.request:
            return
        if ok:
            req.timer = self.loop.call_later(RESPONSE_TIMEOUT, self._timed_out, req)
        else:
            self._failed(req, "could not be published")

    def _timed_out(self, req):
        if req is self.request:
            self._failed(req, "got no answer within %ds" % RESPONSE_TIMEOUT)

    def _failed(self, req, reason):
        self._drop(req)
        self.failures += 1
        delay = min(RETRY_CAP, RETRY_FIRST * 2 ** (self.failures - 1))
        log.error("shadow %s: %s %s; retrying in %ds", self.thing, _DOING[req.kind], reason,
                  delay)
        if req.kind != "update":
            self.fetch_wanted = True
        self.retry_timer = self.loop.call_later(delay, self._retry)

    def _retry(self):
        self.retry_timer = None
        self._next()

    def _drop(self, req):
        """Forget req; what it carried goes out with the next update."""
        if req.timer:
            req.timer.cancel()
        self.request = None
        self.clear |= req.clear
        self.creating |= req.creates

    def _connection_lost(self):
        self.version = 0  # what happened meanwhile is unknown; the next document is the truth
        self.cloud_version = None
        if self.request:
            self._drop(self.request)
        if self.retry_timer:
            self.retry_timer.cancel()
            self.retry_timer = None

    # -- answers ----------------------------------------------------------------

    def _answer(self, handler):
        """handler(msg) for a JSON object on a response topic (every topic's payload)."""

        def parse(topic, payload):
            try:
                msg = json.loads(payload)
            except ValueError:
                msg = None
            if not isinstance(msg, dict):
                log.warning("shadow %s: ignoring a message on %s that is not a JSON object",
                            self.thing, topic)
                return
            handler(msg)

        return parse

    def _ours(self, msg, kind):
        """The request msg answers (taken off the books), or None if it is not ours."""
        req = self.request
        if req is None or req.kind != kind or msg.get("clientToken") != req.token:
            return None
        if req.timer:
            req.timer.cancel()
        self.request = None
        return req

    def _got(self, msg):
        if self._ours(msg, "get") is None:
            return
        self.failures = 0
        self._document(msg)
        self._next()

    def _get_refused(self, msg):
        req = self._ours(msg, "get")
        if req is None:
            return
        if msg.get("code") == 404:
            self.version = 0
            self._create()
        else:
            self._failed(req, "refused: %s" % _error(msg))

    def _updated(self, msg):
        req = self._ours(msg, "update")
        if req is None:
            return
        self.failures = 0
        self.synced_at = time.time()
        if isinstance(msg.get("version"), int):
            self.cloud_version = msg["version"]
        self.reported = shadowdoc.apply(self.reported, req.reported)
        for key in [k for k, v in self.extra.items() if shadowdoc.equal(self.reported.get(k), v)]:
            del self.extra[key]
        self.updates.finish(req.files)
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
        if msg.get("code") == 409:
            # Desired state changed since we last saw it: read it before clearing.
            log.info("shadow %s: changed meanwhile (version conflict); fetching it again",
                     self.thing)
            self._drop(req)
            self.cloud_version = None
            self.fetch()
            return
        self._failed(req, "refused: %s" % _error(msg))

    def _deleted(self, _msg):
        log.info("shadow %s was deleted; fetching it again", self.thing)
        self.version = 0
        self.cloud_version = None
        self.fetch()

    def _delta_arrived(self, msg):
        if not isinstance(msg.get("state"), dict):
            log.warning("shadow %s: ignoring a delta without a state object", self.thing)
            return
        if not self.synced:
            if self.early_delta is None or _version(msg) >= _version(self.early_delta):
                self.early_delta = msg
            return
        self._delta(msg)
        self._next()

    # -- syncing ----------------------------------------------------------------

    def _document(self, doc):
        version = _version(doc)
        if self.synced and version < self.version:
            log.info("shadow %s: ignoring document version %d, older than %d already handled",
                     self.thing, version, self.version)
            return
        state = doc.get("state") if isinstance(doc.get("state"), dict) else {}
        self.reported = _section(state, "reported")
        first = not self.synced
        if first:
            for st in self.services.values():
                st.seed(self.reported)
        self._handle(_section(state, "desired"), "desired state", first, refresh=True)
        self.version = max(self.version, version)
        self.synced_at = time.time()
        self.cloud_version = version
        if first:
            self._synced(version)

    def _delta(self, msg):
        version = _version(msg)
        if version < self.version:
            log.info("shadow %s: ignoring delta version %d, older than %d already handled",
                     self.thing, version, self.version)
            return
        self.version = version
        self.synced_at = time.time()
        if self.cloud_version is not None:
            self.cloud_version = max(self.cloud_version, version)
        self._handle(msg["state"], "delta version %d" % version)

    def _handle(self, changes, origin, first=False, refresh=False):
        """Merge each service's part of changes into its config; with refresh, also
        bring the outfiles of services without a change in line."""
        for key, st in self.services.items():
            change = changes.get(key)
            if key in changes and change != {}:
                self._change(st, change, origin, first)
            elif refresh and st.reports:
                try:
                    st.apply(st.config, "current config", check=False, first=first)
                except (ChangeRefused, ChangeFailed) as e:
                    log.error("shadow %s: %s: current config not applied: %s", self.thing, key, e)
                    if isinstance(e, ChangeFailed):
                        self._retry_apply()

    def _merge(self, st, change, origin, first=False):
        """Merge change into the service's config and apply the result."""
        base = st.config if st.reports else None  # an ephemeral change stands alone
        config = shadowdoc.merge(base, change, self.empty_array_deletes)
        st.apply(config, origin, check=not st.reports or not shadowdoc.equal(config, base),
                 first=first)

    def _change(self, st, change, origin, first):
        """A desired or delta change: handled (to be cleared) unless it failed."""
        try:
            self._merge(st, change, origin, first)
        except ChangeRefused as e:
            log.error("shadow %s: %s: %s refused: %s; cleared from desired",
                      self.thing, st.key, origin, e)
        except ChangeFailed as e:
            log.error("shadow %s: %s: %s not applied: %s; left in desired",
                      self.thing, st.key, origin, e)
            self.not_applied.add(st.key)
            self._retry_apply()
            return
        self.not_applied.discard(st.key)
        if not self.not_applied:
            self.apply_failures = 0
        self.clear.add(st.key)

    def _retry_apply(self):
        if self.apply_retry is None:
            delay = min(RETRY_CAP, RETRY_FIRST * 2 ** self.apply_failures)
            self.apply_failures += 1
            self.apply_retry = self.loop.call_later(delay, self._apply_again)

    def _apply_again(self):
        self.apply_retry = None
        self.fetch()

    def _synced(self, version):
        self.synced = True
        log.info("shadow %s: synced (version %d)", self.thing, version)
        early, self.early_delta = self.early_delta, None
        if early is not None and _version(early) > self.version:
            self._delta(early)
        self.updates.start()

    def _create(self):
        log.info("shadow %s does not exist; creating it", self.thing)
        req = self.request = _Request("create")
        if not self.default_cmd:
            self._seed_new_shadow(req, {})
            return
        children.run(self.loop, self.default_cmd, lambda result: self._defaults(req, result),
                     stdin=self.thing.encode() + b"\n", timeout=DEFAULTSHADOW_TIMEOUT)

    def _defaults(self, req, result):
        if req is not self.request:
            return  # the connection dropped meanwhile; the next fetch starts over
        if not result.ok:
            self._failed(req, "--defaultshadow command %s" % result.describe())
            return
        try:
            seed = json.loads(result.stdout)
        except ValueError:
            seed = None
        if not isinstance(seed, dict):
            self._failed(req, "--defaultshadow output is not a JSON object")
            return
        self._seed_new_shadow(req, seed)

    def _seed_new_shadow(self, req, seed):
        """reported starts as seed; each service takes its entry, or keeps its config."""
        self.request = None
        first = not self.synced
        for key, st in self.services.items():
            if first:
                st.seed({})
            if not st.reports:
                continue
            config = shadowdoc.merge(None, seed[key]) if key in seed else st.config
            try:
                st.apply(config, "new shadow", check=True, first=first)
            except (ChangeRefused, ChangeFailed) as e:
                log.error("shadow %s: %s: config for the new shadow not applied: %s",
                          self.thing, key, e)
        self.reported = {}
        self.creating = True
        # Local updates not yet reported win over the seed.
        self.extra = dict({k: v for k, v in seed.items() if k not in self.services}, **self.extra)
        if first:
            self._synced(0)
        self._next()

    # -- local updates -------------------------------------------------------------

    def _take_file(self, name, data):
        """Apply an update file KEY or KEY.SUFFIX; ActionFailed says why not."""
        key = name.partition(".")[0]
        if not key:
            raise ActionFailed("the file name does not start with a shadow key")
        st = self.services.get(key)
        fmt = st.service.informat if st else "JSON"
        try:
            value = formats.load(fmt, data)
        except formats.FormatError as e:
            raise ActionFailed("not valid %s: %s" % (fmt, e)) from None
        if st is None:  # reported as it is
            base = self.extra.get(key, self.reported.get(key))
            self.extra[key] = shadowdoc.merge(base, value, self.empty_array_deletes)
            return
        try:
            self._merge(st, value, "update file " + name)
        except (ChangeRefused, ChangeFailed) as e:
            raise ActionFailed(str(e)) from None


def _section(state, name):
    value = state.get(name)
    return value if isinstance(value, dict) else {}


def _version(msg):
    version = msg.get("version")
    return version if isinstance(version, int) and not isinstance(version, bool) else 0


def _error(msg):
    return "%s %s" % (msg.get("code", "?"), msg.get("message", "(no message)"))
