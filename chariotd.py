#!/usr/bin/env python3
"""chariotd: owns the device's one connection to AWS IoT Core and offers its
services to the rest of the system as files and spawned processes.

This file runs chariotd from a source tree or the directory the Buildroot
and Yocto packages install (chariotd.py beside lib/); the command line is
handled in lib/cli.py, which an installed Python package (pyproject.toml)
runs as the `chariotd` command. First it checks what lib/ needs, so a
device without it gets one line saying what to install, not a traceback:
this file therefore parses under any Python (no f-strings and the like).
"""

import os
import sys

PAHO_HELP = ("pip install paho-mqtt, apt-get install python3-paho-mqtt (Yocto: "
             "python3-paho-mqtt from meta-python), or Buildroot BR2_PACKAGE_PYTHON_PAHO_MQTT")


def missing():
    """What lib/ needs and this Python lacks, as one line; None if nothing."""
    if sys.version_info < (3, 9):  # noqa: UP036 (the point: an older Python runs this)
        return ("needs Python 3.9 or newer, not %s (%s): install python3 >= 3.9 (apt-get "
                "install python3, Buildroot BR2_PACKAGE_PYTHON3) and run chariotd with it"
                % (sys.version.split()[0], sys.executable))
    import importlib.util

    try:
        found = importlib.util.find_spec("paho.mqtt.client")
    except ImportError:
        found = None
    if found is None:
        return "the paho-mqtt module is missing from %s: %s" % (sys.executable, PAHO_HELP)
    return None


if __name__ == "__main__":
    problem = missing()
    if problem:
        sys.stderr.write("chariotd: %s\n" % problem)
        sys.exit(1)
    sys.path.insert(0, os.path.dirname(os.path.realpath(__file__)))

    from lib.cli import main

    sys.exit(main(sys.argv[1:]))
