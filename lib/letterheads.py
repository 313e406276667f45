"""A message's letterhead, for the spool: the `--letterhead` file's JSON
object, or what the letterhead generator prints for that message.

The generator runs once per message with the MESSAGE_* variables
(lib/messagedoc.py builds them) added to the daemon's environment, and is
killed after GENERATOR_TIMEOUT seconds. Whatever goes wrong is a
messagedoc.BadMessage saying why, which fails that message only. Laying
the message over its letterhead is messagedoc's job.
"""

import os

from . import children, messagedoc
from .messagedoc import FILE_LIMIT, BadMessage

GENERATOR_TIMEOUT = 5


def read_file(path):
    """The letterhead held in the file at path."""
    try:
        with open(path, "rb") as f:
            data = f.read(FILE_LIMIT + 1)
    except OSError as e:
        raise BadMessage("letterhead %s: %s" % (path, e.strerror)) from None
    return messagedoc.letterhead(data, "letterhead " + path)


def generate(loop, command, variables, then):
    """Run the generator command with the MESSAGE_* variables; later, from the
    loop, then(letterhead, None), or then(None, BadMessage) if it failed."""
    def finished(result):
        try:
            if not result.ok:
                raise BadMessage("letterhead generator %s" % result.describe())
            head = messagedoc.letterhead(result.stdout, "letterhead generator")
        except BadMessage as e:
            then(None, e)
            return
        then(head, None)

    try:
        children.run(loop, command, finished, timeout=GENERATOR_TIMEOUT,
                     env=dict(os.environ, **variables))
    except ValueError as e:  # a topic or slot the environment cannot carry
        raise BadMessage("letterhead generator: %s" % e) from None
