"""Shadow sync end to end: the daemon against mosquitto and the IoT Core
emulator, observed through outfiles, notify runs, shadow documents and the
update requests the device publishes."""

import json
import os
import signal

from process import wait_until
from shadowhelpers import (
    PREFIX,
    SYNCED,
    THING,
    assert_quiet,
    device_updates,
    json_service,
    notify_counter,
    read_file,
    shadow_state,
    source_in,
    wait_synced,
    write_file,
)


def start(daemon_factory, certstore, *options):
    d = daemon_factory(*options, certstore=certstore)
    wait_synced(d)
    return d


def console_service(tmp_path, **extra):
    """A SHELL service `console` in tmp_path/services; returns (services dir, outfile, runs)."""
    notify, runs = notify_counter(tmp_path, "console")
    outfile = str(tmp_path / "console.rc")
    definition = dict(key="console", outfile=outfile, outformat="SHELL", notifycmd=notify)
    definition.update(extra)
    json_service(tmp_path / "services", "console", **definition)
    return str(tmp_path / "services"), outfile, runs


def test_desired_is_applied_reported_cleared_and_then_nothing_more_happens(
        tmp_path, emulator, certstore, daemon_factory):
    services, outfile, runs = console_service(tmp_path)
    emulator.update_shadow(THING, {"reported": {"console": {"baud": 9600}}})
    d = start(daemon_factory, certstore, "--services=%s:%s" % (THING, services))
    # The missing outfile is written from the shadow's record, and notified.
    wait_until(lambda: runs() == 1, what="notify for the first write")
    assert source_in(["sh"], outfile, ["baud"]) == [b"9600"]
    emulator.set_desired(THING, {"console": {"enabled": True, "net": {"if_name": "eth0"}},
                                 "firmware": {"wanted": "2.0"}})
    d.wait_log("shadow Gw1: reported console; cleared desired console")
    state = shadow_state(emulator)
    assert state["reported"]["console"] == {"baud": 9600, "enabled": True,
                                            "net": {"if_name": "eth0"}}
    # Only the handled keys are cleared; another service's desired state stays.
    assert state["desired"]["firmware"] == {"wanted": "2.0"}
    assert "console" not in state.get("delta", {})
    assert source_in(["sh"], outfile, ["baud", "enabled", "net_if_name"]) == \
        [b"9600", b"true", b"eth0"]
    wait_until(lambda: runs() == 2, what="a notify run for the change")
    assert_quiet(emulator, [runs])


def test_restart_with_an_applied_shell_config_does_nothing(
        tmp_path, emulator, certstore, daemon_factory):
    # A SHELL file cannot tell a_b from {a: {b}} or "5" from 5; the shadow's
    # reported section is the record, so nothing flaps after a restart.
    services, outfile, runs = console_service(tmp_path)
    config = {"a_b": "1", "a": {"c": "x"}, "port": "5", "n": 5, "on": "true"}
    emulator.update_shadow(THING, {"reported": {"console": config}})
    d = start(daemon_factory, certstore, "--services=%s:%s" % (THING, services))
    wait_until(lambda: runs() == 1, what="notify after the outfile was first written")
    written = read_file(outfile)
    d.restart()
    wait_synced(d)
    assert_quiet(emulator, [runs], seconds=2)
    assert runs() == 1
    assert device_updates(emulator) == []
    assert read_file(outfile) == written
    assert shadow_state(emulator)["reported"]["console"] == config


def test_desired_changed_while_the_device_was_down(tmp_path, emulator, certstore, daemon_factory):
    services, outfile, runs = console_service(tmp_path)
    d = start(daemon_factory, certstore, "--services=%s:%s" % (THING, services))
    emulator.set_desired(THING, {"console": {"speed": "fast"}})
    d.wait_log("cleared desired console")
    assert d.stop() == 0
    emulator.set_desired(THING, {"console": {"speed": "slow", "extra": [1, 2]}})
    d.start()
    d.wait_log("cleared desired console")
    assert source_in(["bash"], outfile, ["speed", "extra[1]"]) == [b"slow", b"2"]
    assert shadow_state(emulator)["reported"]["console"] == {"speed": "slow", "extra": [1, 2]}
    wait_until(lambda: runs() == 2, what="a notify run per change")


