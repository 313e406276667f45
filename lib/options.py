"""The command line: parse, validate, and hand back one settled Options object.

Every option of docs/interface.md#command-line is parsed and checked
here, before anything connects, so a typo in a run script is a one-line
error and exit status 2 rather than a daemon that half-works. This module
does not act on any option.

The command line is read by lib/argvreader.py, as argparse would read it.
"""

import os
import re
import sys

from . import argvreader, awslimits
from .argvreader import FLAG, MANY, VALUE, OptionError, Spec

VERSION = "0.1.0"
ORDERS = ("lexical", "reverse-lexical", "newest-first", "oldest-first")
# AWS IoT Core's names (docs/aws-facts.md#device-shadow): they are parts of
# topics, so a '#', '+' or control character would make filters of them.
THING_NAME = re.compile(r"[a-zA-Z0-9:_-]{1,128}")
SHADOW_NAME = re.compile(r"[$a-zA-Z0-9:_-]{1,64}")
# Options naming a file or directory, whose empty value would quietly mean "not given".
PATH_OPTIONS = ("fleetprov", "commands", "status_file", "tunnelproxy", "tunnelcadir",
                "defender_metrics_dir")

# Per-directory message settings: name, converter, default.
MESSAGE_SETTINGS = (
    ("concurrency", "slots", 10),
    ("retries", "count", 2),
    ("keep-failed", "count", 100),
    ("jam-timeout", "seconds", 300.0),
    ("order", "order", "lexical"),
    ("topic-prefix", "text", ""),
    ("topic-suffix", "text", ""),
)
LETTERHEAD_SETTINGS = (("letterhead-file", "path"), ("letterhead-generator", "text"))

# MQTT's keepalive is 16 bits; AWS IoT Core holds a connection idle for at
# most 1200 s (1.5 x 1200 without a ping drops it), and raises less than 30
# to 30, so anything above 1200 means a device that is cut off every time.
KEEPALIVE_MAX = 1200

# AWS IoT Core's limits, a little under (inbound publishes count too), so a
# backlog is never silently dropped.
DEFAULT_PUBLISH_RATE = 97
DEFAULT_PUBLISH_BYTES_RATE = 500 * 1024




class MessageDir:
    """One --messages directory and its own settings."""

    def __init__(self, path):
        self.path = path
        self.letterhead_file = None
        self.letterhead_generator = None


def _specs():
    """Every option, in --help's order."""
    specs = []

    def add(*names, kind=VALUE, metavar=None, default=None, help=None):
        specs.append(Spec(names, kind, metavar, default, help))

    add("-h", "--help", kind=FLAG, help="show this help and exit")
    add("--version", kind=FLAG, help="print the version and exit")
    add("--clientid", metavar="CID", help="MQTT client id (mandatory)")
    add("--cacert", metavar="PATH", help="root CA the broker is verified against (mandatory)")
    add("--certstore", metavar="DIR", help="certificate store (mandatory)")
    add("--fleetprov", metavar="FILE", help="fleet provisioning config")
    add("--services", metavar="THING:DIR", help="service definitions for THING's shadow", kind=MANY)
    add("--updates", metavar="THING:DIR", help="local shadow updates for THING", kind=MANY)
    add("--defaultshadow", metavar="THING:CMD", help="seeds a missing shadow", kind=MANY)
    add("--empty-array-as-delete-request", kind=FLAG, help="treat [] like DELETE")
    add("--messages", metavar="DIR", help="action directory of messages to publish", kind=MANY)
    for name, kind, default in MESSAGE_SETTINGS:
        add("--default-message-" + name, metavar=kind.upper(), help="default %s" % default)
        add("--message-" + name, metavar="DIR:" + kind.upper(), kind=MANY)
    for name, kind in LETTERHEAD_SETTINGS:
        add("--default-" + name, metavar=kind.upper())
        add("--" + name, metavar="DIR:" + kind.upper(), kind=MANY)
    add("--subscribe-write", metavar="TOPIC:PATH", kind=MANY)
    add("--subscribe-exec", metavar="TOPIC:CMD", kind=MANY)
    add("--commands", metavar="DIR", help="action directory of commands")
    add("--tunnelmappings", metavar="THING:SVC=PORT[,SVC=PORT]", kind=MANY)
    add("--tunnelproxy", metavar="PATH", default="localproxy")
    add("--tunnelcadir", metavar="DIR")
    add("--jobs", metavar="THING:DIR", help="AWS IoT Jobs for THING, handlers in DIR", kind=MANY)
    add("--jobs-allow-commands", kind=FLAG, help="let jobs run runCommand steps")
    add("--jobs-step-timeout", metavar="SEC", default="3600")
    add("--keepalive", metavar="SEC", default="1200")
    add("--last-will-topic", metavar="T")
    add("--last-will-payload", metavar="P")
    add("--publish-rate", metavar="N", default=str(DEFAULT_PUBLISH_RATE))
    add("--publish-bytes-rate", metavar="B", default=str(DEFAULT_PUBLISH_BYTES_RATE))
    add("--poll-interval", metavar="SEC", default="1")
    add("--log-timestamps", kind=FLAG)
    add("--defender", metavar="THING[:SECONDS]",
        help="Device Defender metrics report every SECONDS (default 300)")
    add("--defender-metric", metavar="NAME:CMD", help="custom metric: CMD's output", kind=MANY)
    add("--defender-metrics-dir", metavar="DIR", help="custom metrics: one file per metric")
    add("--status-file", metavar="PATH", help="keep a JSON status document at PATH")
    add("--status", metavar="PATH", help="print the status file PATH for a person and exit")
    return specs


