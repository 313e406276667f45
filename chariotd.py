#!/usr/bin/env python3
"""chariotd: owns the device's one connection to AWS IoT Core and offers its
services to the rest of the system as files and spawned processes.

This file runs chariotd from a source tree or the directory the Buildroot
and Yocto packages install (chariotd.py beside lib/); the command line is
handled in lib/cli.py, which an installed Python package (pyproject.toml)
runs as the `chariotd` command.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.realpath(__file__)))

from lib.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
