"""AWS IoT job documents: parse and check them, and keep what chariotd says
back within AWS's statusDetails rules. Pure: no files, processes or clock.

Two schemas are read, the AWS IoT Device Client's, so that a document made
for a fleet of device clients (or from an AWS managed template) means the
same here:

- the current one: `version` "1.0", `steps` (a list of `{"action": ...}`),
  optional `finalStep`, top-level `includeStdOut`. An action has `name`,
  `type` (`runHandler`: `input.handler`, `input.args`, `input.path`;
  `runCommand`: `input.command`, a comma-separated argv where `\\,` is a
  literal comma), optional `runAsUser` and `ignoreStepFailure` (the device
  client writes "true"/"false" as strings; booleans are taken too);
- the older flat one: `operation`, `args`, `path`, `allowStdErr`,
  `includeStdOut`.

`parse()` turns a document into a `Plan` or raises `JobDocumentError` with
the reason the job is REJECTED. Whether a handler exists, a path resolves
inside a handler directory or a user exists is for the caller to find out;
the checks here need no system: a handler name is a plain file name, a
`path` must name one of the given directories (or a directory below one)
textually, and a document over AWS's 32 KB is refused.
"""

import json
import posixpath
import re
import unicodedata

DOCUMENT_LIMIT = 32 * 1024  # AWS: a job document is at most 32 KB
DETAIL_VALUE_LIMIT = 1024
DETAIL_PAIRS_LIMIT = 10  # the older limits page; kept to be safe
DETAIL_KEY = re.compile(r"[a-zA-Z0-9:_-]{1,128}")
DEFAULT_PATH = "default"  # the device client's name for its handler directory
PLACEHOLDER = "${aws:iot:parameter:"


class JobDocumentError(ValueError):
    """A document chariotd will not run; the message is the REJECTED reason."""


class Action:
    """One step: a handler from a handler directory, or a command (argv)."""

    __slots__ = ("name", "kind", "handler", "path", "args", "argv", "run_as_user",
                 "ignore_failure", "allow_stderr", "user_argument")

    def __init__(self, name, kind, handler=None, path="", args=(), argv=None, run_as_user="",
                 ignore_failure=False, allow_stderr=None, user_argument=True):
        self.name = name
        self.kind = kind  # "handler" or "command"
        self.handler = handler
        self.path = path  # "" = the --jobs directory
        self.args = list(args)
        self.argv = argv  # for a command
        self.run_as_user = run_as_user  # "" = as chariotd runs
        self.ignore_failure = ignore_failure
        self.allow_stderr = allow_stderr  # old schema: most stderr lines allowed, or None
        # The device client passes runAsUser as its handlers' first argument
        # (the current schema only); its handlers expect it there.
        self.user_argument = user_argument

    def arguments(self):
        """argv after the program."""
        if self.kind == "command":
            return list(self.argv[1:])
        return ([self.run_as_user] if self.user_argument else []) + self.args


class Plan:
    __slots__ = ("schema", "steps", "final", "include_stdout", "timeout")

    def __init__(self, schema, steps, final=None, include_stdout=False, timeout=None):
        self.schema = schema  # "1.0" or "old"
        self.steps = steps
        self.final = final
        self.include_stdout = include_stdout
        self.timeout = timeout  # seconds for the whole job, from timeoutConfig, or None

    def actions(self):
        return self.steps + ([self.final] if self.final else [])


