"""One shadow's services: what its desired state, its deltas and the local
update files mean for the device's configs, and what the shadow should be
told of them.

A `ShadowServices` holds the `ServiceState` of each service a thing's
--services directories define, the shadow's reported section as far as it
is known, and the keys local update files set that no service owns. It
merges each change into the configs (lib.servicestate writes the outfiles
and runs the notify commands), keeps the desired keys it handled, to be
cleared, and says which reported values differ from the configs. When, and
how, the shadow is asked and told is lib.shadowsync's business: this module
does not speak MQTT.

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
- A desired key is handled when its change was applied or refused: it is
  then cleared from desired whole (only the keys of this device's services,
  so desired state of services this device lacks is left alone). A refused
  change is logged, and the reported config shows it was not taken. A
  change that failed on the device (outfile not writable: a full or
  read-only disk) is left in desired and tried again by a fetch after
  RETRY_FIRST seconds, doubling up to RETRY_CAP while it keeps failing.
- A report the shadow cannot hold. An update AWS refuses for what it
  carries (NEVER_TAKEN: nested too deep, the document over its size limit)
  would be refused again, and every later report merged into it with it.
  So its keys are sent one at a time (each with its own desired clearing,
  which may be what makes room for it), and a key refused alone is logged
  once and left out of reported until its value changes; the other keys,
  and desired clearing, go on. Nothing is refused before sending on the
  shadow's own limits (only on AWS's fixed 128 KiB payload limit, by
  lib.shadowsync, with the same outcome): the size limit is an adjustable
  quota and the nesting limit is stated as 5, 6 or 8 by different AWS
  pages (docs/aws-facts.md#device-shadow), so the refusal is the one sure
  answer; it costs one request per key.
"""

import json
import logging

from . import children, formats, shadowdoc
from .actiondir import ActionFailed
from .services import load_services
from .servicestate import ChangeFailed, ChangeRefused, ServiceState, value_problem
from .updatefiles import file_key

log = logging.getLogger("chariotd")

RETRY_FIRST = 2.0
RETRY_CAP = 300.0
# Update refusals that the same update would get again: 400 (malformed, such
# as nested too deep) and 413 (the document over its size limit). 409 is a
# version conflict; 429 (throttled) and 5xx are worth retrying.
NEVER_TAKEN = (400, 413)
DEFAULTSHADOW_TIMEOUT = 10


def load(directories):
    """The services the directories define, by key (the first definition of a key wins)."""
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