def usage():
    return argvreader.format_help(_specs(), prog="chariotd",
                                  description="Owns the device's connection to AWS IoT Core.")


def parse(argv):
    """Return the settled options as attributes (named as the long options,
    dashes as underscores), or raise OptionError."""
    ns = argvreader.read(_specs(), argv)
    if ns.help or ns.version or ns.status:
        return ns
    for name in ("clientid", "cacert", "certstore"):
        if not getattr(ns, name):
            raise OptionError("--%s is mandatory" % name)
    _clientid(ns.clientid)
    for name in PATH_OPTIONS:
        if getattr(ns, name, None) == "":
            raise OptionError("--%s: empty value" % name.replace("_", "-"))
    if ns.last_will_topic and awslimits.topic_problem(ns.last_will_topic):
        raise OptionError("--last-will-topic: %r: %s" % (
            ns.last_will_topic, awslimits.topic_problem(ns.last_will_topic)))
    ns.keepalive = _keepalive(ns.keepalive)
    ns.publish_rate = _number("--publish-rate", ns.publish_rate)
    ns.publish_bytes_rate = _number("--publish-bytes-rate", ns.publish_bytes_rate)
    ns.poll_interval = _number("--poll-interval", ns.poll_interval, minimum=0.01)
    if bool(ns.last_will_topic) != bool(ns.last_will_payload is not None):
        raise OptionError("--last-will-topic and --last-will-payload go together")
    ns.services = [_thing_pair("--services", v) for v in ns.services]
    ns.updates = [_thing_pair("--updates", v) for v in ns.updates]
    ns.defaultshadow = dict(_thing_pair("--defaultshadow", v) for v in ns.defaultshadow)
    ns.subscribe_write = [_pair("--subscribe-write", v) for v in ns.subscribe_write]
    ns.subscribe_exec = [_pair("--subscribe-exec", v) for v in ns.subscribe_exec]
    ns.tunnelmappings = dict(_tunnel_mapping(v) for v in ns.tunnelmappings)
    ns.jobs = [_pair("--jobs", v) for v in ns.jobs]
    ns.jobs_step_timeout = _number("--jobs-step-timeout", ns.jobs_step_timeout, minimum=0.001)
    ns.messages = _message_dirs(ns)
    _directories(ns)
    _defender_options(ns)
    return ns


def _defender_options(ns):
    if ns.defender is None:
        if ns.defender_metric or ns.defender_metrics_dir:
            raise OptionError("--defender-metric and --defender-metrics-dir need --defender")
        return
    thing, sep, seconds = ns.defender.partition(":")
    if not THING_NAME.fullmatch(thing):
        raise OptionError("--defender: %r is not THING or THING:SECONDS" % ns.defender)
    ns.defender = (thing, _number("--defender", seconds, minimum=1) if sep else 300.0)
    if not ns.defender_metric:
        return
    # Imported only for a device with custom metrics.
    import shlex

    from .defenderreport import valid_metric_name

    metrics = []
    for spec in ns.defender_metric:
        name, command = _pair("--defender-metric", spec)
        if not valid_metric_name(name):
            raise OptionError("--defender-metric: %r is not a custom metric name (1-128 of "
                              "a-z A-Z 0-9 : _ -, not aws:...)" % name)
        try:
            argv = shlex.split(command)
        except ValueError as e:
            raise OptionError("--defender-metric: %s: %s" % (name, e)) from None
        if not argv:
            raise OptionError("--defender-metric: %s: empty command" % name)
        metrics.append((name, argv))
    ns.defender_metric = metrics


def _clientid(raw):
    try:
        size = len(raw.encode("utf-8"))
    except UnicodeEncodeError:  # bytes that are not UTF-8 reach us as lone surrogates
        raise OptionError("--clientid: %r is not UTF-8 text" % raw) from None
    problem = awslimits.character_problem(raw)
    if size > awslimits.CLIENTID_LIMIT:
        problem = "is %d bytes, over AWS IoT Core's %d" % (size, awslimits.CLIENTID_LIMIT)
    elif raw.startswith("$"):
        problem = "starts with '$', which AWS IoT Core keeps for ids it makes"
    if problem:
        raise OptionError("--clientid: %r %s" % (raw[:40], problem))


def _keepalive(raw):
    value = _number("--keepalive", raw, integer=True)
    if not 1 <= value <= KEEPALIVE_MAX:
        raise OptionError("--keepalive: %s is out of range: 1 to %d seconds (AWS IoT Core "
                          "takes at most %d, MQTT at most 65535)"
                          % (raw, KEEPALIVE_MAX, KEEPALIVE_MAX))
    return value


