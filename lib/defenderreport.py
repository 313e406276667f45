"""Device Defender metrics reports, built from the text of /proc: no I/O here.

The caller reads `/proc/net/tcp`, `tcp6`, `udp`, `udp6` and `/proc/net/dev`
and hands their text in; this module turns it into AWS IoT Device Defender's
client-side metrics document (header, `listening_tcp_ports`,
`listening_udp_ports`, `tcp_connections.established_connections`,
`network_stats`) and checks custom metric values. Everything is a plain
function of its arguments, so fixtures of /proc text test it. The facts it
relies on are in the README's "Device Defender" section.
"""

import json
import math
import re
import sys

REPORT_VERSION = "1.0"
# /proc/net/tcp's hex socket states.
TCP_ESTABLISHED = "01"
TCP_LISTEN = "0A"
# chariotd's own caps: each list at most this long (its `total` still counts
# every entry), and a custom metric's value at most this many bytes as JSON,
# so a report stays far below AWS IoT Core's 128 KiB payload limit.
LIST_LIMIT = 256
CUSTOM_VALUE_BYTES = 4096
# AWS's custom metric names (CreateCustomMetric): 1-128 of these, not "aws:...".
_METRIC_NAME = re.compile(r"^[a-zA-Z0-9:_-]{1,128}$")
CUSTOM_KINDS = ("number", "number_list", "string_list", "ip_list")


class BadMetric(ValueError):
    """A custom metric value that cannot go into a report; the text says why."""


def valid_metric_name(name):
    return bool(_METRIC_NAME.match(name)) and not name.startswith("aws:")


# -- /proc/net/{tcp,tcp6,udp,udp6} ---------------------------------------------


def decode_address(text, little_endian=sys.byteorder == "little"):
    """'0100007F:1F90' -> ('127.0.0.1', 8080); 32 hex digits before ':' for IPv6."""
    addr, _, port = text.partition(":")
    raw = bytes.fromhex(addr)
    # The kernel prints each 32-bit word of the address in host byte order.
    words = raw
    if little_endian:
        words = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
    if len(words) == 4:
        ip = ".".join(str(b) for b in words)
    elif len(words) == 16:
        if words[:12] == b"\0" * 10 + b"\xff\xff":  # IPv4-mapped
            ip = ".".join(str(b) for b in words[12:])
        else:
            ip = _ipv6_text(words)
    else:
        raise ValueError("bad address %r" % text)
    return ip, int(port, 16)


def _ipv6_text(raw):
    groups = ["%x" % ((raw[i] << 8) | raw[i + 1]) for i in range(0, 16, 2)]
    # The longest run (2 or more) of zero groups becomes "::", as inet_ntop does.
    best, run_start, best_len = None, None, 1
    for i, g in enumerate(groups + ["x"]):
        if g == "0":
            if run_start is None:
                run_start = i
        elif run_start is not None:
            if i - run_start > best_len:
                best, best_len = run_start, i - run_start
            run_start = None
    if best is None:
        return ":".join(groups)
    return ":".join(groups[:best]) + "::" + ":".join(groups[best + best_len:])


def parse_sockets(text):
    """Each socket line of /proc/net/tcp-style text (several files' text may be
    joined) as (local_ip, local_port,
    remote_ip, remote_port, state); lines that do not parse are skipped."""
    sockets = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 4 or fields[0] == "sl":  # the header line
            continue
        try:
            local = decode_address(fields[1])
            remote = decode_address(fields[2])
        except ValueError:
            continue
        sockets.append((local[0], local[1], remote[0], remote[1], fields[3].upper()))
    return sockets


# -- /proc/net/dev ----------------------------------------------------------------


def parse_net_dev(text):
    """{interface: (bytes_in, packets_in, bytes_out, packets_out)} from /proc/net/dev."""
    counters = {}
    for line in text.splitlines()[2:]:
        name, sep, rest = line.partition(":")
        fields = rest.split()
        if not sep or len(fields) < 10:
            continue
        try:
            counters[name.strip()] = (int(fields[0]), int(fields[1]), int(fields[8]),
                                      int(fields[9]))
        except ValueError:
            continue
    return counters


def network_totals(counters, skip=("lo",)):
    """The four counters summed over every interface but loopback."""
    totals = [0, 0, 0, 0]
    for name, values in counters.items():
        if name not in skip:
            for i, v in enumerate(values):
                totals[i] += v
    return tuple(totals)


def network_stats(now, before):
    """AWS's network_stats: what the counters moved since before (never negative:
    a counter that went back, an interface that went away, counts from zero)."""
    delta = [n - b if n >= b else n for n, b in zip(now, before)]
    return {"bytes_in": delta[0], "packets_in": delta[1], "bytes_out": delta[2],
            "packets_out": delta[3]}


# -- the report -------------------------------------------------------------------


