"""`python3 -m emulator`: app commands against a running `serve`, `watch`, `broker`."""

import json
import threading

import pytest
from emulator_fixture import Process, cli, one_line_error
from observer import Observer

from emulator.broker import free_port
from emulator.cloud import new_client


@pytest.fixture
def device(broker):
    obs = Observer(broker.plain_port, topics=("#", "$aws/#"), client_id="Gw1")
    yield obs
    obs.close()


def test_shadow_commands(serve, device, broker):
    port = broker.plain_port
    result = cli(port, "desired", "Gw1", '{"led": "on"}')
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["state"] == {"desired": {"led": "on"}}
    delta = device.wait_topic("$aws/things/Gw1/shadow/update/delta")[0].json()
    assert delta["state"] == {"led": "on"}

    assert cli(port, "reported", "Gw1/net", '{"ip": "10.0.0.2"}').returncode == 0
    got = cli(port, "get", "Gw1/net")
    assert got.returncode == 0, got.stderr
    assert json.loads(got.stdout)["state"] == {"reported": {"ip": "10.0.0.2"}}

    deleted = cli(port, "delete", "Gw1")
    assert (deleted.returncode, deleted.stdout) == (0, "")
    assert device.wait_topic("$aws/things/Gw1/shadow/delete/accepted")[0].json()["version"] == 1
    assert "no shadow exists for Gw1" in one_line_error(cli(port, "get", "Gw1"))
    one_line_error(cli(port, "delete", "Gw1"))


def test_publish_tunnel_and_job_commands(serve, device, broker):
    port = broker.plain_port
    assert cli(port, "publish", "cmd/Gw1/hello", "plain text", "--qos", "0").returncode == 0
    assert device.wait_topic("cmd/Gw1/hello")[0].payload == b"plain text"

    tunnel = cli(port, "tunnel", "Gw1", "SSH,VNC", "--region", "eu-west-1")
    assert tunnel.returncode == 0, tunnel.stderr
    notify = device.wait_topic("$aws/things/Gw1/tunnels/notify")[0].json()
    assert notify == {"clientAccessToken": tunnel.stdout.strip(), "clientMode": "destination",
                      "region": "eu-west-1", "services": ["SSH", "VNC"]}

    assert cli(port, "job", "Gw1", "fw-2", '{"operation": "update"}').returncode == 0
    event = device.wait_topic("$aws/things/Gw1/jobs/notify-next")[0].json()
    assert event["execution"]["jobDocument"] == {"operation": "update"}
    assert "already exists" in one_line_error(cli(port, "job", "Gw1", "fw-2", "{}"))


def test_watch_prints_messages(serve, broker, tmp_path, observer):
    watch = Process(str(tmp_path), "watch", "watch", "$aws/things/Gw9/#", "--count", "2",
                    "--port", str(broker.plain_port))
    try:
        watch.wait_output("emulator: watching")
        assert cli(broker.plain_port, "desired", "Gw9", '{"x": 1}').returncode == 0
        assert watch.proc.wait(15) == 0
    finally:
        if watch.proc.poll() is None:
            watch.terminate()
    lines = watch.output()[0].splitlines()
    assert [line.split(" ", 1)[0] for line in lines] == [
        "$aws/things/Gw9/shadow/update/accepted", "$aws/things/Gw9/shadow/update/delta"]
    assert json.loads(lines[1].split(" ", 1)[1])["state"] == {"x": 1}


def test_errors_are_one_line_with_status_1(serve, broker):
    port = broker.plain_port
    assert "invalid JSON" in one_line_error(cli(port, "desired", "Gw1", "{oops"))
    one_line_error(cli(port, "desired", "Gw1", "[1]"))
    one_line_error(cli(port, "nonsense"))
    one_line_error(cli(port, "job", "Gw1"))
    deep = json.dumps({"a": {"b": {"c": {"d": {"e": {"f": 1}}}}}})
    assert "nesting" in one_line_error(cli(port, "desired", "Gw1", deep))
    assert "cannot reach the broker" in one_line_error(cli(free_port(), "ping"))


def test_app_command_without_serve_fails(broker):
    result = cli(broker.plain_port, "ping", "--timeout", "0.5")
    assert "no emulator answered" in one_line_error(result)


def test_broker_command(tmp_path):
    tls_port, plain_port = free_port(), free_port()
    directory = tmp_path / "demo"
    broker = Process(str(tmp_path), "broker", "broker", "--dir", str(directory),
                     "--tls-port", str(tls_port), "--plain-port", str(plain_port),
                     "--device", "gw-a")
    try:
        out, _ = broker.wait_output("next: python3 -m emulator serve")
        assert "127.0.0.1:%d" % plain_port in out and "127.0.0.1:%d" % tls_port in out
        certstore = directory / "certstore"
        assert (certstore / "endpoint.txt").read_text() == "localhost:%d\n" % tls_port
        key = certstore / "gw-a" / "gw-a-private.pem.key"
        assert oct(key.stat().st_mode & 0o777) == "0o600"
        Observer(plain_port).close()
        _tls_connect(tls_port, directory / "pki" / "chariotd-test-ca.crt",
                     certstore / "gw-a" / "gw-a-certificate.pem.crt", key)
    finally:
        assert broker.terminate() == 0, broker.output()
    with pytest.raises(OSError):
        Observer(plain_port)


def _tls_connect(port, ca, cert, key):
    client = new_client("gw-a")
    client.tls_set(ca_certs=str(ca), certfile=str(cert), keyfile=str(key))
    result = []
    connected = threading.Event()
    client.on_connect = lambda c, u, f, reason, *rest: (result.append(reason), connected.set())
    client.connect("localhost", port, keepalive=30)
    client.loop_start()
    try:
        assert connected.wait(10) and result[0] == 0, result
    finally:
        client.disconnect()
        client.loop_stop()
