"""Command line: `python3 -m emulator COMMAND ...` (run from the repository root).

`broker` makes a CA, server and device certificates and runs the
configured mosquitto in the foreground; `serve` runs the emulator against a
broker until SIGTERM/SIGINT; the app commands (desired, reported, get,
delete, publish, tunnel, job, jobs, ping) ask a running `serve` to act through the
broker's control topics; `watch` prints messages from the broker. Exit
status 0 on success, 1 with a one-line error otherwise. This module only
parses arguments and prints; the work is done in emulator.cloud.
"""

import argparse
import json
import logging
import os
import shutil
import signal
import sys
import threading
import time

from . import cbor, provisioning
from .broker import Broker, BrokerError
from .cloud import Emulator, EmulatorError, control_request, new_client
from .pki import Pki
from .provisioning import TemplateError

DEFAULT_PORT = int(os.environ.get("EMULATOR_PORT", "1883"))


class UsageError(Exception):
    """Bad command-line arguments."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise UsageError(message)


def main(argv=None):
    try:
        args = _parser().parse_args(argv)
        return args.run(args) or 0
    except (UsageError, EmulatorError, BrokerError, TemplateError, OSError, ValueError) as e:
        print("emulator: error: %s" % _one_line(e), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 1


def _one_line(error):
    return " ".join(str(error).split()) or type(error).__name__


# ---- argument parsing ------------------------------------------------------

def _parser():
    parser = _Parser(prog="python3 -m emulator",
                     description="Local AWS IoT Core emulator (see emulator/README.md).")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    commands.required = True

    broker = commands.add_parser("broker", help="make certificates and run mosquitto")
    broker.add_argument("--dir", required=True, help="directory for certificates and config")
    broker.add_argument("--tls-port", type=int, default=8883)
    broker.add_argument("--plain-port", type=int, default=1883)
    broker.add_argument("--device", action="append", metavar="ID",
                        help="device certificate to put in DIR/certstore (default device-1)")
    broker.set_defaults(run=run_broker)

    serve = commands.add_parser("serve", help="run the emulator against a broker")
    _connection(serve)
    serve.add_argument("--ca-dir", help="CA directory (emulator.pki) for provisioning")
    serve.add_argument("--templates", help="provisioning templates file (JSON)")
    serve.add_argument("--quiet", action="store_true", help="log warnings only")
    serve.add_argument("--job-minute", type=float, default=60.0, metavar="SECONDS",
                       help="length of a minute of the job timers (default 60; short for tests)")
    serve.set_defaults(run=run_serve)

    _app(commands, "desired", "set desired state", "THING[/SHADOW]", "JSON")
    _app(commands, "reported", "set reported state", "THING[/SHADOW]", "JSON")
    _app(commands, "get", "print a shadow document", "THING[/SHADOW]")
    _app(commands, "delete", "delete a shadow", "THING[/SHADOW]")
    publish = _app(commands, "publish", "publish a message", "TOPIC", "PAYLOAD")
    publish.add_argument("--qos", type=int, choices=(0, 1), default=1)
    tunnel = _app(commands, "tunnel", "open a secure tunnel", "THING", "SERVICES")
    tunnel.add_argument("--region", default="us-east-1")
    _app(commands, "job", "queue a job", "THING", "JOBID", "JSON")
    jobs = commands.add_parser("jobs", help="create, cancel or describe job executions")
    actions = jobs.add_subparsers(dest="action", metavar="ACTION")
    actions.required = True
    for action, help_text in (("create", "queue a job from a job document file"),
                              ("cancel", "cancel a pending job execution"),
                              ("describe", "print a job execution")):
        sub = actions.add_parser(action, help=help_text)
        _connection(sub)
        sub.add_argument("--timeout", type=float, default=5.0)
        sub.add_argument("--thing", required=True)
        sub.add_argument("--job-id", required=action != "create",
                         help="default for create: job-TIMESTAMP")
        if action == "create":
            sub.add_argument("--document", required=True, metavar="FILE",
                             help="job document (JSON); - reads stdin")
            sub.add_argument("--in-progress-timeout", type=int, metavar="MINUTES",
                             help="timeoutConfig.inProgressTimeoutInMinutes (1-10080)")
    jobs.set_defaults(run=run_jobs)
    _app(commands, "ping", "check that an emulator is serving")

    watch = commands.add_parser("watch", help="print messages (default filters # and $aws/#)")
    _connection(watch)
    watch.add_argument("filter", nargs="?", metavar="FILTER")
    watch.add_argument("--count", type=int, help="exit after COUNT messages")
    watch.set_defaults(run=run_watch)
    return parser


def _connection(parser):
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT,
                        help="broker's plain MQTT port (default $EMULATOR_PORT or 1883)")


def _app(commands, name, help_text, *positionals):
    parser = commands.add_parser(name, help=help_text)
    _connection(parser)
    parser.add_argument("--timeout", type=float, default=5.0)
    for positional in positionals:
        parser.add_argument(positional.lower().split("[")[0], metavar=positional)
    parser.set_defaults(run=run_app)
    return parser


# ---- app commands ----------------------------------------------------------

def run_app(args):
    operation, arguments = _APP_REQUESTS[args.command](args)
    result = control_request(operation, arguments, args.port, args.host, args.timeout)
    return _APP_OUTPUT.get(args.command, _print_json)(args, result)


def _shadow_args(args, **extra):
    thing, _, shadow = args.thing.partition("/")
    if not thing:
        raise UsageError("THING must not be empty")
    return dict(extra, thing=thing, shadow=shadow or None)


def _json_arg(text):
    try:
        value = json.loads(text)
    except ValueError as e:
        raise UsageError("invalid JSON argument %r: %s" % (text, e)) from None
    if not isinstance(value, dict):
        raise UsageError("the JSON argument must be an object, not %r" % text)
    return value


_APP_REQUESTS = {
    "desired": lambda a: ("desired", _shadow_args(a, desired=_json_arg(a.json))),
    "reported": lambda a: ("reported", _shadow_args(a, reported=_json_arg(a.json))),
    "get": lambda a: ("get", _shadow_args(a)),
    "delete": lambda a: ("delete", _shadow_args(a)),
    "publish": lambda a: ("publish", {"topic": a.topic, "payload": a.payload, "qos": a.qos}),
    "tunnel": lambda a: ("tunnel", {"thing": a.thing, "services": a.services.split(","),
                                    "region": a.region}),
    "job": lambda a: ("job", {"thing": a.thing, "job_id": a.jobid,
                              "document": _json_arg(a.json)}),
    "ping": lambda a: ("ping", {}),
}


def run_jobs(args):
    """`jobs create|cancel|describe`: CreateJob for one thing, CancelJobExecution,
    DescribeJobExecution."""
    arguments = {"thing": args.thing, "job_id": args.job_id}
    if args.action == "create":
        if args.document == "-":
            text = sys.stdin.read()
        else:
            with open(args.document) as f:
                text = f.read()
        arguments["document"] = _json_arg(text)
        arguments["job_id"] = args.job_id or "job-%d" % int(time.time() * 1000)
        if args.in_progress_timeout is not None:
            arguments["in_progress_timeout"] = args.in_progress_timeout
    operation = {"create": "job", "cancel": "cancel-job", "describe": "job-execution"}
    result = control_request(operation[args.action], arguments, args.port, args.host,
                             args.timeout)
    if args.action == "create":
        print(arguments["job_id"])
    elif args.action == "describe":
        if result is None:
            raise EmulatorError("no job %s on %s" % (args.job_id, args.thing))
        _print_json(args, result)
    return 0


def _print_json(args, result):
    if result is not None:
        print(json.dumps(result, indent=2, sort_keys=True))


def _print_shadow(args, result):
    if result is None:
        raise EmulatorError("no shadow exists for %s" % args.thing)
    _print_json(args, result)


def _print_deleted(args, result):
    if not result:
        raise EmulatorError("no shadow exists for %s" % args.thing)


_APP_OUTPUT = {
    "get": _print_shadow,
    "delete": _print_deleted,
    "tunnel": lambda args, token: print(token),
}


# ---- serve -----------------------------------------------------------------

def run_serve(args):
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO,
                        format="emulator: %(message)s", stream=sys.stderr)
    ca = Pki(args.ca_dir) if args.ca_dir else None
    emulator = Emulator(args.port, args.host, ca=ca, templates=args.templates,
                        job_minute=args.job_minute)
    stop = _stop_event()
    emulator.start(wait=False)
    print("emulator: serving on %s:%d (SIGTERM or Ctrl-C stops)" % (args.host, args.port),
          file=sys.stderr, flush=True)
    stop.wait()
    emulator.stop()
    return 0


def _stop_event():
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    return stop


# ---- watch -----------------------------------------------------------------

def run_watch(args):
    filters = [args.filter] if args.filter else ["#", "$aws/#"]
    stop = _stop_event()
    seen = [0]
    client = new_client("emulator-watch-%d" % os.getpid())

    def on_connect(client, userdata, flags, reason, *rest):
        client.subscribe([(f, 1) for f in filters])

    def on_subscribe(client, *rest):
        print("emulator: watching %s" % " ".join(filters), file=sys.stderr, flush=True)

    def on_message(client, userdata, msg):
        if args.count and seen[0] >= args.count:
            return  # arrived between the last counted message and the disconnect
        print("%s %s" % (msg.topic, _show(msg.topic, msg.payload)), flush=True)
        seen[0] += 1
        if args.count and seen[0] >= args.count:
            stop.set()

    client.on_connect, client.on_subscribe, client.on_message = on_connect, on_subscribe, on_message
    try:
        client.connect(args.host, args.port, keepalive=30)
    except OSError as e:
        raise EmulatorError("cannot reach the broker at %s:%d: %s" % (args.host, args.port, e)
                            ) from None
    client.loop_start()
    stop.wait()
    client.disconnect()
    client.loop_stop()
    return 0


def _show(topic, payload):
    """PAYLOAD as one line: compact JSON (CBOR decoded), else text, else hex."""
    try:
        if provisioning.encoding_of(topic) == "cbor":
            return json.dumps(cbor.loads(payload), separators=(",", ":"), default=repr)
        return json.dumps(json.loads(payload), separators=(",", ":"))
    except ValueError:
        pass
    try:
        return payload.decode("utf-8").replace("\n", "\\n")
    except UnicodeDecodeError:
        return "0x" + payload.hex()


# ---- broker ----------------------------------------------------------------

def run_broker(args):
    directory = os.path.abspath(args.dir)
    pki = Pki(os.path.join(directory, "pki"))
    server_cert, server_key = pki.issue("server", server=True)
    broker = Broker(os.path.join(directory, "broker"), pki.ca_cert, server_cert, server_key,
                    tls_port=args.tls_port, plain_port=args.plain_port)
    certstore = os.path.join(directory, "certstore")
    devices = args.device or ["device-1"]
    for device in devices:
        _add_to_certstore(certstore, device, *pki.issue(device))
    with open(os.path.join(certstore, "endpoint.txt"), "w") as f:
        f.write("localhost:%d\n" % broker.tls_port)
    stop = _stop_event()
    broker.start()
    _print_broker(broker, pki, certstore, devices, server_cert)
    while not stop.wait(0.5):
        if broker.proc.poll() is not None:
            raise BrokerError("mosquitto exited with status %s; see %s"
                              % (broker.proc.returncode, broker.log))
    broker.stop()
    return 0


def _add_to_certstore(certstore, device, cert, key):
    entry = os.path.join(certstore, device)
    os.makedirs(entry, mode=0o700, exist_ok=True)
    shutil.copy(cert, os.path.join(entry, device + "-certificate.pem.crt"))
    key_copy = os.path.join(entry, device + "-private.pem.key")
    shutil.copy(key, key_copy)
    os.chmod(key_copy, 0o600)


def _print_broker(broker, pki, certstore, devices, server_cert):
    lines = [
        "mosquitto running (pid %d); Ctrl-C or SIGTERM stops it" % broker.proc.pid,
        "plain MQTT (cloud side): 127.0.0.1:%d" % broker.plain_port,
        "TLS MQTT (device side):  127.0.0.1:%d (client certificate required)" % broker.tls_port,
        "CA certificate:          %s" % pki.ca_cert,
        "server certificate:      %s" % server_cert,
        "certstore:               %s (endpoint localhost:%d; %s)"
        % (certstore, broker.tls_port, ", ".join(devices)),
        "mosquitto config, log:   %s, %s" % (broker.conf, broker.log),
        "next: python3 -m emulator serve --port %d --ca-dir %s" % (broker.plain_port, pki.dir),
    ]
    print("\n".join(lines), flush=True)


if __name__ == "__main__":
    sys.exit(main())