class ShadowServices:
    def __init__(self, loop, thing, services, default_cmd, empty_array_deletes, refetch):
        """services: Service by key; default_cmd: --defaultshadow's command, or None;
        refetch() fetches the document again (to retry a change that failed on the device)."""
        self._thing = thing
        self._default_cmd = default_cmd
        self._loop = loop
        self._services = {key: ServiceState(loop, svc) for key, svc in sorted(services.items())}
        self._empty_array_deletes = empty_array_deletes
        self._refetch = refetch
        self._reported = {}  # the shadow's reported section, as far as we know
        self._extra = {}  # keys without a service (update files): the value to report
        self._handled = set()  # desired keys handled, to be cleared by the next update
        self._refused = {}  # key -> the value the shadow refused to report (left out while equal)
        self._suspects = []  # the keys of a refused update, to send one at a time
        self._not_applied = set()  # desired keys a service failed to apply
        self._apply_retry = None  # the refetch that tries a failed change again
        self._apply_failures = 0

    def keys(self):
        """The services' keys, sorted."""
        return list(self._services)

    def desired_left(self):
        """The desired keys not cleared yet (failed, or handled and not yet reported)."""
        return sorted(self._not_applied | self._handled)

    # -- what the shadow says -----------------------------------------------------

    def take_document(self, state, first):
        """A fetched document's state; first: the first since start, which
        tells each service its current config."""
        state = state if isinstance(state, dict) else {}
        reported, desired = (_object(state.get(name)) for name in ("reported", "desired"))
        self._reported = reported
        if first:
            for st in self._services.values():
                st.seed(reported)
        self._handle(desired, "desired state", first, refresh=True)

    def take_delta(self, state, origin):
        self._handle(state, origin)

    def defaults_for_new_shadow(self, done):
        """What a missing shadow starts from: done(seed, None), the JSON object that
        --defaultshadow's command prints ({} without one), or done(None, why)."""
        if not self._default_cmd:
            done({}, None)
            return
        children.run(self._loop, self._default_cmd, lambda result: done(*_seed(result)),
                     stdin=self._thing.encode() + b"\n", timeout=DEFAULTSHADOW_TIMEOUT)

    def take_new_shadow(self, seed, first):
        """The shadow is missing: its reported section starts as seed (from
        --defaultshadow), each service taking its entry or keeping its config."""
        for key, st in self._services.items():
            if first:
                st.seed({})
            if st.reports:
                config = shadowdoc.merge(None, seed[key]) if key in seed else st.config
                self._apply(st, config, "new shadow", True, first)
        self._reported = {}
        # Local updates not yet reported win over the seed.
        self._extra = dict({k: v for k, v in seed.items() if k not in self._services},
                           **self._extra)

    # -- what to tell it ----------------------------------------------------------

    def next_update(self):
        """(reported, clear, keys) for the next update: the reported values that
        bring the shadow in line with the configs, less those it refused; the
        desired keys to clear (given back by `put_back` if not sent); and None,
        or while the keys of a refused update are sent one at a time, the one
        key this update is about."""
        wanted = self._wanted()
        for key in [k for k, v in self._refused.items() if not shadowdoc.equal(wanted.get(k), v)]:
            del self._refused[key]  # changed since: tried again
        reported = self._reported_update(
            {k: v for k, v in wanted.items() if k not in self._refused})
        while self._suspects and self._suspects[0] not in reported:
            del self._suspects[0]  # nothing left to report for it
        if not self._suspects:
            handled, self._handled = self._handled, set()
            return reported, handled, None
        key = self._suspects[0]
        clear = self._handled & {key}  # its clearing may be what makes room for it
        self._handled -= clear
        return {key: reported[key]}, clear, {key}

    def refused(self, reported, reason):
        """The shadow refused for good (reason: AWS's code and text) an update
        that carried reported. Its keys are sent one at a time next; a key
        refused alone is logged, and its value left out of reported until it
        changes (a key of update files only forgets the value). Returns the
        keys found to blame."""
        if len(reported) > 1:
            self._suspects = sorted(reported)
            log.warning("shadow %s: update refused (%s); reporting %s one at a time to find "
                        "which it cannot take", self._thing, reason, ", ".join(self._suspects))
            return []
        [key] = reported
        if key in self._suspects:
            self._suspects.remove(key)
        value = self._wanted().get(key)
        if not shadowdoc.equal(self._reported_update({key: value}), reported):
            return []  # changed since it was sent: the new value is tried
        log.error("shadow %s: %s: the shadow cannot take its reported config (%s); left out of "
                  "reported until it changes", self._thing, key, reason)
        if key in self._services:
            self._refused[key] = shadowdoc.copy(value)
        else:
            del self._extra[key]
        return [key]

    def _wanted(self):
        """What the shadow should report, by key."""
        wanted = {key: st.config for key, st in self._services.items() if st.reports}
        wanted.update(self._extra)
        return wanted

    def _reported_update(self, wanted):
        return shadowdoc.diff({key: self._reported.get(key) for key in wanted}, wanted)

    def put_back(self, handled):
        self._handled |= handled

    def accepted(self, reported):
        """The shadow took an update reporting reported."""
        self._reported = shadowdoc.apply(self._reported, reported)
        for key in [k for k, v in self._extra.items()
                    if shadowdoc.equal(self._reported.get(k), v)]:
            del self._extra[key]

    # -- applying -------------------------------------------------------------------

    def _handle(self, changes, origin, first=False, refresh=False):
        """Merge each service's part of changes into its config; with refresh, also
        bring the outfiles of services without a change in line."""
        for key, st in self._services.items():
            change = changes.get(key)
            if key in changes and change != {}:
                self._change(st, change, origin, first)
            elif refresh and st.reports:
                problem = self._apply(st, st.config, "current config", False, first)
                if isinstance(problem, ChangeFailed):
                    self._retry_apply()

    def _change(self, st, change, origin, first):
        """A desired or delta change: handled (to be cleared) unless it failed."""
        config, check = self._merged(st, change)
        problem = self._apply(st, config, origin, check, first,
                              refused_then="cleared from desired", failed_then="left in desired")
        if isinstance(problem, ChangeFailed):
            self._not_applied.add(st.key)
            self._retry_apply()
            return
        self._not_applied.discard(st.key)
        if not self._not_applied:
            self._apply_failures = 0
        self._handled.add(st.key)

    def _merged(self, st, change):
        """change merged into the service's config, and whether that is news to validate."""
        base = st.config if st.reports else None  # an ephemeral change stands alone
        config = shadowdoc.merge(base, change, self._empty_array_deletes)
        return config, not st.reports or not shadowdoc.equal(config, base)

    def _apply(self, st, config, origin, check, first, refused_then="", failed_then=""):
        """st.apply, a refusal or failure logged with what follows from it and
        returned (ChangeRefused or ChangeFailed); None when applied."""
        try:
            st.apply(config, origin, check=check, first=first)
            return None
        except ChangeRefused as e:
            problem, what, then = e, "refused", refused_then
        except ChangeFailed as e:
            problem, what, then = e, "not applied", failed_then
        log.error("shadow %s: %s: %s %s: %s%s", self._thing, st.key, origin, what, problem,
                  "; " + then if then else "")
        return problem

    def _retry_apply(self):
        if self._apply_retry is None:
            delay = min(RETRY_CAP, RETRY_FIRST * 2 ** self._apply_failures)
            self._apply_failures += 1
            self._apply_retry = self._loop.call_later(delay, self._apply_again)

    def _apply_again(self):
        self._apply_retry = None
        self._refetch()

    # -- local updates ------------------------------------------------------------

    def take_file(self, name, data):
        """Apply an update file KEY or KEY.SUFFIX; ActionFailed says why not."""
        key = file_key(name)
        if not key:
            raise ActionFailed("the file name does not start with a shadow key")
        st = self._services.get(key)
        fmt = st.service.informat if st else "JSON"
        try:
            value = formats.load(fmt, data)
        except formats.FormatError as e:
            raise ActionFailed("not valid %s: %s" % (fmt, e)) from None
        if st is None:  # reported as it is
            problem = value_problem(value)
            if problem:
                raise ActionFailed("the value %s" % problem)
            base = self._extra.get(key, self._reported.get(key))
            self._extra[key] = shadowdoc.merge(base, value, self._empty_array_deletes)
            return
        config, check = self._merged(st, value)
        try:
            st.apply(config, "update file " + name, check=check)
        except (ChangeRefused, ChangeFailed) as e:
            raise ActionFailed(str(e)) from None


def _object(value):
    return value if isinstance(value, dict) else {}


def _seed(result):
    """(seed, None) from --defaultshadow's output, or (None, why not)."""
    if not result.ok:
        return None, "--defaultshadow command %s" % result.describe()
    try:
        seed = json.loads(result.stdout)
    except (ValueError, RecursionError):
        seed = None
    if not isinstance(seed, dict):
        return None, "--defaultshadow output is not a JSON object"
    return seed, None
