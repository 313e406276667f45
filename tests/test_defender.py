"""--defender: the report built from /proc text (fixtures), the emulator's
validation, and the real daemon's reports through mosquitto and the emulator:
the sockets a test opens, custom metrics good and bad, the interval clamp and
a rejected report."""

import json
import os
import socket
import stat

import pytest
from process import wait_until

from emulator.defender import DefenderService, Invalid, check_report
from lib import defenderreport as dr

THING = "Gw1"
TOPIC = "$aws/things/%s/defender/metrics/json" % THING

TCP = """\
  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 1 1
   1: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 2 1
   2: 0100007F:1F90 0100007F:D431 01 00000000:00000000 00:00000000 00000000  1000        0 3 1
   3: 0100007F:D431 0100007F:1F90 01 00000000:00000000 00:00000000 00000000  1000        0 4 1
   4: 0100007F:A000 0100007F:1F90 06 00000000:00000000 00:00000000 00000000  1000        0 5 1
"""
TCP6 = """\
  sl  local_address                         remote_address                        st tx_queue
   0: 00000000000000000000000001000000:0016 00000000000000000000000000000000:0000 0A 00000000
   1: 000080FE00000000FF00FC00010000FE:01BB 000080FE00000000FF00FC00020000FE:C350 01 00000000
"""
UDP = """\
  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout
  12: 00000000:0044 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 9 2 0 0
  13: 0100007F:0035 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 9 2 0 0
  14: 0100007F:E000 0100007F:0035 01 00000000:00000000 00:00000000 00000000     0        0 9 2 0 0
"""
DEV = """\
Inter-|   Receive                      |  Transmit
 face |bytes packets errs drop fifo frame compressed multicast|bytes packets errs drop ...
    lo: 5000 50 0 0 0 0 0 0 5000 50 0 0 0 0 0 0
  eth0: 1000000 2000 0 0 0 0 0 0 300000 1500 0 0 0 0 0 0
 wlan0: 20000 30 0 0 0 0 0 0 1000 10 0 0 0 0 0 0
"""
INTERFACES = {"127.0.0.1": "lo", "::1": "lo", "fe80::fc:ff:fe00:1": "eth0"}


# -- the pure helper --------------------------------------------------------------


def test_addresses_decode_ipv4_ipv6_and_mapped():
    assert dr.decode_address("0100007F:1F90", True) == ("127.0.0.1", 8080)
    assert dr.decode_address("7F000001:1F90", False) == ("127.0.0.1", 8080)
    assert dr.decode_address("00000000000000000000000001000000:0016", True) == ("::1", 22)
    assert dr.decode_address("0000000000000000FFFF00000100007F:0050", True) == \
        ("127.0.0.1", 80)
    assert dr.decode_address("000080FE00000000FF00FC00010000FE:01BB", True) == \
        ("fe80::fc:ff:fe00:1", 443)


def test_report_from_proc_fixtures():
    before = dr.network_totals(dr.parse_net_dev(DEV))
    after = tuple(v + 10 for v in before)
    report = dr.build_report(7, TCP + TCP6, UDP, INTERFACES, dr.network_stats(after, before))
    assert report["header"] == {"report_id": 7, "version": "1.0"}
    m = report["metrics"]
    assert m["listening_tcp_ports"] == {"ports": [{"port": 22}, {"port": 22, "interface": "lo"},
                                                  {"port": 8080, "interface": "lo"}], "total": 3}
    assert m["listening_udp_ports"] == {"ports": [{"port": 53, "interface": "lo"}, {"port": 68}],
                                        "total": 2}
    assert m["tcp_connections"]["established_connections"] == {"connections": [
        {"remote_addr": "[fe80::fc:ff:fe00:2]:50000", "local_port": 443,
         "local_interface": "eth0"},
        {"remote_addr": "127.0.0.1:54321", "local_port": 8080, "local_interface": "lo"},
        {"remote_addr": "127.0.0.1:8080", "local_port": 54321, "local_interface": "lo"},
    ], "total": 3}
    assert m["network_stats"] == {"bytes_in": 10, "packets_in": 10, "bytes_out": 10,
                                  "packets_out": 10}
    check_report(report)  # what the emulator takes as AWS's schema


