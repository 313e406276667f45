"""PLAINTEXT outfile format: the config is one string, written as it is.

``dump`` accepts only a string (or None, which writes an empty file); it does
not convert numbers or objects to text, because guessing a rendering would
hide a wrong service definition.  ``load`` returns the text unchanged.
No I/O.
"""

from . import FormatError, kind

NAME = "PLAINTEXT"


def dump(cfg):
    if cfg is None:
        return ""
    if not isinstance(cfg, str):
        raise FormatError("PLAINTEXT config must be a string, not %s" % kind(cfg))
    return cfg


def load(text):
    return text
