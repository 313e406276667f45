"""JSON outfile format: the config as pretty-printed JSON text.

``dump`` writes keys sorted, two-space indent, ``": "`` and ``","``
separators and a final newline, so the same config always gives the same
bytes (the daemon compares contents to decide whether the outfile changed).
Object members whose value is None are dropped at every depth (``null`` is
never written); None as an array element stays ``null`` because dropping it
would shift positions.  ``dump(None)`` is ``"{}\\n"``.  ``load`` parses JSON
and keeps nulls (in an update file null means "delete").
Encoding is done here rather than with ``json.dumps(indent=...)`` so the
output is identical under MicroPython, whose json has no indent/sort_keys.
No I/O.
"""

import json

from . import FormatError

NAME = "JSON"
_INDENT = "  "


def dump(cfg):
    if cfg is None:
        return "{}\n"
    parts = []
    _encode(cfg, "", parts)
    parts.append("\n")
    return "".join(parts)


def load(text):
    try:
        return json.loads(text)
    # RuntimeError: nesting too deep (CPython's RecursionError is one, and
    # MicroPython has no RecursionError name).
    except (ValueError, RuntimeError) as e:
        raise FormatError("not valid JSON: %s" % e) from None


def _encode(value, indent, parts):
    if isinstance(value, dict):
        _encode_object(value, indent, parts)
    elif isinstance(value, (list, tuple)):
        _encode_array(value, indent, parts)
    else:
        parts.append(_scalar(value))


def _encode_object(obj, indent, parts):
    items = []
    for key, value in obj.items():
        if not isinstance(key, str):
            raise FormatError("object key %r is not a string" % (key,))
        if value is not None:
            items.append((key, value))
    if not items:
        parts.append("{}")
        return
    items.sort(key=lambda item: item[0])
    inner = indent + _INDENT
    parts.append("{")
    for i, (key, value) in enumerate(items):
        parts.append("\n" + inner if i == 0 else ",\n" + inner)
        parts.append(_string(key))
        parts.append(": ")
        _encode(value, inner, parts)
    parts.append("\n" + indent + "}")


def _encode_array(items, indent, parts):
    if not items:
        parts.append("[]")
        return
    inner = indent + _INDENT
    parts.append("[")
    for i, value in enumerate(items):
        parts.append("\n" + inner if i == 0 else ",\n" + inner)
        _encode(value, inner, parts)
    parts.append("\n" + indent + "]")


def _scalar(value):
    if isinstance(value, str):
        return _string(value)
    if value is None or isinstance(value, bool):
        return json.dumps(value)
    if isinstance(value, (int, float)):
        # NaN and infinities have no JSON spelling; json.dumps would write
        # the non-standard "NaN" that other readers refuse.
        if value != value or value in (float("inf"), float("-inf")):
            raise FormatError("%r cannot be written as JSON" % (value,))
        return json.dumps(value)
    raise FormatError("a %s value cannot be written as JSON" % type(value).__name__)


def _string(text):
    """``text`` as a JSON string in ASCII, non-ASCII as ``\\u`` escapes: what
    CPython's json.dumps writes, and MicroPython's (which keeps UTF-8) does not."""
    quoted = json.dumps(text)
    if len(quoted.encode()) == len(quoted):  # always, under CPython
        return quoted
    return "".join(c if c < "\x80" else _escape(ord(c)) for c in quoted)


def _escape(code):
    if code > 0xFFFF:  # a surrogate pair, as JSON spells characters beyond the BMP
        code -= 0x10000
        return "\\u%04x\\u%04x" % (0xD800 + (code >> 10), 0xDC00 + (code & 0x3FF))
    return "\\u%04x" % code