def parse(document):
    """A Plan for a decoded job document (a dict); JobDocumentError if it cannot run."""
    if not isinstance(document, dict):
        raise JobDocumentError("the job document is not a JSON object")
    size = len(json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode())
    if size > DOCUMENT_LIMIT:
        raise JobDocumentError("the job document is %d bytes, over AWS's %d" % (size,
                                                                               DOCUMENT_LIMIT))
    _no_placeholders(document)
    timeout = _timeout(document.get("timeoutConfig"))
    if "version" in document or "steps" in document:
        version = document.get("version")
        if version != "1.0":
            raise JobDocumentError("unsupported job document version %r (only \"1.0\")"
                                   % (version,))
        steps = document.get("steps")
        if not isinstance(steps, list):
            raise JobDocumentError("\"steps\" must be a list of actions")
        actions = [_step(step, "steps[%d]" % i) for i, step in enumerate(steps)]
        final = None
        if document.get("finalStep") is not None:
            final = _step(document["finalStep"], "finalStep")
        if not actions and final is None:
            raise JobDocumentError("the job document has no steps")
        return Plan("1.0", actions, final, _flag(document, "includeStdOut", "document"), timeout)
    if "operation" in document:
        return Plan("old", [_old_action(document)], None,
                    _flag(document, "includeStdOut", "document"), timeout)
    raise JobDocumentError("not a job document chariotd knows: no \"version\"/\"steps\" and "
                           "no \"operation\"")


def _step(step, where):
    if not isinstance(step, dict) or not isinstance(step.get("action"), dict):
        raise JobDocumentError("%s must be an object with an \"action\"" % where)
    action = step["action"]
    name = action.get("name")
    if not isinstance(name, str) or not name:
        raise JobDocumentError("%s: the action needs a \"name\"" % where)
    where = "step %r" % name
    kind = action.get("type")
    user = action.get("runAsUser", "")
    if user is None:
        user = ""
    if not isinstance(user, str):
        raise JobDocumentError("%s: \"runAsUser\" must be a string" % where)
    ignore = _flag(action, "ignoreStepFailure", where)
    inp = action.get("input")
    if not isinstance(inp, dict):
        raise JobDocumentError("%s: the action needs an \"input\" object" % where)
    if kind == "runHandler":
        handler = inp.get("handler")
        check_handler_name(handler, where)
        return Action(name, "handler", handler=handler, path=_path(inp.get("path"), where),
                      args=_args(inp.get("args"), where), run_as_user=user,
                      ignore_failure=ignore)
    if kind == "runCommand":
        command = inp.get("command")
        if not isinstance(command, str):
            raise JobDocumentError("%s: \"input.command\" must be a string" % where)
        argv = split_command(command)
        if not argv or not argv[0]:
            raise JobDocumentError("%s: \"input.command\" names no program" % where)
        if "\0" in command:
            raise JobDocumentError("%s: \"input.command\" holds a NUL character" % where)
        return Action(name, "command", argv=argv, run_as_user=user, ignore_failure=ignore)
    raise JobDocumentError("%s: unknown action type %r (runHandler or runCommand)"
                           % (where, kind))


def _old_action(document):
    operation = document.get("operation")
    check_handler_name(operation, "operation")
    allow = document.get("allowStdErr")
    if allow is not None and (isinstance(allow, bool) or not isinstance(allow, int) or allow < 0):
        raise JobDocumentError("\"allowStdErr\" must be a whole number of lines")
    return Action(operation, "handler", handler=operation,
                  path=_path(document.get("path"), "operation"),
                  args=_args(document.get("args"), "operation"), allow_stderr=allow,
                  user_argument=False)


def check_handler_name(name, where="handler"):
    """A handler is a plain file name: no path separator, no leading dot, no NUL."""
    if not isinstance(name, str) or not name:
        raise JobDocumentError("%s: the handler name must be a non-empty string" % where)
    if "/" in name or name.startswith(".") or "\0" in name:
        raise JobDocumentError("%s: handler name %r is not a plain file name" % (where, name))


def _path(path, where):
    if path is None or path == DEFAULT_PATH:
        return ""
    if not isinstance(path, str) or "\0" in path:
        raise JobDocumentError("%s: \"path\" must be a string" % where)
    return path


