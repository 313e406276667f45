"""AWS IoT Device Defender's device-side report intake, with no MQTT in it.

`DefenderService.handle` takes a message on `$aws/things/THING/defender/
metrics/json`, validates it against the client-side metrics document
(header with report_id and version; metrics with listening_tcp_ports,
listening_udp_ports, network_stats and tcp_connections.established_
connections, and custom_metrics, each with the fields and types AWS
defines; unknown keys refused), refuses a report that comes sooner than
the minimum interval (300 s, as AWS) after the thing's last accepted one
or whose report_id does not increase, and answers on `/accepted` or
`/rejected` as a list of (topic, payload dict). Every report received is
kept, with its verdict, for tests (`last_report`, `reports`).

It does not take CBOR reports, evaluate security profiles or check custom
metrics against defined metric names and types.
"""

import ipaddress
import json
import re

MIN_INTERVAL = 300
VERSION = re.compile(r"^\d+\.\d+$")
METRIC_NAME = re.compile(r"^[a-zA-Z0-9:_-]{1,128}$")
_TOPIC = re.compile(r"^\$aws/things/([^/]+)/defender/metrics/json$")


class Invalid(Exception):
    """A report AWS would refuse: CODE and MESSAGE for statusDetails."""

    def __init__(self, code, message):
        super().__init__("%s: %s" % (code, message))
        self.code = code
        self.message = message


class DefenderService:
    def __init__(self, clock, min_interval=MIN_INTERVAL):
        self.clock = clock
        self.min_interval = min_interval
        self._reports = {}  # thing -> [(report or raw payload, verdict)]
        self._last_accepted = {}  # thing -> (time, report_id)

    def handle(self, topic, payload):
        m = _TOPIC.match(topic)
        if m is None:
            return None
        thing = m.group(1)
        now = self.clock()
        report_id = None
        try:
            try:
                doc = json.loads(payload)
            except ValueError:
                doc = payload
                raise Invalid("Malformed", "the report is not valid JSON") from None
            if isinstance(doc, dict) and isinstance(doc.get("header"), dict):
                report_id = doc["header"].get("report_id")
            check_report(doc)
            last = self._last_accepted.get(thing)
            if last is not None:
                if now - last[0] < self.min_interval:
                    raise Invalid("Throttled", "a report came %.0f s after the last one; at "
                                  "most one every %d s is accepted"
                                  % (now - last[0], self.min_interval))
                if report_id <= last[1]:
                    raise Invalid("InvalidPayload", "report_id %d is not greater than the "
                                  "last one, %d" % (report_id, last[1]))
        except Invalid as e:
            self._reports.setdefault(thing, []).append((doc, "rejected: " + str(e)))
            return [(topic + "/rejected",
                     {"thingName": thing, "reportId": report_id, "status": "REJECTED",
                      "statusDetails": {"ErrorCode": e.code, "ErrorMessage": e.message},
                      "timestamp": int(now * 1000)})]
        self._last_accepted[thing] = (now, report_id)
        self._reports.setdefault(thing, []).append((doc, "accepted"))
        return [(topic + "/accepted", {"thingName": thing, "reportId": report_id,
                                       "status": "ACCEPTED", "timestamp": int(now * 1000)})]

    def reports(self, thing):
        """Every report THING sent, oldest first, as (document, verdict)."""
        return list(self._reports.get(thing, []))

    def last_report(self, thing):
        """(document, verdict) of THING's latest report, or None."""
        found = self._reports.get(thing)
        return found[-1] if found else None


def _fail(where, what):
    raise Invalid("InvalidPayload", "%s: %s" % (where, what))


def _object(value, where, required=(), optional=()):
    if not isinstance(value, dict):
        _fail(where, "not an object")
    for key in required:
        if key not in value:
            _fail(where, "missing %s" % key)
    for key in value:
        if key not in required and key not in optional:
            _fail(where, "unknown field %s" % key)
    return value


def _count(value, where, minimum=0, maximum=None):
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum or \
            (maximum is not None and value > maximum):
        _fail(where, "%s is not a whole number in range" % json.dumps(value)[:40])


def _string(value, where):
    if not isinstance(value, str) or not value:
        _fail(where, "not a non-empty string")


