"""Secure tunnelling with a fake proxy that records its arguments and environment."""

import json
import os
import subprocess
import sys

import pytest
from fakeproxy import FakeProxy
from process import CHARIOTD, alive, drop_action, read_status, wait_until


@pytest.fixture
def proxy(tmp_path):
    fake = FakeProxy(str(tmp_path / "proxy"))
    yield fake
    for run in fake.runs():  # never leave a proxy behind, whatever the test did
        if alive(run["pid"]):
            os.kill(run["pid"], 9)


def notify(observer, thing, token, services=("SSH",), region="eu-west-1", mode="destination"):
    observer.publish("$aws/things/%s/tunnels/notify" % thing,
                     {"clientAccessToken": token, "clientMode": mode, "region": region,
                      "services": list(services)})


def start_daemon(daemon_factory, certstore, proxy, tmp_path, *extra):
    d = daemon_factory("--tunnelmappings=gw-1:SSH=22,HTTP=localhost:8080",
                       "--tunnelmappings=gw-2:VNC=5900", "--tunnelproxy=" + proxy.path,
                       *extra, certstore=certstore)
    d.wait_log("connected to")
    return d


def test_notification_starts_the_proxy_with_the_token_only_in_its_environment(
        tmp_path, certstore, daemon_factory, emulator, proxy):
    cadir = str(tmp_path / "ca")
    d = start_daemon(daemon_factory, certstore, proxy, tmp_path, "--tunnelcadir=" + cadir)
    token = emulator.open_tunnel("gw-1", ["SSH", "RDP", "HTTP"], region="eu-west-1")
    [run] = proxy.wait_runs(1)
    assert run["argv"] == ["-d", "SSH=22,HTTP=localhost:8080", "-c", cadir]
    assert run["token"] == token and run["region"] == "eu-west-1"
    d.wait_log(r"tunnel proxy for gw-1 started .* for SSH, HTTP; not mapped: RDP")
    with open("/proc/%d/cmdline" % run["pid"], "rb") as f:
        assert token.encode() not in f.read()
    assert d.stop() == 0
    # The daemon's exit stops its proxies.
    wait_until(lambda: proxy.terminated(run), what="proxy stopped on daemon exit")
    assert token not in d.log()


def test_new_request_replaces_the_running_proxy_and_repeats_are_ignored(
        tmp_path, certstore, daemon_factory, observer, proxy):
    d = start_daemon(daemon_factory, certstore, proxy, tmp_path)
    notify(observer, "gw-1", "token-one")
    [first] = proxy.wait_runs(1)
    notify(observer, "gw-2", "token-other", services=["VNC"])
    proxy.wait_runs(2)
    notify(observer, "gw-1", "token-two", services=["HTTP"])
    runs = proxy.wait_runs(3)
    second = runs[-1]
    assert (second["token"], second["argv"]) == ("token-two", ["-d", "HTTP=localhost:8080"])
    wait_until(lambda: proxy.terminated(first), what="first proxy terminated")
    wait_until(lambda: not alive(first["pid"]), what="first proxy gone")
    d.wait_log("tunnel proxy for gw-1 stopped")
    # gw-2's proxy is untouched; a repeat of gw-1's request does not restart it.
    assert alive(runs[1]["pid"]) and alive(second["pid"])
    notify(observer, "gw-1", "token-two", services=["HTTP"])
    d.wait_log("tunnel request for gw-1 repeated; its proxy is already running")
    assert len(proxy.runs()) == 3
    assert not any(t in d.log() for t in ("token-one", "token-two", "token-other"))
    assert d.stop() == 0


@pytest.mark.parametrize("payload, reason", [
    ({"clientAccessToken": "t", "clientMode": "destination", "region": "r",
      "services": ["RDP"]}, r"none of the requested services \(RDP\) is mapped for gw-1"),
    ({"clientAccessToken": "t", "clientMode": "destination", "region": "r", "services": []},
     "services must be a non-empty list of names"),
    ({"clientAccessToken": "", "clientMode": "destination", "region": "r",
      "services": ["SSH"]}, "no access token"),
    ({"clientAccessToken": "t", "clientMode": "destination", "services": ["SSH"]},
     "no region"),
    ("[not json", "Expecting value"),
])
def test_unusable_notification_is_logged_and_ignored(tmp_path, certstore, daemon_factory,
                                                     observer, proxy, payload, reason):
    d = start_daemon(daemon_factory, certstore, proxy, tmp_path)
    observer.publish("$aws/things/gw-1/tunnels/notify", payload)
    d.wait_log("tunnel notification for gw-1 ignored: " + reason)
    observer.publish("$aws/things/gw-1/tunnels/notify",
                     {"clientAccessToken": "t", "clientMode": "source", "region": "r",
                      "services": ["SSH"]})
    d.wait_log("tunnel notification for gw-1 is not for a destination; ignored")
    assert proxy.runs() == []
    assert d.stop() == 0


