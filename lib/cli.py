"""The command line: parses the options, sets up logging and runs the daemon.

`main` is what both `./chariotd.py` in a source tree and the `chariotd`
command of an installed package (pyproject.toml) run.
"""

import logging
import sys

from . import options

# Control characters as escapes, so that a file name, topic or shadow key
# holding a newline cannot forge a log line of its own.
_ESCAPES = {c: "\\x%02x" % c for c in list(range(0x20)) + list(range(0x7f, 0xa0))}
_ESCAPES.update({ord("\n"): "\\n", ord("\r"): "\\r", ord("\t"): "\\t",
                 0x2028: "\\u2028", 0x2029: "\\u2029"})
# A name that is not UTF-8 reaches us with its bytes as lone surrogates.
_ESCAPES.update({0xdc00 + b: "\\x%02x" % b for b in range(0x80, 0x100)})


class OneLineFormatter(logging.Formatter):
    """Each record is one line: its message has its control characters escaped
    (a traceback after it keeps its own lines)."""

    def formatMessage(self, record):
        record.message = record.message.translate(_ESCAPES)
        return super().formatMessage(record)


def setup_logging(timestamps):
    fmt = "%(levelname)s: %(message)s"
    if timestamps:
        fmt = "%(asctime)s " + fmt
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(OneLineFormatter(fmt))
    logging.basicConfig(level=logging.INFO, handlers=[handler])


def main(argv):
    try:
        opts = options.parse(argv)
    except options.OptionError as e:
        return options.main_error(e)
    if opts.help:
        sys.stdout.write(options.usage())
        return 0
    if opts.version:
        print("chariotd", options.VERSION)
        return 0
    if opts.status:
        from .status import show

        return show(opts.status)
    setup_logging(opts.log_timestamps)
    from .daemon import Daemon

    return Daemon(opts).run()


def run():
    """The installed `chariotd` command (and `python -m chariotd`)."""
    sys.exit(main(sys.argv[1:]))