def test_network_totals_skip_loopback_and_deltas_never_go_negative():
    assert dr.network_totals(dr.parse_net_dev(DEV)) == (1020000, 2030, 301000, 1510)
    assert dr.network_stats((5, 5, 100, 5), (10, 1, 50, 5)) == \
        {"bytes_in": 5, "packets_in": 4, "bytes_out": 50, "packets_out": 0}


def test_lists_are_capped_but_total_counts_all():
    lines = ["  sl  local_address rem_address   st"]
    lines += ["%4d: 0100007F:%04X 00000000:0000 0A" % (i, 1000 + i) for i in range(300)]
    ports = dr.build_report(1, "\n".join(lines), "", {}, {})["metrics"]["listening_tcp_ports"]
    assert len(ports["ports"]) == dr.LIST_LIMIT and ports["total"] == 300


@pytest.mark.parametrize("text, entry", [
    ("42\n", {"number": 42}),
    ("-1.5", {"number": -1.5}),
    ("[1, 2, 3]", {"number_list": [1, 2, 3]}),
    ('["a", "b"]', {"string_list": ["a", "b"]}),
    ('{"ip_list": ["10.0.0.1", "2001:db8::1", "192.168.0.0/24"]}',
     {"ip_list": ["10.0.0.1", "2001:db8::1", "192.168.0.0/24"]}),
    ('{"string_list": ["x"]}', {"string_list": ["x"]}),
])
def test_custom_values(text, entry):
    assert dr.custom_value(text) == [entry]


@pytest.mark.parametrize("text", ["", "hello", "true", "1e400", "NaN", "[1, \"a\"]", "[true]",
                                  '{"ip_list": ["999.1.1.1"]}', '{"number": 1, "x": 2}',
                                  '{"colour": 1}', '[""]', b"\xff", "9" * 5000])
def test_bad_custom_values(text):
    with pytest.raises(dr.BadMetric):
        dr.custom_value(text)


def test_metric_names():
    assert dr.valid_metric_name("battery:level_1-a")
    assert not dr.valid_metric_name("aws:all-bytes-out")
    assert not dr.valid_metric_name("with space")
    assert not dr.valid_metric_name("x" * 129)


# -- the emulator's validation ------------------------------------------------------


def _report(report_id=1, **extra):
    doc = {"header": {"report_id": report_id, "version": "1.0"}, "metrics": {}}
    doc.update(extra)
    return json.dumps(doc)


def test_emulator_accepts_then_throttles_within_the_interval():
    now = [1000.0]
    svc = DefenderService(lambda: now[0])
    (topic, answer), = svc.handle(TOPIC, _report(1))
    assert topic == TOPIC + "/accepted" and answer["status"] == "ACCEPTED"
    now[0] += 10
    (topic, answer), = svc.handle(TOPIC, _report(2))
    assert topic == TOPIC + "/rejected"
    assert answer["statusDetails"]["ErrorCode"] == "Throttled"
    now[0] += 300
    (topic, answer), = svc.handle(TOPIC, _report(1))
    assert answer["statusDetails"]["ErrorCode"] == "InvalidPayload"  # report_id went back
    (topic, answer), = svc.handle(TOPIC, _report(3))
    assert topic == TOPIC + "/accepted" and answer["reportId"] == 3
    assert svc.last_report(THING)[1] == "accepted"
    assert svc.handle(TOPIC + "/accepted", b"{}") is None


