"""Load service definitions from a ``--services`` directory.

Each file ``NAME.js`` (the NodeJS daemon's ``module.exports = {...};``, read
as a literal by ``jsliteral``, never run), ``NAME.json`` or ``NAME.py``
(beyond: a Python module run with importlib; its module-level names give
the keys, and it may define ``validate(cfg)``) defines one service.  The
keys and their defaults are in docs/interface.md#service-definitions; this module
checks their presence and types and turns each definition into a
``Service``.  A broken definition becomes one log line naming the file and
the problem, and is skipped; the others still load.

It does not watch the directory, run notify commands, call ``validate`` or
touch the shadow; lib.servicestate and lib.shadowservices do.
"""

import importlib.machinery
import importlib.util
import json
import math
import os
import stat

from . import formats

KEYS = (
    "key",
    "outfile",
    "outformat",
    "informat",
    "notifycmd",
    "outkeys",
    "notifykeys",
    "initialnotify",
    "validate",
    "ephemeraldata",
    "timeout",
)
DEFAULT_INFORMAT = "JSON"
DEFAULT_TIMEOUT = 10


class DefinitionError(ValueError):
    """A service definition file cannot be used; the message says why."""


class Service:
    """One service definition; attributes are named like the keys."""

    __slots__ = KEYS + ("path",)

    def __init__(
        self,
        key,
        notifycmd,
        outfile=None,
        outformat=None,
        informat=DEFAULT_INFORMAT,
        outkeys=None,
        notifykeys=None,
        initialnotify=False,
        validate=None,
        ephemeraldata=False,
        timeout=DEFAULT_TIMEOUT,
        path=None,
    ):
        self.key = key
        self.notifycmd = notifycmd
        self.outfile = outfile
        self.outformat = outformat
        self.informat = informat
        self.outkeys = outkeys
        self.notifykeys = notifykeys
        self.initialnotify = initialnotify
        self.validate = validate
        self.ephemeraldata = ephemeraldata
        self.timeout = timeout
        self.path = path

    def __repr__(self):
        return "Service(key=%r, path=%r)" % (self.key, self.path)


def load_services(directory):
    """Load every definition in ``directory``.

    Returns ``(services_by_key, errors)``: errors is a list of log lines,
    each naming a file and its problem.  Files are read in sorted name
    order; hidden files and other suffixes are ignored.  When two files
    define the same key, the first one wins.
    """
    try:
        names = sorted(os.listdir(directory))
    except OSError as e:
        return {}, ["%s: cannot read service directory: %s" % (directory, _reason(e))]
    services, errors = {}, []
    for name in names:
        if name.startswith(".") or os.path.splitext(name)[1] not in _READERS:
            continue
        path = os.path.join(directory, name)
        try:
            service, warnings = _load(path)
        except DefinitionError as e:
            errors.append("%s: %s" % (path, e))
            continue
        errors.extend("%s: %s" % (path, w) for w in warnings)
        first = services.get(service.key)
        if first is not None:
            errors.append(
                "%s: service key %r is already defined by %s; skipped"
                % (path, service.key, first.path)
            )
            continue
        services[service.key] = service
    return services, errors


def _load(path):
    """(Service, warnings) for one file of a suffix _READERS knows; raises DefinitionError."""
    suffix = os.path.splitext(path)[1]
    _check_regular_file(path)
    values = _READERS[suffix](path)
    warnings = []
    if suffix != ".py":
        # A .py module has helpers and imports; in .js/.json every key is
        # meant as a setting, so an unknown one is probably a typo.
        warnings = ["ignoring unknown key %r" % k for k in sorted(values) if k not in KEYS]
    try:
        service = _build(values, suffix, path)
    except DefinitionError as e:
        # A misspelt key is most likely why a required one is missing.
        raise DefinitionError("; ".join([str(e)] + warnings)) from None
    outfile = service.outfile
    if outfile and not os.path.isabs(outfile):
        warnings.append("'outfile' %s is a relative path: written in chariotd's working "
                        "directory, as %s" % (outfile, os.path.abspath(outfile)))
    return service, warnings


def _check_regular_file(path):
    try:
        mode = os.stat(path).st_mode
    except OSError as e:
        raise DefinitionError("cannot read: %s" % _reason(e)) from None
    if not stat.S_ISREG(mode):
        raise DefinitionError("not a regular file")


# --- readers: file -> dict of raw values ------------------------------------


def _read_text(path):
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except OSError as e:
        raise DefinitionError("cannot read: %s" % _reason(e)) from None
    except UnicodeDecodeError:
        raise DefinitionError("cannot read: not UTF-8 text") from None