def _args(args, where):
    if args is None:
        return []
    if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
        raise JobDocumentError("%s: \"args\" must be a list of strings" % where)
    if any("\0" in a for a in args):
        raise JobDocumentError("%s: an argument holds a NUL character" % where)
    return list(args)


def _flag(obj, key, where):
    value = obj.get(key, False)
    if value is None:
        return False
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise JobDocumentError("%s: %r must be true or false (a boolean or \"true\"/\"false\")"
                           % (where, key))


def _timeout(config):
    if config is None:
        return None
    minutes = config.get("inProgressTimeoutInMinutes") if isinstance(config, dict) else None
    if isinstance(minutes, bool) or not isinstance(minutes, (int, float)) or minutes <= 0:
        raise JobDocumentError("\"timeoutConfig\" needs a positive \"inProgressTimeoutInMinutes\"")
    return minutes * 60.0


def _no_placeholders(value):
    # AWS fills in a template's ${aws:iot:parameter:...} when the job is
    # created; one left over means the document was never meant to run as it is.
    if isinstance(value, str):
        if PLACEHOLDER in value:
            raise JobDocumentError("unsubstituted template parameter in %r" % value[:100])
    elif isinstance(value, dict):
        for v in value.values():
            _no_placeholders(v)
    elif isinstance(value, list):
        for v in value:
            _no_placeholders(v)


def split_command(text):
    """runCommand's argv: split at commas, `\\,` being a literal comma."""
    argv, current, i = [], [], 0
    while i < len(text):
        c = text[i]
        if c == "\\" and text[i + 1:i + 2] == ",":
            current.append(",")
            i += 2
            continue
        if c == ",":
            argv.append("".join(current))
            current = []
        else:
            current.append(c)
        i += 1
    argv.append("".join(current))
    return argv


def path_in_dirs(path, dirs):
    """The directory PATH names if it is one of DIRS or below one (textually), else None.

    "" means the first of DIRS. A relative path is refused: it would depend
    on a working directory the cloud does not know.
    """
    if path == "":
        return dirs[0] if dirs else None
    if not posixpath.isabs(path):
        return None
    norm = posixpath.normpath(path)
    for d in dirs:
        base = posixpath.normpath(d)
        if norm == base or norm.startswith(base.rstrip("/") + "/"):
            return norm
    return None


# ---- statusDetails ---------------------------------------------------------

def clean_value(text, limit=DETAIL_VALUE_LIMIT):
    """TEXT as a statusDetails value: no control or other \\p{C} characters
    (a line break becomes " | "), at most LIMIT characters, the end kept
    (that is where a failing program says why). "" when nothing is left."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    text = text.replace("\r\n", "\n").strip()
    out = []
    for c in text:
        if c == "\n":
            out.append(" | ")
        elif unicodedata.category(c)[0] == "C":
            out.append(" ")
        else:
            out.append(c)
    value = "".join(out).strip()
    if len(value) > limit:
        value = "..." + value[-(limit - 3):]
    return value


def status_details(pairs):
    """A statusDetails map AWS accepts from PAIRS (a dict, or (key, value)s):
    values made strings and cleaned, empty ones and bad keys left out, at
    most DETAIL_PAIRS_LIMIT pairs. Returns (details, names of dropped keys)."""
    items = pairs.items() if isinstance(pairs, dict) else pairs
    details, dropped = {}, []
    for key, value in items:
        if not isinstance(key, str) or not DETAIL_KEY.fullmatch(key):
            dropped.append(str(key))
            continue
        if isinstance(value, bool):
            value = "true" if value else "false"
        elif isinstance(value, (int, float)):
            value = str(value)
        elif not isinstance(value, (str, bytes)):
            value = json.dumps(value, separators=(",", ":"), sort_keys=True)
        value = clean_value(value)
        if not value:
            continue
        if len(details) >= DETAIL_PAIRS_LIMIT and key not in details:
            dropped.append(key)
            continue
        details[key] = value
    return details, dropped