def test_connection_loss_and_reconnect_catches_up(tmp_path, broker, emulator, certstore,
                                                  daemon_factory):
    services, outfile, runs = console_service(tmp_path)
    d = start(daemon_factory, certstore, "--services=%s:%s" % (THING, services))
    broker.stop()
    d.wait_log("connection to .* lost")
    broker.start()
    assert emulator.wait_ready(10)
    emulator.set_desired(THING, {"console": {"after": "outage"}})
    d.wait_log("cleared desired console", timeout=20)
    assert source_in(["sh"], outfile, ["after"]) == [b"outage"]


def test_stale_delta_is_ignored(tmp_path, emulator, certstore, daemon_factory):
    services, outfile, runs = console_service(tmp_path)
    d = start(daemon_factory, certstore, "--services=%s:%s" % (THING, services))
    emulator.set_desired(THING, {"console": {"mode": "old"}})
    d.wait_log("cleared desired console")
    version = emulator.set_desired(THING, {"console": {"mode": "new"}})["version"]
    wait_until(lambda: source_in(["sh"], outfile, ["mode"]) == [b"new"], what="new mode")
    emulator.publish(PREFIX + "/update/delta", {"state": {"console": {"mode": "old"}},
                                                "version": version - 2, "timestamp": 1})
    d.wait_log(r"ignoring delta version %d, older than %d" % (version - 2, version))
    assert source_in(["sh"], outfile, ["mode"]) == [b"new"]
    # A newer delta (here a stand-in for one the cloud sent) is handled.
    emulator.publish(PREFIX + "/update/delta", {"state": {"console": {"mode": "newer"}},
                                                "version": version + 5, "timestamp": 1})
    wait_until(lambda: source_in(["sh"], outfile, ["mode"]) == [b"newer"], what="newer delta")


def test_named_shadow(tmp_path, emulator, certstore, daemon_factory):
    notify, runs = notify_counter(tmp_path, "network")
    outfile = str(tmp_path / "network.json")
    json_service(tmp_path / "net", "network", key="network", outfile=outfile, outformat="JSON",
                 notifycmd=notify)
    d = start(daemon_factory, certstore, "--services=%s/net:%s" % (THING, tmp_path / "net"))
    emulator.set_desired(THING, {"network": {"dns": ["1.1.1.1"]}}, shadow="net")
    d.wait_log("shadow Gw1/net: reported network; cleared desired network")
    assert json.loads(read_file(outfile)) == {"dns": ["1.1.1.1"]}
    assert shadow_state(emulator, shadow="net")["reported"] == {"network": {"dns": ["1.1.1.1"]}}
    assert emulator.get_shadow(THING) is None  # the classic shadow is not touched
    wait_until(lambda: runs() == 1, what="notify")


def test_sighup_refetches_and_brings_files_in_line(tmp_path, emulator, certstore,
                                                    daemon_factory):
    services, outfile, runs = console_service(tmp_path)
    d = start(daemon_factory, certstore, "--services=%s:%s" % (THING, services))
    emulator.set_desired(THING, {"console": {"level": 1}})
    d.wait_log("cleared desired console")
    wait_until(lambda: runs() == 1, what="notify")
    # Desired changed without the device hearing of it, and its outfile lost.
    quiet_change(emulator, {"console": {"level": 2}})
    os.unlink(outfile)
    d.signal(signal.SIGHUP)
    wait_until(lambda: os.path.exists(outfile) and
               source_in(["sh"], outfile, ["level"]) == [b"2"], what="outfile refetched")
    wait_until(lambda: shadow_state(emulator)["reported"]["console"] == {"level": 2},
               what="reported after the refetch")
    wait_until(lambda: runs() == 2, what="notify")


def test_missing_shadow_is_created_from_defaultshadow(tmp_path, emulator, certstore,
                                                      daemon_factory):
    services, outfile, runs = console_service(tmp_path)
    notify, ssh_runs = notify_counter(tmp_path, "ssh")
    ssh_file = write_file(tmp_path / "ssh.json", '{\n  "port": 22\n}\n')  # as chariotd writes
    json_service(tmp_path / "services", "ssh", key="ssh", outfile=ssh_file, outformat="JSON",
                 notifycmd=notify)
    seed = write_file(tmp_path / "seed.sh", "#!/bin/sh\nread thing\n"
                      'echo "{\\"console\\": {\\"on\\": \\"yes\\"}, \\"serial\\": \\"$thing\\"}"\n',
                      0o755)
    start(daemon_factory, certstore, "--services=%s:%s" % (THING, services),
          "--defaultshadow=%s:%s" % (THING, seed))
    wait_until(lambda: emulator.get_shadow(THING), what="shadow created")
    # The seed's entry for console, the existing outfile's config for ssh,
    # and keys without a service as they are.
    assert shadow_state(emulator)["reported"] == {"console": {"on": "yes"}, "ssh": {"port": 22},
                                                  "serial": THING}
    assert source_in(["sh"], outfile, ["on"]) == [b"yes"]
    wait_until(lambda: runs() == 1, what="console notified")
    assert ssh_runs() == 0  # its outfile did not change


