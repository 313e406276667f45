"""One service's side of the shadow: its current config, and making a new
config take effect on the device.

`apply` validates a new config, renders it in the service's outformat
(only the `outkeys` when given), replaces the outfile unless what is on
disk already says the same (the same bytes, or text that reads back, in
the outformat, as a config rendered to those bytes: another tool's
whitespace, key order or quoting), remembers the config and runs
`notifycmd` when the outfile changed (or a `notifykeys` key changed, or on
the first fetch with `initialnotify`). A change that cannot work (validate
raised, a value of the wrong shape for the format) raises ChangeRefused; a
device-side failure (outfile directory missing or read-only) raises
ChangeFailed. Either way the old outfile and the remembered config stay as
they were, so nothing is ever half-applied.

The remembered config is what gets reported, so it is never read back from
a file that may not be able to hold it (a SHELL file flattens `a_b` and
`{a: {b}}` alike and turns '5' into 5; an `outkeys` file lacks keys).
`seed` takes it from the shadow's `reported` section, the record of what
was applied; only a key the shadow has no record of is read back from the
outfile, once, as the best knowledge there is.

notifycmd runs through the shell (lib.children: never blocking the event
loop, killed after `timeout` seconds) with the service's config as JSON on
its standard input, which is how an `ephemeraldata` service's one-shot
command learns its arguments. One notify per service runs at a time; a
change during a run asks for one more run afterwards (with the newest
config; each ephemeral change gets its own run). `validate` is user
code run on the event loop thread: it must be quick.

This module does not talk to the shadow or decide what to report.
"""

import json
import logging
import math

from . import children, formats, outfile, shadowdoc

log = logging.getLogger("chariotd")

# Deepest a config may nest: AWS holds a shadow's state at most 6 to 8 deep, and
# a config far deeper would meet Python's recursion limit in merge and copy.
MAX_DEPTH = 32


class ChangeRefused(Exception):
    """The change can never be applied; the message says why."""


class ChangeFailed(Exception):
    """The device could not apply the change now; the message says why."""