@pytest.mark.parametrize("doc", [
    {"metrics": {}},
    {"header": {"report_id": "1", "version": "1.0"}, "metrics": {}},
    {"header": {"report_id": 1, "version": "one"}, "metrics": {}},
    {"header": {"report_id": 1, "version": "1.0"}, "metrics": {"open_ports": {}}},
    {"header": {"report_id": 1, "version": "1.0"},
     "metrics": {"listening_tcp_ports": {"ports": [{"port": 0}]}}},
    {"header": {"report_id": 1, "version": "1.0"},
     "metrics": {"network_stats": {"bytes_in": -1}}},
    {"header": {"report_id": 1, "version": "1.0"}, "metrics": {"tcp_connections": {
        "established_connections": {"connections": [{"remote_addr": "nowhere"}]}}}},
    {"header": {"report_id": 1, "version": "1.0"}, "metrics": {},
     "custom_metrics": {"m": {"number": 1}}},
    {"header": {"report_id": 1, "version": "1.0"}, "metrics": {},
     "custom_metrics": {"m": [{"number": "1"}]}},
])
def test_emulator_refuses_what_the_schema_does_not_allow(doc):
    with pytest.raises(Invalid):
        check_report(doc)


def test_emulator_refuses_non_json():
    (topic, answer), = DefenderService(lambda: 0).handle(TOPIC, b"{nope")
    assert answer["statusDetails"]["ErrorCode"] == "Malformed"


# -- the real daemon -----------------------------------------------------------------