def write_command(directory, name, args):
    drop_action(directory, name, json.dumps(args))


def test_open_and_close_tunnel_commands(tmp_path, certstore, daemon_factory, proxy):
    commands = str(tmp_path / "commands")
    d = start_daemon(daemon_factory, certstore, proxy, tmp_path, "--commands=" + commands)
    write_command(commands, "open-tunnel", {"thing": "gw-2", "region": "ap-south-1",
                                            "services": ["VNC"], "token": "cmd-token"})
    [run] = proxy.wait_runs(1)
    assert (run["argv"], run["token"], run["region"]) == (["-d", "VNC=5900"], "cmd-token",
                                                          "ap-south-1")
    write_command(commands, "close-tunnel.1", {"thing": "gw-2"})
    wait_until(lambda: proxy.terminated(run), what="proxy stopped by close-tunnel")
    d.wait_log("tunnel proxy for gw-2 stopped")
    write_command(commands, "close-tunnel.2", {"thing": "gw-2"})
    d.wait_log("no tunnel proxy is running for gw-2")
    write_command(commands, "open-tunnel.3", {"thing": "gw-9", "region": "r",
                                              "services": ["VNC"], "token": "x"})
    d.wait_log(r"open-tunnel.3: 'gw-9' has no --tunnelmappings; moved to failed/")
    wait_until(lambda: os.listdir(os.path.join(commands, "failed")) == ["open-tunnel.3"],
               what="open-tunnel.3 in failed/")
    assert os.listdir(os.path.join(commands, "new")) == []
    assert "cmd-token" not in d.log()
    assert d.stop() == 0


def test_proxy_that_exits_or_cannot_start_is_logged(tmp_path, certstore, daemon_factory,
                                                    observer, proxy):
    d = start_daemon(daemon_factory, certstore, proxy, tmp_path)
    notify(observer, "gw-1", "t1")
    [run] = proxy.wait_runs(1)
    os.kill(run["pid"], 9)
    d.wait_log("tunnel proxy for gw-1 was killed by signal 9")
    os.unlink(proxy.path)
    notify(observer, "gw-1", "t2")
    d.wait_log(r"tunnel notification for gw-1 ignored: cannot start tunnel proxy .*localproxy: "
               "No such file or directory")
    assert d.stop() == 0


def test_running_proxies_count_among_the_children_in_the_status_file(
        tmp_path, certstore, daemon_factory, observer, proxy):
    status = str(tmp_path / "status.json")
    d = start_daemon(daemon_factory, certstore, proxy, tmp_path, "--status-file=" + status)

    def children_running(n):
        return wait_until(lambda: (read_status(status) or {}).get("children_running") == n,
                          what="%d child(ren) running in the status file" % n)

    children_running(0)
    notify(observer, "gw-1", "t1")
    notify(observer, "gw-2", "t2", services=["VNC"])
    # the two start in either order: tell them by their tokens
    runs = {run["token"]: run for run in proxy.wait_runs(2)}
    children_running(2)
    os.kill(runs["t1"]["pid"], 9)  # a proxy that dies
    children_running(1)
    notify(observer, "gw-2", "token-three", services=["VNC"])  # replaced: the old one stops
    wait_until(lambda: proxy.terminated(runs["t2"]), what="gw-2's first proxy stopped")
    proxy.wait_runs(3)
    d.wait_log("tunnel proxy for gw-2 stopped")
    children_running(1)
    out = subprocess.run([sys.executable, CHARIOTD, "--status", status], check=True,
                         stdout=subprocess.PIPE, text=True).stdout
    assert "1 child process(es) running" in out
    assert "token-three" not in json.dumps(read_status(status))  # no token in it
    assert d.stop() == 0


def test_bad_thing_name_in_mappings_is_an_error_with_status_2(certstore, daemon_factory):
    d = daemon_factory("--tunnelmappings=gw/+:SSH=22", certstore=certstore)
    assert d.wait_exit() == 2
    assert "--tunnelmappings: 'gw/+' is not a valid thing name" in d.log()