def _ports(sockets, interfaces):
    seen, ports = set(), []
    for ip, port in sockets:
        if port <= 0:
            continue
        entry = {"port": port}
        interface = interfaces.get(ip)
        if interface:
            entry["interface"] = interface
        key = (port, interface)
        if key not in seen:
            seen.add(key)
            ports.append(entry)
    ports.sort(key=lambda e: (e["port"], e.get("interface", "")))
    return {"ports": ports[:LIST_LIMIT], "total": len(ports)}


def listening_tcp(sockets, interfaces):
    return _ports([(s[0], s[1]) for s in sockets if s[4] == TCP_LISTEN], interfaces)


def listening_udp(sockets, interfaces):
    # A UDP socket waiting for anyone has no remote end (bound, not connected).
    return _ports([(s[0], s[1]) for s in sockets if s[3] == 0], interfaces)


def established(sockets, interfaces):
    connections = []
    for local_ip, local_port, remote_ip, remote_port, state in sockets:
        if state != TCP_ESTABLISHED:
            continue
        remote = ("[%s]:%d" if ":" in remote_ip else "%s:%d") % (remote_ip, remote_port)
        entry = {"remote_addr": remote, "local_port": local_port}
        interface = interfaces.get(local_ip)
        if interface:
            entry["local_interface"] = interface
        connections.append(entry)
    connections.sort(key=lambda e: (e["local_port"], e["remote_addr"]))
    return {"connections": connections[:LIST_LIMIT], "total": len(connections)}


def build_report(report_id, tcp_text, udp_text, interfaces, stats, custom=None):
    """The metrics document. tcp_text and udp_text: the text of /proc/net/tcp and
    tcp6 (udp and udp6) joined; interfaces: {local ip: interface name}; stats: what
    network_stats returned; custom: {name: [{kind: value}]} as custom_value made."""
    tcp = parse_sockets(tcp_text)
    udp = parse_sockets(udp_text)
    report = {
        "header": {"report_id": report_id, "version": REPORT_VERSION},
        "metrics": {
            "listening_tcp_ports": listening_tcp(tcp, interfaces),
            "listening_udp_ports": listening_udp(udp, interfaces),
            "network_stats": stats,
            "tcp_connections": {"established_connections": established(tcp, interfaces)},
        },
    }
    if custom:
        report["custom_metrics"] = custom
    return report


def parse_if_inet6(text):
    """{IPv6 address: interface} from /proc/net/if_inet6."""
    found = {}
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 6 and len(fields[0]) == 32:
            try:
                found[_ipv6_text(bytes.fromhex(fields[0]))] = fields[5]
            except ValueError:
                continue
    return found


# -- custom metrics ---------------------------------------------------------------


def custom_value(text):
    """A program's output or a file's text as a report entry, [{kind: value}]:
    a number -> number; a JSON list of numbers -> number_list, of strings ->
    string_list; {"ip_list": [...]} (or any one of the four kinds spelled out)
    as it says. BadMetric says why anything else is refused."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError:
            raise BadMetric("not UTF-8 text") from None
    text = text.strip()
    if not text:
        raise BadMetric("empty")
    if len(text.encode()) > CUSTOM_VALUE_BYTES:
        raise BadMetric("over %d bytes" % CUSTOM_VALUE_BYTES)
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        raise BadMetric("not a number, a JSON list or a JSON object: %r" % text[:60]) from None
    if isinstance(value, dict):
        if len(value) != 1 or next(iter(value)) not in CUSTOM_KINDS:
            raise BadMetric("an object must have one key, one of %s" % ", ".join(CUSTOM_KINDS))
        kind, value = next(iter(value.items()))
    elif isinstance(value, list):
        kind = "string_list" if value and all(isinstance(v, str) for v in value) \
            else "number_list"
    else:
        kind = "number"
    return [{kind: _checked(kind, value)}]


def _checked(kind, value):
    if kind == "number":
        if not _is_number(value):
            raise BadMetric("%s is not a number" % json.dumps(value)[:60])
        return value
    if not isinstance(value, list):
        raise BadMetric("%s needs a list" % kind)
    if len(value) > LIST_LIMIT:
        raise BadMetric("%d values, over %d" % (len(value), LIST_LIMIT))
    if kind == "number_list":
        for v in value:
            if not _is_number(v):
                raise BadMetric("number_list value %s is not a number" % json.dumps(v)[:60])
    else:
        for v in value:
            if not isinstance(v, str) or not v:
                raise BadMetric("%s value %s is not a non-empty string"
                                % (kind, json.dumps(v)[:60]))
        if kind == "ip_list":
            import ipaddress  # only a device with an ip_list metric pays for it

            for v in value:
                try:
                    ipaddress.ip_network(v, strict=False)
                except ValueError:
                    raise BadMetric("ip_list value %r is not an IP address" % v[:60]) from None
    return value


def _is_number(v):
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return False
    try:
        return math.isfinite(v)
    except OverflowError:  # an integer of hundreds of digits
        return False