def _read_json(path):
    try:
        values = json.loads(_read_text(path))
    except (ValueError, RecursionError) as e:
        raise DefinitionError("syntax error: %s" % e) from None
    if not isinstance(values, dict):
        raise DefinitionError("must hold a JSON object")
    return values


def _read_js(path):
    # Imported only where a .js definition is, as the NodeJS daemon's are.
    from . import jsliteral

    try:
        return jsliteral.parse(_read_text(path))
    except jsliteral.CodeError as e:
        stem = os.path.splitext(os.path.basename(path))[0]
        raise DefinitionError("contains code; port it to %s.py (%s)" % (stem, e)) from None
    except jsliteral.LiteralError as e:
        raise DefinitionError("syntax error: %s" % e) from None


class _NoCacheLoader(importlib.machinery.SourceFileLoader):
    """Runs a .py definition without writing __pycache__ into its directory."""

    def set_data(self, path, data, *, _mode=0o666):
        pass


def _read_py(path):
    stem = os.path.splitext(os.path.basename(path))[0]
    name = "chariotd_service_" + "".join(c if c.isalnum() else "_" for c in stem)
    loader = _NoCacheLoader(name, path)
    spec = importlib.util.spec_from_file_location(name, path, loader=loader)
    module = importlib.util.module_from_spec(spec)
    try:
        loader.exec_module(module)
    except SyntaxError as e:
        raise DefinitionError("syntax error: line %s: %s" % (e.lineno, e.msg)) from None
    except OSError as e:
        raise DefinitionError("cannot read: %s" % _reason(e)) from None
    except (Exception, SystemExit) as e:
        # The module is user code: whatever it raises while loading must
        # become a log line for this file, not stop the other services.
        raise DefinitionError("failed to load: %s: %s" % (type(e).__name__, e)) from None
    return {k: getattr(module, k) for k in KEYS if hasattr(module, k)}


_READERS = {".js": _read_js, ".json": _read_json, ".py": _read_py}


# --- checking: dict of raw values -> Service --------------------------------


def _is_text(value):
    return isinstance(value, str) and value != ""


def _is_string_list(value):
    return isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value)


def _is_timeout(value):
    return (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(value)
        and value > 0
    )


# key -> (check, what the value must be)
_TYPES = {
    "key": (_is_text, "a non-empty string"),
    "outfile": (_is_text, "a non-empty string"),
    "outformat": (_is_text, "a format name"),
    "informat": (_is_text, "a format name"),
    "notifycmd": (lambda v: isinstance(v, str), "a string"),
    "outkeys": (_is_string_list, "a list of strings"),
    "notifykeys": (_is_string_list, "a list of strings"),
    "initialnotify": (lambda v: isinstance(v, bool), "true or false"),
    "validate": (callable, "a function"),
    "ephemeraldata": (lambda v: isinstance(v, bool), "true or false"),
    "timeout": (_is_timeout, "a positive number of seconds"),
}


def _build(values, suffix, path):
    # A null value (JSON null, JS null, Python None) counts as absent.
    values = {k: v for k, v in values.items() if k in KEYS and v is not None}
    problems = _missing(values) + _wrong_types(values, suffix)
    if problems:
        raise DefinitionError("; ".join(problems))
    for list_key in ("outkeys", "notifykeys"):
        if list_key in values:
            values[list_key] = list(values[list_key])
    return Service(path=path, **values)


def _missing(values):
    required = ["key", "notifycmd"]
    if not values.get("ephemeraldata"):
        required += ["outfile", "outformat"]
    return ["missing required key %r" % k for k in KEYS if k in required and k not in values]


def _wrong_types(values, suffix):
    problems = []
    for key in KEYS:
        if key not in values:
            continue
        value = values[key]
        if key == "validate" and suffix != ".py":
            problems.append("'validate' is only supported in NAME.py definitions")
            continue
        check, what = _TYPES[key]
        if not check(value):
            problems.append("%r must be %s, not %s" % (key, what, _describe(value)))
        elif key in ("outformat", "informat") and value not in formats.names():
            problems.append("unknown %s %r (known: %s)" % (key, value, ", ".join(formats.names())))
    return problems


def _describe(value):
    if isinstance(value, str):
        return repr(value) if len(value) < 40 else "a string"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, (list, tuple)):
        return "a list holding %s" % ", ".join(sorted({type(v).__name__ for v in value}))
    return "a " + type(value).__name__


def _reason(error):
    return error.strerror or str(error)