def _list(value, where):
    if not isinstance(value, list):
        _fail(where, "not a list")
    return value


def check_report(doc):
    """Raise Invalid for anything AWS's metrics document does not allow."""
    _object(doc, "report", ("header", "metrics"), ("custom_metrics",))
    header = _object(doc["header"], "header", ("report_id", "version"))
    _count(header["report_id"], "header.report_id")
    if not isinstance(header["version"], str) or not VERSION.match(header["version"]):
        _fail("header.version", "not major.minor")
    metrics = _object(doc["metrics"], "metrics", (), (
        "listening_tcp_ports", "listening_udp_ports", "network_stats", "tcp_connections"))
    for name in ("listening_tcp_ports", "listening_udp_ports"):
        if name in metrics:
            _ports(metrics[name], "metrics." + name)
    if "network_stats" in metrics:
        stats = _object(metrics["network_stats"], "metrics.network_stats", (),
                        ("bytes_in", "bytes_out", "packets_in", "packets_out"))
        for key, value in stats.items():
            _count(value, "metrics.network_stats." + key)
    if "tcp_connections" in metrics:
        tcp = _object(metrics["tcp_connections"], "metrics.tcp_connections", (),
                      ("established_connections",))
        if "established_connections" in tcp:
            _connections(tcp["established_connections"],
                         "metrics.tcp_connections.established_connections")
    if "custom_metrics" in doc:
        _custom(doc["custom_metrics"])


def _ports(value, where):
    block = _object(value, where, (), ("ports", "total"))
    if "total" in block:
        _count(block["total"], where + ".total")
    for i, entry in enumerate(_list(block.get("ports", []), where + ".ports")):
        at = "%s.ports[%d]" % (where, i)
        _object(entry, at, ("port",), ("interface",))
        _count(entry["port"], at + ".port", 1, 65535)
        if "interface" in entry:
            _string(entry["interface"], at + ".interface")


def _connections(value, where):
    block = _object(value, where, (), ("connections", "total"))
    if "total" in block:
        _count(block["total"], where + ".total")
    for i, entry in enumerate(_list(block.get("connections", []), where + ".connections")):
        at = "%s.connections[%d]" % (where, i)
        _object(entry, at, ("remote_addr",), ("local_port", "local_interface"))
        _address(entry["remote_addr"], at + ".remote_addr")
        if "local_port" in entry:
            _count(entry["local_port"], at + ".local_port", 0, 65535)
        if "local_interface" in entry:
            _string(entry["local_interface"], at + ".local_interface")


def _address(value, where):
    """ip:port, an IPv6 address in brackets."""
    if not isinstance(value, str):
        _fail(where, "not a string")
    host, sep, port = value.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        ipaddress.ip_address(host)
        ok = sep and port.isdigit() and int(port) <= 65535
    except ValueError:
        ok = False
    if not ok:
        _fail(where, "%r is not ip:port" % value[:60])


def _custom(value):
    block = _object(value, "custom_metrics", (), tuple(value) if isinstance(value, dict) else ())
    for name, entries in block.items():
        at = "custom_metrics." + name
        if not METRIC_NAME.match(name) or name.startswith("aws:"):
            _fail(at, "not a custom metric name")
        if not isinstance(entries, list) or len(entries) != 1:
            _fail(at, "must be a list of one value")  # "number" too: [{"number": 5}]
        entry = entries[0]
        if not isinstance(entry, dict) or len(entry) != 1:
            _fail(at, "must hold one of number, number_list, string_list, ip_list")
        kind, v = next(iter(entry.items()))
        if kind == "number":
            _number(v, at)
        elif kind == "number_list":
            for n in _list(v, at):
                _number(n, at)
        elif kind in ("string_list", "ip_list"):
            for s in _list(v, at):
                _string(s, at)
                if kind == "ip_list":
                    try:
                        ipaddress.ip_network(s, strict=False)
                    except ValueError:
                        _fail(at, "%r is not an IP address" % s[:60])
        else:
            _fail(at, "unknown kind %s" % kind)


def _number(v, where):
    if isinstance(v, bool) or not isinstance(v, (int, float)) or v != v or \
            v in (float("inf"), float("-inf")):
        _fail(where, "%s is not a number" % json.dumps(v)[:40])