class ServiceState:
    def __init__(self, loop, service):
        self.loop = loop
        self.service = service
        self.key = service.key
        self.config = None
        self._notifying = False
        self._queued = []  # configs to notify once the running notifycmd ends

    @property
    def reports(self):
        """Whether this service's config belongs in the shadow's reported section."""
        return not self.service.ephemeraldata

    def seed(self, reported):
        """Start from the shadow's record (its reported section), else the outfile."""
        if not self.reports:
            return
        if self.key in reported:
            self.config = shadowdoc.copy(reported[self.key])
        else:
            self.config = self._read_back()

    def _read_back(self):
        path, fmt = self.service.outfile, self.service.outformat
        if path == outfile.DEV_NULL:
            return None
        try:
            data = outfile.read(path)
            config = None if data is None else formats.load(fmt, data)
        except (OSError, formats.FormatError) as e:
            log.warning("%s: cannot read %s back (%s); starting with no config",
                        self.key, path, getattr(e, "strerror", None) or e)
            return None
        if config is not None:
            log.info("%s: shadow has no record; took the config from %s", self.key, path)
        return config

    def apply(self, config, origin, check=True, first=False):
        """Make config the service's config; origin names the change in log lines.
        check: validate it (a change, not the known config re-applied).
        first: this is the first fetch since start (for initialnotify)."""
        if check:
            config = self._validated(config)
        if not self.reports:
            log.info("%s: %s passed to notifycmd (ephemeral data)", self.key, origin)
            self._notify(config)
            return
        old = self.config
        written = self._write(config, old)
        self.config = config
        if written:
            log.info("%s: wrote %s (%s)", self.key, self.service.outfile, origin)
        elif not shadowdoc.equal(old, config):
            log.info("%s: applied %s; outfile unchanged", self.key, origin)
        if self._wants_notify(old, config, written) or (first and self.service.initialnotify):
            self._notify(config)

    def _validated(self, config):
        if _depth(config) > MAX_DEPTH:  # before anything walks it by recursion
            raise ChangeRefused("the config is nested more than %d deep" % MAX_DEPTH)
        validate = self.service.validate
        if validate is not None:
            try:
                config = validate(shadowdoc.copy(config))
            except Exception as e:  # user code: whatever it raises refuses the change
                raise ChangeRefused("validate raised %s: %s" % (type(e).__name__, e)) from None
        problem = _json_problem(config)
        if problem:
            raise ChangeRefused("the config %s" % problem)
        return config

    def _write(self, config, old):
        """Bring the outfile in line with config; True if its content changed."""
        if config is None and old is None:
            return False  # nothing known, so an existing file is left alone
        data = self._render(config)
        path = self.service.outfile
        if path == outfile.DEV_NULL:
            try:
                return old is None or data != self._render(old)
            except ChangeRefused:
                return True
        try:
            if self._holds(path, data):
                return False
            outfile.replace(path, data)
        except OSError as e:
            raise ChangeFailed("cannot write %s: %s" % (path, e.strerror or e)) from None
        return True

    def _holds(self, path, data):
        """Whether the outfile already says what data says: the same bytes, or
        text that reads (in the outformat) as a config rendered exactly as data,
        so a file another tool wrote with other whitespace, key order or
        quoting is left alone. A missing or unreadable file does not."""
        existing = outfile.read(path)
        if existing is None or len(existing) >= outfile.READ_LIMIT:
            return False  # missing, or more than a config can be (read() stops there)
        if existing == data:
            return True
        fmt = self.service.outformat
        try:
            return formats.dump(fmt, formats.load(fmt, existing)).encode() == data
        except (formats.FormatError, UnicodeError):
            return False

    def _render(self, config):
        fmt = self.service.outformat
        try:
            return formats.dump(fmt, shadowdoc.select(config, self.service.outkeys)).encode()
        except formats.FormatError as e:
            raise ChangeRefused("cannot be written as %s: %s" % (fmt, e)) from None
        except UnicodeError:
            raise ChangeRefused("holds text that is not valid Unicode") from None

    def _wants_notify(self, old, new, written):
        keys = self.service.notifykeys
        if keys is not None:
            return bool(set(shadowdoc.changed_keys(old, new)) & set(keys))
        return written

    def _notify(self, config):
        if not self.service.notifycmd:
            return
        if self._notifying:
            if self.reports:
                self._queued = [config]  # only the newest config matters
            else:
                self._queued.append(config)  # each ephemeral change is a command of its own
            return
        self._notifying = True
        stdin = json.dumps(config).encode()
        children.run(self.loop, self.service.notifycmd, self._notified, stdin=stdin,
                     timeout=self.service.timeout)

    def _notified(self, result):
        self._notifying = False
        if result.ok:
            log.info("%s: notifycmd done", self.key)
        else:
            log.error("%s: notifycmd %r %s", self.key, self.service.notifycmd, result.describe())
        if self._queued:
            self._notify(self._queued.pop(0))


def value_problem(value):
    """Why no shadow can hold value (a phrase), or None: nested too deep
    (checked first, without recursion), or not JSON a shadow takes."""
    if _depth(value) > MAX_DEPTH:
        return "is nested more than %d deep" % MAX_DEPTH
    return _json_problem(value)


def _depth(value):
    """How deep value nests objects and arrays, found without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            item = list(item.values())
        if isinstance(item, (list, tuple)):
            deepest = max(deepest, depth)
            stack.extend((child, depth + 1) for child in item)
    return deepest


def _json_problem(value):
    """Why value cannot be a shadow value (a phrase), or None if it can."""
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                return "has a key %r that is not a string" % (key,)
            problem = _json_problem(key) or _json_problem(item)
            if problem:
                return problem
        return None
    if isinstance(value, (list, tuple)):
        for item in value:
            if item is None:  # AWS refuses such a report, however often it is sent
                return "holds null inside an array, which a shadow cannot hold"
            problem = _json_problem(item)
            if problem:
                return problem
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return "holds %r, which JSON cannot represent" % value
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:  # JSON's "\ud800": what no file or report can carry
            return "holds a lone surrogate, which is not valid Unicode"
        return None
    if value is None or isinstance(value, (int, float)):
        return None
    return "holds a %s, which is not a JSON value" % type(value).__name__
