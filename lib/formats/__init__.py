"""Outfile formats: a registry of serialisers for a service's config.

Each format is one small module in this package exposing ``NAME``,
``dump(cfg) -> str`` and ``load(text) -> value``; adding a format means
writing that module and listing it in ``_MODULES`` below (``shellnames``
is not a format: it is SHELL's list of names never to write).  This package only
turns values into text and back: it does no file I/O and knows nothing about
shadows or services.  It stays MicroPython-friendly (no imports beyond
``json`` and its own modules).
"""


class FormatError(ValueError):
    """A config cannot be written in a format, or a text cannot be read."""


def kind(value):
    """What a config value is, in JSON's words, for an error message."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, (list, tuple)):
        return "an array"
    return "a " + type(value).__name__


# The format modules import FormatError from here, so they are imported only
# after it exists.
from . import json_format, plaintext, shell  # noqa: E402

_MODULES = (json_format, plaintext, shell)
_REGISTRY = {module.NAME: module for module in _MODULES}


def names():
    """The known format names, sorted: ['JSON', 'PLAINTEXT', 'SHELL']."""
    return sorted(_REGISTRY)


def get(fmt):
    """The module implementing format ``fmt``; FormatError if unknown."""
    module = _REGISTRY.get(fmt) if isinstance(fmt, str) else None
    if module is None:
        raise FormatError("unknown format %r (known: %s)" % (fmt, ", ".join(names())))
    return module


def dump(fmt, cfg):
    """Render ``cfg`` as the text of an outfile in format ``fmt``.

    The text is guaranteed to encode as UTF-8: a string from JSON can hold a
    lone surrogate ("\\ud800"), which would otherwise fail only when the
    outfile is written.
    """
    text = get(fmt).dump(cfg)
    try:
        text.encode("utf-8")
    except UnicodeError:
        raise FormatError("%s config holds a lone surrogate, not valid in UTF-8" % fmt) from None
    return text


def load(fmt, text):
    """Parse ``text`` (str, or UTF-8 bytes) written in format ``fmt``."""
    module = get(fmt)
    if isinstance(text, (bytes, bytearray)):
        try:
            text = bytes(text).decode("utf-8")
        except UnicodeError:
            raise FormatError("%s text is not valid UTF-8" % fmt) from None
    if not isinstance(text, str):
        raise FormatError("%s text must be str or bytes, not %s" % (fmt, type(text).__name__))
    return module.load(text)
