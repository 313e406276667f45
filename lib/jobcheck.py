"""Checking a job's steps against this system before any runs: which
program each step is, and as whom.

lib/jobdoc.py has read the document without looking at the system; here a
`runHandler` step's handler must be an executable file in a handler
directory (its `path` resolving, symlinks followed, inside one of them),
a `runCommand` step (or an old-schema operation not found among the
handlers) needs --jobs-allow-commands and a program found on PATH, and
`runAsUser` must name a user that exists and that chariotd may become (it
runs as root, or as that user already). Anything else raises `Refused`,
the reason the job is REJECTED.
"""

import os
import pwd
import shutil

from . import jobdoc

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class Refused(Exception):
    """A job chariotd will not run: REJECTED with this reason."""


class Step:
    """One action ready to run: the program and how."""

    __slots__ = ("action", "argv", "user")

    def __init__(self, action, argv, user):
        self.action = action
        self.argv = argv
        self.user = user  # a pwd entry, or None for chariotd's own user


def resolve(plan, dirs, allow_commands):
    """(steps, final step or None) of a jobdoc.Plan as Steps; Refused if one cannot run."""
    steps = [_step(a, plan, dirs, allow_commands) for a in plan.steps]
    final = _step(plan.final, plan, dirs, allow_commands) if plan.final else None
    return steps, final


def _step(action, plan, dirs, allow_commands):
    user = _user(action.run_as_user)
    if action.kind == "command":
        if not allow_commands:
            raise Refused("step %r: runCommand is off on this device (--jobs-allow-commands)"
                          % action.name)
        return Step(action, [_program(action.argv[0], action.name)] +
                    action.arguments(), user)
    directory = jobdoc.path_in_dirs(action.path, dirs)
    if directory is None or not _inside(directory, dirs):
        raise Refused("step %r: path %r is outside the handler directories"
                      % (action.name, action.path))
    program = os.path.join(directory, action.handler)
    if not (os.path.isfile(program) and os.access(program, os.X_OK)):
        if plan.schema == "old" and allow_commands and not action.path:
            program = _program(action.handler, action.name)
        else:
            raise Refused("step %r: unknown handler %r (no executable %s)"
                          % (action.name, action.handler, program))
    return Step(action, [program] + action.arguments(), user)


def _inside(directory, dirs):
    real = os.path.realpath(directory)
    for d in dirs:
        base = os.path.realpath(d)
        if real == base or real.startswith(base.rstrip("/") + "/"):
            return True
    return False


def _program(name, step):
    if "/" in name:
        found = name if os.path.isabs(name) and os.access(name, os.X_OK) else None
    else:
        found = shutil.which(name, path=os.environ.get("PATH") or DEFAULT_PATH)
    if not found:
        raise Refused("step %r: command %r not found" % (step, name))
    return found


def _user(name):
    if not name:
        return None
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        raise Refused("runAsUser %r: no such user" % name) from None
    if os.geteuid() == 0 or entry.pw_uid == os.geteuid():
        return entry if entry.pw_uid != os.geteuid() else None
    raise Refused("runAsUser %r needs chariotd to run as root" % name)
