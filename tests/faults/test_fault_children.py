"""Process faults in the daemon's children: notify commands that hang, leave a
child holding their output or flood it are cut off at their limits and the
daemon carries on; when the daemon exits, none of its children (notify,
subscribe-exec, letterhead generator, tunnel proxy, nor what they started)
outlives it, checked in the process table."""

import json
import os

from fakeproxy import FakeProxy
from messagehelpers import drop, spool
from process import alive, drop_action, wait_until
from shadowhelpers import THING, json_service, read_file, wait_synced


def stubborn(record, name):
    """A shell command that records its pid and its background child's, notes
    every SIGTERM and keeps running through it (only SIGKILL ends it)."""
    pids, terms = os.path.join(record, name + ".pids"), os.path.join(record, name + ".terms")
    loop = "trap 'echo $$ >> %s' TERM; while :; do sleep 0.05; done" % terms
    return ("sh -c \"%s\" & echo $! >> %s; echo $$ >> %s; %s"
            % (loop.replace('"', '\\"').replace("$$", "\\$\\$"), pids, pids, loop))


def recorded(record, name, suffix=".pids"):
    try:
        with open(os.path.join(record, name + suffix)) as f:
            return [int(line) for line in f.read().split()]
    except FileNotFoundError:
        return []


def sessions_alive(leaders):
    """Processes (not zombies) in the process table whose session one of LEADERS leads."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % entry) as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z" and int(fields[3]) in leaders:
            found.append(int(entry))
    return found


def test_every_child_gets_sigterm_then_sigkill_and_none_outlives_the_daemon(
        tmp_path, emulator, observer, certstore, daemon_factory):
    record = str(tmp_path / "record")
    os.makedirs(record)
    json_service(tmp_path / "services", "hold", key="hold", outfile=str(tmp_path / "hold.json"),
                 outformat="JSON", notifycmd=stubborn(record, "notify"), timeout=300)
    emulator.update_shadow(THING, {"reported": {"hold": {"n": 1}}})
    msgs = spool(tmp_path)
    proxy = FakeProxy(str(tmp_path / "proxy"))
    commands = str(tmp_path / "commands")
    d = daemon_factory("--services=%s:%s" % (THING, tmp_path / "services"),
                       "--messages=" + msgs,
                       "--default-letterhead-generator=" + stubborn(record, "letterhead"),
                       "--subscribe-exec=fault/exec:" + stubborn(record, "exec"),
                       "--tunnelmappings=gw-1:SSH=22", "--tunnelproxy=" + proxy.path,
                       "--commands=" + commands, certstore=certstore)
    try:
        wait_synced(d)
        emulator.set_desired(THING, {"hold": {"n": 2}})
        drop_action(commands, "open-tunnel", json.dumps(
            {"thing": "gw-1", "region": "eu-west-1", "services": ["SSH"], "token": "t"}))
        [run] = proxy.wait_runs(1)
        wait_until(lambda: len(recorded(record, "notify")) == 2, what="notify running")
        # The subscribe-exec and the generator have a 5 s timeout: start them last.
        drop(msgs, "m1", {"topic": "fault/msg", "payload": {}})
        observer.publish("fault/exec", "x")
        wait_until(lambda: all(len(recorded(record, n)) == 2 for n in ("letterhead", "exec")),
                   what="letterhead generator and subscribe-exec running")
        leaders = {run["pid"]} | {recorded(record, n)[1] for n in ("notify", "letterhead", "exec")}
        everyone = [run["pid"]] + [p for n in ("notify", "letterhead", "exec")
                                   for p in recorded(record, n)]
        assert all(alive(p) for p in everyone)
        assert d.stop(timeout=20) == 0
        # SIGTERM first: the proxy ended on it, the stubborn ones noted it...
        assert proxy.terminated(run)
        for name in ("notify", "letterhead", "exec"):
            assert sorted(recorded(record, name, ".terms")) == sorted(recorded(record, name)), name
        # ...and SIGKILL after the grace: nothing of theirs is left.
        wait_until(lambda: not [p for p in everyone if alive(p)], 2, "children gone")
        assert sessions_alive(leaders) == []
    finally:
        for pid in sessions_alive(set(recorded(record, "notify") + recorded(record, "letterhead")
                                      + recorded(record, "exec") + [r["pid"] for r in
                                                                    proxy.runs()])):
            os.kill(pid, 9)


def test_notify_commands_that_hang_hold_their_output_or_flood_it(
        tmp_path, emulator, certstore, daemon_factory):
    services = tmp_path / "services"
    left = str(tmp_path / "left.pid")
    commands = {
        "hang": "sleep 300",
        # Exits at once, leaving a child that holds stdout and stderr.
        "fork": "sleep 300 & echo $! > %s" % left,
        # Would write gigabytes into a temporary file for its whole timeout.
        "flood": "yes",
    }
    for key, command in commands.items():
        json_service(services, key, key=key, outfile=str(tmp_path / (key + ".json")),
                     outformat="JSON", notifycmd=command, timeout=3)
    json_service(services, "ok", key="ok", outfile=str(tmp_path / "ok.json"), outformat="JSON",
                 notifycmd="cat > %s" % (tmp_path / "ok.notified"))
    d = daemon_factory("--services=%s:%s" % (THING, services), certstore=certstore)
    try:
        wait_synced(d)
        emulator.set_desired(THING, {k: {"v": 1} for k in commands})
        # Cut off by SIGPIPE after the output limit, long before its timeout.
        d.wait_log(r"flood: notifycmd 'yes' (killed by signal 13|exited with status 141)",
                   timeout=2.5)
        d.wait_log(r"fork: notifycmd done", timeout=2.5)
        d.wait_log(r"hang: notifycmd 'sleep 300' timed out and was killed", timeout=6)
        pid = int(read_file(left))
        wait_until(lambda: not alive(pid), 2, "the child the fork command left, killed")
        # The daemon is unaffected: the next change is applied and notified.
        emulator.set_desired(THING, {"ok": {"v": 2}})
        notified = str(tmp_path / "ok.notified")
        wait_until(lambda: os.path.exists(notified) and read_file(notified).strip() != ""
                   and json.loads(read_file(notified)) == {"v": 2}, what="the ok service notified")
        assert d.proc.poll() is None
        assert d.stop() == 0
    finally:
        if os.path.exists(left) and alive(int(read_file(left))):
            os.kill(int(read_file(left)), 9)


STUBBORN_PROXY = """#!/bin/sh
# Leaves a child that ignores SIGTERM, and itself ends at SIGTERM.
sh -c 'trap "" TERM; echo $$ > %s; while :; do sleep 0.1; done' &
trap 'exit 0' TERM
while :; do sleep 0.1; done
"""


def test_a_closed_tunnel_takes_what_its_proxy_left_behind(tmp_path, certstore, daemon_factory):
    """close-tunnel: the proxy ends at SIGTERM, the child it started ignores
    it and is killed after the grace; the daemon runs on."""
    left = str(tmp_path / "left.pid")
    proxy = str(tmp_path / "localproxy")
    with open(proxy, "w") as f:
        f.write(STUBBORN_PROXY % left)
    os.chmod(proxy, 0o755)
    commands = str(tmp_path / "commands")
    d = daemon_factory("--tunnelmappings=gw-1:SSH=22", "--tunnelproxy=" + proxy,
                       "--commands=" + commands, certstore=certstore)
    try:
        d.wait_log("connected")
        drop_action(commands, "open-tunnel", json.dumps(
            {"thing": "gw-1", "region": "eu-west-1", "services": ["SSH"], "token": "t"}))
        pid = wait_until(lambda: os.path.exists(left) and read_file(left).strip()
                         and int(read_file(left)), what="the proxy's child running")
        drop_action(commands, "close-tunnel", json.dumps({"thing": "gw-1"}))
        d.wait_log("tunnel proxy for gw-1 stopped")
        assert alive(pid), "the child ignores SIGTERM: only SIGKILL ends it"
        wait_until(lambda: not alive(pid), 8, "the proxy's child killed after the grace")
        assert d.proc.poll() is None
        assert d.stop() == 0
    finally:
        if os.path.exists(left) and read_file(left).strip() and alive(int(read_file(left))):
            os.kill(int(read_file(left)), 9)