@pytest.fixture
def sockets():
    """A listening TCP port with one established connection, and a bound UDP port."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    client = socket.create_connection(listener.getsockname())
    server, _ = listener.accept()
    yield listener.getsockname()[1], udp.getsockname()[1], client.getsockname()[1]
    for s in (server, client, udp, listener):
        s.close()


def _next_report(emulator, count=1):
    emulator.wait_for(lambda msgs: len([m for m in msgs if m.topic.startswith(TOPIC + "/")])
                      >= count, 20, "%d defender answer(s)" % count)
    return emulator.defender.reports(THING)[count - 1]


def test_report_lists_the_sockets_the_test_opened(emulator, certstore, daemon_factory,
                                                  sockets):
    tcp_port, udp_port, client_port = sockets
    daemon = daemon_factory("--defender=" + THING, certstore=certstore)
    doc, verdict = _next_report(emulator)
    assert verdict == "accepted", verdict
    m = doc["metrics"]
    listening = m["listening_tcp_ports"]
    if listening["total"] <= dr.LIST_LIMIT:
        assert {"port": tcp_port, "interface": "lo"} in listening["ports"]
    udp = m["listening_udp_ports"]
    if udp["total"] <= dr.LIST_LIMIT:
        assert {"port": udp_port, "interface": "lo"} in udp["ports"]
    connections = m["tcp_connections"]["established_connections"]
    if connections["total"] <= dr.LIST_LIMIT:
        assert {"remote_addr": "127.0.0.1:%d" % client_port, "local_port": tcp_port,
                "local_interface": "lo"} in connections["connections"]
        assert {"remote_addr": "127.0.0.1:%d" % tcp_port, "local_port": client_port,
                "local_interface": "lo"} in connections["connections"]
    assert set(m["network_stats"]) == {"bytes_in", "bytes_out", "packets_in", "packets_out"}
    assert "custom_metrics" not in doc
    daemon.wait_log(r"defender: report %d accepted" % doc["header"]["report_id"])


def _script(tmp_path, name, body):
    path = tmp_path / name
    path.write_text("#!/bin/sh\n" + body + "\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


def test_custom_metrics_good_and_bad(emulator, certstore, daemon_factory, tmp_path):
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    (metrics_dir / "from_file").write_text("7\n")
    (metrics_dir / "file_not_json").write_text("{seven")
    (metrics_dir / ".from_file.tmp").write_text("half-writ")
    (metrics_dir / "bad name").write_text("1")
    os.symlink("/etc/passwd", str(metrics_dir / "linked"))
    daemon = daemon_factory(
        "--defender=" + THING,
        "--defender-metric=cpu_temp:echo 41.5",
        "--defender-metric=queue_sizes:printf [1,2,3]",
        "--defender-metric=wifi_ssids:" + _script(tmp_path, "ssids", "echo '[\"home\", \"lab\"]'"),
        "--defender-metric=peers:" + _script(tmp_path, "peers",
                                             "echo '{\"ip_list\": [\"10.0.0.1\", \"::1\"]}'"),
        # No shell: $((1+1)) reaches printf as it is, which is no number.
        "--defender-metric=no_shell:printf %s $((1+1))",
        "--defender-metric=fails:" + _script(tmp_path, "fails", "echo 1; exit 3"),
        "--defender-metric=missing:/nonexistent/metric",
        "--defender-metrics-dir=" + str(metrics_dir),
        certstore=certstore)
    doc, verdict = _next_report(emulator)
    assert verdict == "accepted", verdict
    assert doc["custom_metrics"] == {
        "cpu_temp": [{"number": 41.5}],
        "queue_sizes": [{"number_list": [1, 2, 3]}],
        "wifi_ssids": [{"string_list": ["home", "lab"]}],
        "peers": [{"ip_list": ["10.0.0.1", "::1"]}],
        "from_file": [{"number": 7}],
    }
    log = daemon.log()
    for line in (r"defender metric no_shell: the command's output is not a number",
                 r"defender metric fails: the command exited with status 3",
                 r"defender metric missing: the command cannot start",
                 r"defender metric file_not_json: \S+ is not a number",
                 r"'bad name' is not a custom metric name",
                 r"defender metric linked: cannot open"):
        daemon.wait_log(line, timeout=1)
    assert "half-writ" not in log


def test_interval_is_clamped_with_a_log_line(emulator, certstore, daemon_factory, tmp_path):
    status = tmp_path / "status.json"
    daemon = daemon_factory("--defender=%s:10" % THING, "--status-file=" + str(status),
                            certstore=certstore)
    daemon.wait_log(r"--defender: 10s is more often than AWS accepts reports .*; "
                    r"reporting every 300s")
    assert _next_report(emulator)[1] == "accepted"
    doc = wait_until(lambda: _status_with_report(status), what="the report in the status")
    assert doc["defender"]["interval"] == 300


def _status_with_report(path):
    try:
        with open(str(path)) as f:
            doc = json.load(f)
    except (OSError, ValueError):
        return None
    return doc if (doc.get("defender") or {}).get("answer") else None


def test_rejected_report_is_logged_with_its_reason(emulator, certstore, daemon_factory,
                                                   tmp_path):
    daemon = daemon_factory("--defender=" + THING, certstore=certstore)
    assert _next_report(emulator)[1] == "accepted"
    # A restarted daemon reports at once: within AWS's 5 minutes, so refused.
    daemon.restart()
    doc, verdict = _next_report(emulator, 2)
    assert verdict.startswith("rejected: Throttled"), verdict
    daemon.wait_log(r"ERROR: defender: report %d rejected: Throttled: a report came \d+ s "
                    r"after the last one" % doc["header"]["report_id"])
    assert daemon.proc.poll() is None  # carries on, reporting at the next interval


# -- options ------------------------------------------------------------------------


BASE = ["--clientid=c", "--cacert=ca", "--certstore=s"]


def test_options():
    from lib import options

    ns = options.parse(BASE + ["--defender=Gw1:600", "--defender-metric=m:echo 'a b'"])
    assert ns.defender == ("Gw1", 600.0) and ns.defender_metric == [("m", ["echo", "a b"])]
    assert options.parse(BASE + ["--defender=Gw1"]).defender == ("Gw1", 300.0)
    for bad in (["--defender-metric=m:echo"], ["--defender=Gw1:soon"], ["--defender=:5"],
                ["--defender=Gw1", "--defender-metric=bad name:echo"],
                ["--defender=Gw1", "--defender-metric=m:echo 'unclosed"],
                ["--defender-metrics-dir=/tmp"]):
        with pytest.raises(options.OptionError):
            options.parse(BASE + bad)