def test_defaultshadow_failure_is_retried(tmp_path, emulator, certstore, daemon_factory):
    seed = write_file(tmp_path / "seed.sh", "#!/bin/sh\necho not json\n", 0o755)
    d = start_unsynced(daemon_factory, certstore, "--defaultshadow=%s:%s" % (THING, seed))
    d.wait_log("creating the shadow: --defaultshadow output is not a JSON object; "
               "retrying in 2s")
    write_file(seed, '#!/bin/sh\necho \'{"serial": "1"}\'\n', 0o755)
    d.wait_log(SYNCED, timeout=15)
    wait_until(lambda: emulator.get_shadow(THING), what="shadow created")
    assert shadow_state(emulator)["reported"] == {"serial": "1"}


def test_missing_shadow_with_nothing_to_report_is_created_empty(tmp_path, emulator, certstore,
                                                                daemon_factory):
    services, _outfile, runs = console_service(tmp_path)
    start(daemon_factory, certstore, "--services=%s:%s" % (THING, services))
    wait_until(lambda: emulator.get_shadow(THING), what="shadow created")
    assert shadow_state(emulator).get("reported", {}) == {}
    assert runs() == 0


def start_unsynced(daemon_factory, certstore, *options):
    d = daemon_factory(*options, certstore=certstore)
    d.wait_log("connected to")
    return d


def test_deleted_shadow_is_created_again(tmp_path, emulator, certstore, daemon_factory):
    services, outfile, runs = console_service(tmp_path)
    d = start(daemon_factory, certstore, "--services=%s:%s" % (THING, services))
    emulator.set_desired(THING, {"console": {"keep": "me"}})
    d.wait_log("cleared desired console")
    emulator.delete_shadow(THING)
    d.wait_log("shadow Gw1 was deleted")
    kept = {"console": {"keep": "me"}}
    wait_until(lambda: (shadow_state(emulator) or {}).get("reported") == kept,
               what="shadow created again with the current config")
    # Versions continue after a delete; deltas are still handled.
    emulator.set_desired(THING, {"console": {"keep": "you"}})
    wait_until(lambda: source_in(["sh"], outfile, ["keep"]) == [b"you"], what="delta after")


def test_new_service_on_an_existing_shadow_reports_its_outfile(tmp_path, emulator, certstore,
                                                               daemon_factory):
    notify, runs = notify_counter(tmp_path, "ntp")
    outfile = write_file(tmp_path / "ntp.json", '{\n  "servers": [\n    "pool.ntp.org"\n  ]\n}\n')
    json_service(tmp_path / "services", "ntp", key="ntp", outfile=outfile, outformat="JSON",
                 notifycmd=notify)
    emulator.update_shadow(THING, {"reported": {"other": 1}})
    d = start(daemon_factory, certstore, "--services=%s:%s" % (THING, tmp_path / "services"))
    d.wait_log("ntp: shadow has no record; took the config from .*ntp.json")
    d.wait_log("shadow Gw1: reported ntp")
    assert shadow_state(emulator)["reported"] == {"other": 1, "ntp": {"servers": ["pool.ntp.org"]}}
    assert_quiet(emulator, [runs], seconds=1)
    assert runs() == 0


def quiet_change(emulator, desired):
    """Change desired state without the device hearing of it (no delta)."""
    emulator.update_shadow_unheard(THING, {"desired": desired})


def fingerprint(path):
    st = os.stat(path)
    return st.st_ino, st.st_mtime_ns, read_file(path)