def _directories(ns):
    """Every option naming a directory: one that exists as something else (a
    file, /dev/null), or under a non-directory, is an error now, not a
    traceback later. A missing one is fine: action directories are created."""
    named = [("--messages", md.path) for md in ns.messages]
    named += [("--services", d) for _thing, d in ns.services]
    named += [("--updates", d) for _thing, d in ns.updates]
    if ns.commands:
        named.append(("--commands", ns.commands))
    for opt, path in named:
        existing = path
        while not os.path.lexists(existing):
            parent = os.path.dirname(existing.rstrip("/")) or "."
            if parent == existing:
                break
            existing = parent
        if not os.path.isdir(existing):
            where = "" if existing == path else "%s: " % path
            raise OptionError("%s: %s%s is not a directory" % (opt, where, existing))


def _message_dirs(ns):
    dirs = {}
    for path in ns.messages:
        if not path:
            raise OptionError("--messages: empty value")
        dirs.setdefault(_resolve(path), MessageDir(path))
    for name, kind, default in MESSAGE_SETTINGS:
        attr = name.replace("-", "_")
        opt = "--default-message-" + name
        raw = getattr(ns, "default_message_" + attr)
        value = default if raw is None else _convert(opt, kind, raw)
        for md in dirs.values():
            setattr(md, attr, value)
        for spec in getattr(ns, "message_" + attr):
            md = _dir_of("--message-" + name, spec, dirs)
            setattr(md, attr, _convert("--message-" + name, kind, _pair("--message-" + name,
                                                                          spec)[1]))
    for name, _kind in LETTERHEAD_SETTINGS:
        attr = name.replace("-", "_")
        default = getattr(ns, "default_" + attr)
        specific = [(_dir_of("--" + name, s, dirs), _pair("--" + name, s)[1])
                    for s in getattr(ns, attr)]
        for md in dirs.values():
            # A directory's own letterhead replaces the default one, of either kind.
            if default is not None:
                setattr(md, attr, default)
        for md, value in specific:
            md.letterhead_file = md.letterhead_generator = None
            setattr(md, attr, value)
    return list(dirs.values())


def _dir_of(opt, spec, dirs):
    path = _pair(opt, spec)[0]
    md = dirs.get(_resolve(path))
    if md is None:
        raise OptionError("%s: %s is not a --messages directory" % (opt, path))
    return md


def _resolve(path):
    return os.path.realpath(path)


def _convert(opt, kind, raw):
    if kind == "count":
        return _number(opt, raw, integer=True)
    if kind == "slots":  # none would send nothing, and look jammed
        return _number(opt, raw, integer=True, minimum=1)
    if kind == "seconds":
        return _number(opt, raw, minimum=0.001)
    if kind == "order" and raw not in ORDERS:
        raise OptionError("%s: unknown message order %r (one of %s)"
                          % (opt, raw, ", ".join(ORDERS)))
    return raw


def _number(opt, raw, integer=False, minimum=0):
    try:
        value = int(raw) if integer else float(raw)
    except ValueError:
        kind = "a whole number" if integer else "a number"
        raise OptionError("%s: %r is not %s" % (opt, raw, kind)) from None
    if not minimum <= value < float("inf"):
        raise OptionError("%s: %r is out of range" % (opt, raw))
    return value


def _pair(opt, value):
    a, sep, b = value.partition(":")
    if not sep or not a or not b:
        raise OptionError("%s: expected A:B, got %r" % (opt, value))
    return a, b


def _thing_pair(opt, value):
    thing, rest = _pair(opt, value)
    name, _, shadow = thing.partition("/")
    if not name or (thing.endswith("/")) or "/" in shadow:
        raise OptionError("%s: %r is not THING or THING/SHADOW" % (opt, thing))
    if not THING_NAME.fullmatch(name) or (shadow and not SHADOW_NAME.fullmatch(shadow)):
        raise OptionError("%s: %r is not a valid thing (1-128 of a-z A-Z 0-9 : _ -) or "
                          "shadow name (1-64 of those and $)" % (opt, thing))
    return thing, rest


def _tunnel_mapping(value):
    opt = "--tunnelmappings"
    thing, spec = _pair(opt, value)
    mapping = {}
    for item in spec.split(","):
        svc, sep, port = item.partition("=")
        if not sep or not svc or not port:
            raise OptionError("%s: expected SVC=PORT, got %r" % (opt, item))
        number = port.rpartition(":")[2]  # PORT or HOST:PORT, as localproxy takes it
        if not number.isdigit() or not 1 <= int(number) <= 65535:
            raise OptionError("%s: %s: port %r is not 1 to 65535" % (opt, svc, number))
        mapping[svc] = port
    return thing, mapping


def main_error(message):
    """Print the one-line error and return the exit status for it."""
    sys.stderr.write("chariotd: %s (try --help)\n" % message)
    return 2
