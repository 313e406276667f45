"""--defender: a Device Defender metrics report every interval, and its answer.

Every interval (default 300 s, never more often: AWS refuses reports sent
more often than every 5 minutes) this part reads /proc/net, runs the
`--defender-metric` programs (argv, never a shell, each with a timeout),
reads the `--defender-metrics-dir` files, has lib/defenderreport.py build
the report and publishes it to `$aws/things/THING/defender/metrics/json`.
It listens on that topic's `/accepted` and `/rejected` and logs a rejection
with its reason. A bad custom metric is one log line and is left out; the
report still goes. The first report goes out once the connection is first
up; a report that falls due while the connection is down goes out when it
is back. Imported only when --defender is given.
"""

import fcntl
import functools
import json
import logging
import os
import socket
import stat
import struct
import time

from . import children
from . import defenderreport as report
from .awslimits import PAYLOAD_LIMIT

log = logging.getLogger("chariotd")

MIN_INTERVAL = 300
METRIC_TIMEOUT = 10
PROC_NET = "/proc/net"
SIOCGIFADDR = 0x8915


def start(daemon):
    return Defender(daemon)


class Defender:
    def __init__(self, daemon):
        opts = daemon.options
        self.thing, interval = opts.defender
        if interval < MIN_INTERVAL:
            log.warning("--defender: %gs is more often than AWS accepts reports (at most one "
                        "every %ds); reporting every %ds", interval, MIN_INTERVAL, MIN_INTERVAL)
            interval = MIN_INTERVAL
        self.interval = interval
        self.topic = "$aws/things/%s/defender/metrics/json" % self.thing
        self._loop = daemon.loop
        self._connection = daemon.connection
        self._publisher = daemon.publisher
        self._status_changed = daemon.status_changed
        self._programs = opts.defender_metric  # [(name, argv)]
        self._directory = opts.defender_metrics_dir
        self._baseline = self._network_totals()
        self._due = True
        self._stopped = False
        self._timer = None
        self._custom = None  # metrics gathered for the report being made
        self._waiting = 0
        self._last_id = 0
        self._answers_logged = 0
        self.last = {}  # for the status file
        self._connection.subscribe(self.topic + "/accepted", self._accepted)
        self._connection.subscribe(self.topic + "/rejected", self._rejected)
        self._connection.on_up(self._up)
        log.info("defender: reporting metrics for %s every %gs", self.thing, self.interval)

    def stop(self):
        self._stopped = True
        if self._timer is not None:
            self._timer.cancel()

    def status(self):
        return dict(self.last, thing=self.thing, interval=self.interval)

    # -- when ---------------------------------------------------------------------

    def _up(self):
        if self._due:
            self._gather()

    def _fall_due(self):
        self._timer = None
        self._due = True
        if self._connection.connected:
            self._gather()

    # -- gathering -----------------------------------------------------------------

    def _gather(self):
        if self._stopped or self._custom is not None:
            return
        self._due = False
        self._timer = self._loop.call_later(self.interval, self._fall_due)
        self._custom = {}
        self._waiting = len(self._programs)
        for name, argv in self._programs:
            children.run(self._loop, argv, functools.partial(self._program_done, name),
                         timeout=METRIC_TIMEOUT, shell=False)
        if not self._programs:
            self._send()

    def _program_done(self, name, result):
        if not result.ok:
            log.warning("defender metric %s: the command %s; left out of the report", name,
                        result.describe())
        else:
            _add(self._custom, name, result.stdout, "the command's output")
        self._waiting -= 1
        if self._waiting == 0:
            self._send()

    def _read_directory(self, custom):
        try:
            names = sorted(os.listdir(self._directory))
        except OSError as e:
            log.warning("defender metrics directory %s: %s", self._directory, e.strerror)
            return
        for name in names:
            if name.startswith("."):
                continue  # a writer's temporary file
            if not report.valid_metric_name(name):
                log.warning("defender metrics directory %s: %r is not a custom metric name; "
                            "left out of the report", self._directory, name)
                continue
            if name in custom:
                log.warning("defender metric %s: given by a --defender-metric command too; "
                            "the file is ignored", name)
                continue
            path = os.path.join(self._directory, name)
            try:
                fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
            except OSError as e:
                log.warning("defender metric %s: cannot open %s: %s; left out of the report",
                            name, path, e.strerror)
                continue
            try:
                if not stat.S_ISREG(os.fstat(fd).st_mode):
                    log.warning("defender metric %s: %s is not a regular file; left out of "
                                "the report", name, path)
                    continue
                data = os.read(fd, report.CUSTOM_VALUE_BYTES + 1)
            finally:
                os.close(fd)
            _add(custom, name, data, path)

    # -- sending -------------------------------------------------------------------

    def _send(self):
        custom, self._custom = self._custom, None
        if self._directory:
            self._read_directory(custom)
        if self._stopped:
            return
        report_id = max(int(time.time()), self._last_id + 1)  # AWS: increasing; epoch advised
        self._last_id = report_id
        totals = self._network_totals()
        stats = report.network_stats(totals, self._baseline)
        self._baseline = totals
        doc = report.build_report(report_id, _read("tcp") + _read("tcp6"),
                                  _read("udp") + _read("udp6"), _interfaces(), stats, custom)
        payload = _encode(doc)
        while len(payload) > PAYLOAD_LIMIT and custom:
            biggest = max(custom, key=lambda n: len(json.dumps(custom[n])))
            log.warning("defender metric %s: the report is over AWS's %d byte limit; left out",
                        biggest, PAYLOAD_LIMIT)
            del custom[biggest]
            payload = _encode(doc)
        self.last = {"report_id": report_id, "answer": None,
                     "sent": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        self._status_changed()
        self._publisher.publish(self.topic, payload, 1,
                                functools.partial(self._published, report_id))

    def _published(self, report_id, ok):
        if not ok:
            log.warning("defender: report %d could not be published", report_id)

    def _network_totals(self):
        return report.network_totals(report.parse_net_dev(_read("dev")))

    # -- answers ---------------------------------------------------------------------

    def _answer(self, payload):
        try:
            msg = json.loads(payload)
        except (ValueError, RecursionError):
            msg = None
        return msg if isinstance(msg, dict) else {}

    def _accepted(self, _topic, payload):
        msg = self._answer(payload)
        report_id = msg.get("reportId")
        if report_id == self.last.get("report_id"):
            self.last["answer"] = "accepted"
            self._status_changed()
        if self._answers_logged == 0:  # one line shows it works; not one every 5 minutes
            self._answers_logged += 1
            log.info("defender: report %s accepted", report_id)

    def _rejected(self, _topic, payload):
        msg = self._answer(payload)
        details = msg.get("statusDetails") if isinstance(msg.get("statusDetails"), dict) else {}
        reason = "%s: %s" % (details.get("ErrorCode", "no error code"),
                             details.get("ErrorMessage", "no message"))
        log.error("defender: report %s rejected: %s", msg.get("reportId"), reason)
        if msg.get("reportId") == self.last.get("report_id"):
            self.last["answer"] = "rejected: " + reason
            self._status_changed()


def _add(custom, name, text, what):
    try:
        custom[name] = report.custom_value(text)
    except report.BadMetric as e:
        log.warning("defender metric %s: %s is %s; left out of the report", name, what,
                    _lower_first(str(e)))


def _encode(doc):
    return json.dumps(doc, separators=(",", ":")).encode()


def _lower_first(text):
    return text[:1].lower() + text[1:]


def _read(name):
    """The text of /proc/net/NAME, '' if this kernel has none (no IPv6, say)."""
    try:
        with open(os.path.join(PROC_NET, name)) as f:
            return f.read()
    except OSError:
        return ""


def _interfaces():
    """{local address: interface name}: IPv4 from SIOCGIFADDR, IPv6 from if_inet6."""
    found = report.parse_if_inet6(_read("if_inet6"))
    try:
        names = socket.if_nameindex()
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    except OSError:
        return found
    with sock:
        for _index, name in names:
            try:
                data = fcntl.ioctl(sock.fileno(), SIOCGIFADDR,
                                   struct.pack("256s", name.encode()[:15]))
            except OSError:
                continue  # no IPv4 address
            found[socket.inet_ntoa(data[20:24])] = name
    return found