def test_an_outfile_saying_the_same_in_other_words_is_left_alone(
        tmp_path, broker, emulator, certstore, daemon_factory):
    # Written by hand, by another tool or by the NodeJS daemon: other
    # whitespace, key order, quoting; it parses to the service's config.
    services, console_rc, console_runs = console_service(tmp_path)
    write_file(console_rc, "# by hand\nexport net_if=eth0\nname=\"x y\"\nbaud=9600 ;\n"
               "on=true\n")
    notify, ntp_runs = notify_counter(tmp_path, "ntp")
    ntp = write_file(tmp_path / "ntp.json", '{"servers":["a",  "b"],\n"mode": "x"}')
    json_service(services, "ntp", key="ntp", outfile=ntp, outformat="JSON", notifycmd=notify)
    # A third service whose changes show when a refetch has been handled.
    notify, marker_runs = notify_counter(tmp_path, "marker")
    marker = str(tmp_path / "marker.json")
    json_service(services, "marker", key="marker", outfile=marker, outformat="JSON",
                 notifycmd=notify)
    emulator.update_shadow(THING, {"reported": {
        "console": {"baud": 9600, "name": "x y", "net": {"if": "eth0"}, "on": True},
        "ntp": {"mode": "x", "servers": ["a", "b"]}}})
    before = {path: fingerprint(path) for path in (console_rc, ntp)}

    d = start(daemon_factory, certstore, "--services=%s:%s" % (THING, services))
    assert_quiet(emulator, [console_runs, ntp_runs], seconds=1.5)
    assert {path: fingerprint(path) for path in before} == before, "rewritten at start"
    assert console_runs() == ntp_runs() == 0
    assert device_updates(emulator) == []

    # Refetch (SIGHUP), with a change for the marker only.
    quiet_change(emulator, {"marker": {"n": 1}})
    d.signal(signal.SIGHUP)
    wait_until(lambda: marker_runs() == 1, what="the refetch handled")
    # Reconnect, the same.
    broker.stop()
    d.wait_log("connection to .* lost")
    quiet_change(emulator, {"marker": {"n": 2}})
    broker.start()
    assert emulator.wait_ready(10)
    wait_until(lambda: marker_runs() == 2, timeout=20, what="the reconnect handled")
    assert {path: fingerprint(path) for path in before} == before, "rewritten"
    assert console_runs() == ntp_runs() == 0
    assert not [line for line in d.log().splitlines() if "wrote" in line and "marker" not in line]

    # A really different outfile, and a missing one, are rewritten and notified.
    write_file(console_rc, "baud=4800\nname='x y'\nnet_if=eth0\non=true\n")
    os.unlink(ntp)
    d.signal(signal.SIGHUP)
    wait_until(lambda: console_runs() == 1 and ntp_runs() == 1, what="both notified")
    assert source_in(["sh"], console_rc, ["baud"]) == [b"9600"]
    assert json.loads(read_file(ntp)) == {"mode": "x", "servers": ["a", "b"]}
    d.wait_log(r"console: wrote .*console.rc \(current config\)")


def test_a_lost_answer_to_the_creating_update_does_not_lose_desired_changes(
        tmp_path, broker, emulator, certstore, daemon_factory):
    services, outfile, runs = console_service(tmp_path)
    # The update that creates the shadow lands, but its answer never reaches the device.
    emulator.intercept(PREFIX + "/update", answer=False)
    d = daemon_factory("--services=%s:%s" % (THING, services), certstore=certstore)
    d.wait_log("shadow Gw1 does not exist; creating it")
    wait_until(lambda: emulator.get_shadow(THING), what="the shadow created")
    emulator.set_desired(THING, {"console": {"mode": "a"}})
    wait_until(lambda: os.path.exists(outfile) and source_in(["sh"], outfile, ["mode"]) == [b"a"],
               what="the delta applied")
    broker.stop()
    d.wait_log("connection to .* lost")
    # After the fetch that follows the reconnect, the cloud changes desired
    # again just before the device's update lands, and the device does not
    # hear of it: the update must not clear that change unseen.
    emulator.intercept(PREFIX + "/update", before=lambda: quiet_change(
        emulator, {"console": {"mode": "b"}}))
    broker.start()
    assert emulator.wait_ready(10)
    wait_until(lambda: shadow_state(emulator).get("reported") == {"console": {"mode": "b"}},
               timeout=20, what="the second change reported")
    assert "desired" not in shadow_state(emulator)
    assert source_in(["sh"], outfile, ["mode"]) == [b"b"]
    wait_until(lambda: runs() == 2, what="a notify run per change")
    # Desired is only ever cleared by an update that says which version it read.
    assert all("version" in u for u in device_updates(emulator) if "desired" in u["state"])
    # The fetch showed the shadow exists: no later update claims to have created it.
    assert "created it" not in d.log()
