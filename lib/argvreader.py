"""A command line read as argparse reads it (Python 3.11, no abbreviations),
from a list of option specs, by a few lines of our own: argparse and what
it imports (gettext, shutil with bz2 and lzma) are 0.5 MB a daemon would
keep for ever, so it is imported only to format --help. This module knows
no option of chariotd's (lib/options.py lists them and says what they mean).
"""

import collections
import re
import types

FLAG, VALUE, MANY = "flag", "value", "many"  # MANY: given again, every value is kept
Spec = collections.namedtuple("Spec", "names kind metavar default help")
_NEGATIVE_NUMBER = re.compile(r"^-\d+$|^-\d*\.\d+$")  # argparse's: a value, not an option


class OptionError(Exception):
    """A bad command line; the message names the option."""


def format_help(specs, prog, description):
    import argparse  # only to format the help

    p = argparse.ArgumentParser(prog=prog, add_help=False, allow_abbrev=False,
                                description=description)
    for spec in specs:
        action = {FLAG: "store_true", MANY: "append"}.get(spec.kind)
        p.add_argument(*spec.names, action=action, help=spec.help,
                       **({} if spec.kind == FLAG else {"metavar": spec.metavar}))
    return p.format_help()


def read(specs, argv):
    """The options in argv, as argparse reads them: `--name=value` or `--name
    value` (a value that looks like an option, other than a negative number
    or a text with a space, is not taken), flags without a value, the last
    of a repeated option kept (of MANY, all), `-hh` for -h -h; anything
    else, `--` and what follows it included, is unrecognised."""
    by_name, ns, unrecognised = {}, types.SimpleNamespace(), []
    for spec in specs:
        by_name.update(dict.fromkeys(spec.names, spec))
        empty = {MANY: [], FLAG: False}.get(spec.kind, spec.default)
        setattr(ns, dest(spec), empty)
    i = 0
    while i < len(argv):
        arg, i = argv[i], i + 1
        if arg == "--":
            unrecognised += argv[i - 1:]
            break
        spec, name, value = _option(arg, by_name) or (None, None, None)
        if spec is None:
            unrecognised.append(arg)
            continue
        what = "argument %s: " % "/".join(spec.names)
        while spec.kind == FLAG:
            setattr(ns, dest(spec), True)
            if value is None:
                break
            if name.startswith("--") or not value or "-" + value[0] not in by_name:
                raise OptionError(what + "ignored explicit argument %r" % value)
            name, value = "-" + value[0], value[1:] or None
            spec = by_name[name]
        if spec.kind == FLAG:
            continue
        if value is None:
            if i == len(argv) or argv[i] == "--" or _option(argv[i], by_name):
                raise OptionError(what + "expected one argument")
            value, i = argv[i], i + 1
        if spec.kind == MANY:
            getattr(ns, dest(spec)).append(value)
        else:
            setattr(ns, dest(spec), value)
    if unrecognised:
        raise OptionError("unrecognized arguments: " + " ".join(unrecognised))
    return ns


def _option(arg, by_name):
    """(spec or None if unknown, option name, value given with it or None) when
    arg is an option, None when it is a value (or a positional argument)."""
    if not arg.startswith("-"):
        return None
    if arg in by_name:
        return by_name[arg], arg, None
    if len(arg) == 1:
        return None
    name, equals, value = arg.partition("=")
    if equals and name in by_name:
        return by_name[name], name, value
    if arg[1] != "-" and arg[:2] in by_name:
        return by_name[arg[:2]], arg[:2], arg[2:]
    if _NEGATIVE_NUMBER.match(arg) or " " in arg:
        return None
    return None, arg, None


def dest(spec):
    """The attribute an option is kept in: its long name, dashes as underscores."""
    return spec.names[-1][2:].replace("-", "_")
