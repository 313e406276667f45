#!/usr/bin/env python3
"""chariotd: owns the device's one connection to AWS IoT Core and offers its
services to the rest of the system as files and spawned processes.

This file only parses the command line, sets up logging and runs the
daemon; the parts live in lib/.
"""

import logging
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.realpath(__file__)))

from lib import options  # noqa: E402


def setup_logging(timestamps):
    fmt = "%(levelname)s: %(message)s"
    if timestamps:
        fmt = "%(asctime)s " + fmt
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format=fmt)


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
    setup_logging(opts.log_timestamps)
    from lib.daemon import Daemon

    return Daemon(opts).run()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
