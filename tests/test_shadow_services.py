"""Service definitions end to end: .js/.json/.py, every service key, bad
input from the cloud and from --updates files, and local updates."""

import json
import os

from process import wait_until
from shadowhelpers import (
    THING,
    assert_quiet,
    device_updates,
    drop_update,
    json_service,
    notify_counter,
    read_file,
    shadow_state,
    source_in,
    wait_synced,
    write_file,
)

LIMITS_PY = '''
key = "limits"
outfile = %(outfile)r
outformat = "JSON"
notifycmd = %(notify)r

MODES = ("eco", "full")


def validate(cfg):
    if cfg.get("mode") == "off":
        return None  # deletes the service's section
    if cfg.get("mode") not in MODES:
        raise ValueError("mode must be one of %%s" %% ", ".join(MODES))
    cfg["rate"] = min(cfg.get("rate", 0), 100)  # fix-up: clamp
    if cfg.get("rate") == 13:
        return {13: "unlucky"}  # not JSON: refused by the daemon
    return cfg
'''

CONSOLE_JS = '''// the NodeJS daemon's form
module.exports = {
  key: 'console',
  outfile: %(outfile)s,
  outformat: 'SHELL',
  informat: 'SHELL',
  notifycmd: %(notify)s,  /* trailing commas and comments are fine */
};
'''


def start(daemon_factory, certstore, *options):
    d = daemon_factory(*options, certstore=certstore)
    wait_synced(d)
    return d


def test_js_json_and_py_definitions_end_to_end(tmp_path, emulator, certstore, daemon_factory):
    services = tmp_path / "services"
    os.makedirs(str(services))
    console_notify, console_runs = notify_counter(tmp_path, "console")
    console_rc = str(tmp_path / "console.rc")
    write_file(services / "console.js", CONSOLE_JS % {"outfile": json.dumps(console_rc),
                                                      "notify": json.dumps(console_notify)})
    motd = str(tmp_path / "motd")
    json_service(services, "motd", key="motd", outfile=motd, outformat="PLAINTEXT",
                 notifycmd="")
    limits_notify, limits_runs = notify_counter(tmp_path, "limits")
    limits = str(tmp_path / "limits.json")
    write_file(services / "limits.py", LIMITS_PY % {"outfile": limits, "notify": limits_notify})
    d = start(daemon_factory, certstore, "--services=%s:%s" % (THING, services))
    emulator.set_desired(THING, {"console": {"tty": "ttyS0"}, "motd": "Welcome\n",
                                 "limits": {"mode": "eco", "rate": 500}})
    d.wait_log("reported console, limits, motd; cleared desired console, limits, motd")
    assert source_in(["sh"], console_rc, ["tty"]) == [b"ttyS0"]
    assert read_file(motd) == "Welcome\n"
    assert json.loads(read_file(limits)) == {"mode": "eco", "rate": 100}
    assert shadow_state(emulator)["reported"]["limits"] == {"mode": "eco", "rate": 100}
    wait_until(lambda: console_runs() == 1 and limits_runs() == 1, what="notify runs")

    # validate refuses: logged, cleared from desired, nothing written or reported.
    emulator.set_desired(THING, {"limits": {"mode": "turbo"}})
    d.wait_log(r"limits: delta version \d+ refused: validate raised ValueError: "
               r"mode must be one of eco, full; cleared from desired")
    d.wait_log("cleared desired limits\n")
    emulator.set_desired(THING, {"limits": {"rate": 13}})
    d.wait_log(r"limits: delta version \d+ refused: the config has a key 13 that is not a string")
    wait_until(lambda: "limits" not in shadow_state(emulator).get("desired", {}),
               what="desired limits cleared")
    assert json.loads(read_file(limits)) == {"mode": "eco", "rate": 100}
    assert shadow_state(emulator)["reported"]["limits"] == {"mode": "eco", "rate": 100}
    assert limits_runs() == 1

    emulator.set_desired(THING, {"limits": {"mode": "off"}})
    wait_until(lambda: "limits" not in shadow_state(emulator)["reported"], what="section deleted")
    assert read_file(limits) == "{}\n"
    wait_until(lambda: limits_runs() == 2, what="notify")


def test_bad_definitions_are_logged_and_the_rest_load(tmp_path, emulator, certstore,
                                                      daemon_factory):
    services = tmp_path / "services"
    json_service(services, "good", key="good", outfile=str(tmp_path / "good.json"),
                 outformat="JSON", notifycmd="")
    write_file(services / "clever.js", "module.exports = { key: 'clever', outfile: '/x',"
               " outformat: 'JSON', notifycmd: '', validate: function (c) { return c; } };")
    json_service(services, "broken", key="broken", outformat="XML", notifycmd="")
    d = start(daemon_factory, certstore, "--services=%s:%s" % (THING, services))
    log = d.log()
    assert "clever.js: contains code; port it to clever.py" in log
    assert "broken.json: missing required key 'outfile'" in log
    assert "unknown outformat 'XML'" in log
    assert "shadow Gw1: services good\n" in log


def test_outkeys_notifykeys_and_initialnotify(tmp_path, emulator, certstore, daemon_factory):
    services = tmp_path / "services"
    out_notify, out_runs = notify_counter(tmp_path, "out")
    json_service(services, "out", key="out", outfile=str(tmp_path / "out.json"),
                 outformat="JSON", notifycmd=out_notify, outkeys=["shown"])
    keys_notify, keys_runs = notify_counter(tmp_path, "keys")
    json_service(services, "keys", key="keys", outfile=str(tmp_path / "keys.json"),
                 outformat="JSON", notifycmd=keys_notify, notifykeys=["restart"])
    init_notify, init_runs = notify_counter(tmp_path, "init")
    json_service(services, "init", key="init", outfile="/dev/null", outformat="JSON",
                 notifycmd=init_notify, initialnotify=True)
    emulator.update_shadow(THING, {"reported": {"out": {"shown": 1, "hidden": 1},
                                                "keys": {"restart": 1, "quiet": 1}}})
    d = start(daemon_factory, certstore, "--services=%s:%s" % (THING, services))
    wait_until(lambda: init_runs() == 1, what="initial notify")
    wait_until(lambda: out_runs() == 1, what="notify for the outfile first written")
    assert json.loads(read_file(tmp_path / "out.json")) == {"shown": 1}
    assert keys_runs() == 0  # written, but no notify key changed

    emulator.set_desired(THING, {"out": {"hidden": 2}, "keys": {"quiet": 2}})
    d.wait_log("reported keys, out; cleared desired keys, out")
    assert shadow_state(emulator)["reported"]["out"] == {"shown": 1, "hidden": 2}
    assert json.loads(read_file(tmp_path / "keys.json")) == {"restart": 1, "quiet": 2}
    emulator.set_desired(THING, {"out": {"shown": 2}, "keys": {"restart": 2}})
    d.wait_log("(cleared desired keys, out(.|\n)*){2}")
    wait_until(lambda: out_runs() == 2 and keys_runs() == 1, what="notify runs")
    assert not os.path.exists("/dev/null.chariotd") and os.path.exists("/dev/null")
    assert_quiet(emulator, [out_runs, keys_runs, init_runs], seconds=1)
    d.restart()
    wait_until(lambda: init_runs() == 2, what="initial notify after restart")


def test_ephemeral_data_is_a_one_shot_command(tmp_path, emulator, certstore, daemon_factory):
    notify, runs = notify_counter(tmp_path, "reboot")
    json_service(tmp_path / "services", "reboot", key="reboot", ephemeraldata=True,
                 notifycmd=notify)
    d = start(daemon_factory, certstore, "--services=%s:%s" % (THING, tmp_path / "services"))
    emulator.set_desired(THING, {"reboot": {"delay": 5}})
    d.wait_log("cleared desired reboot")
    wait_until(lambda: runs() == 1, what="notify")
    assert json.loads(read_file(tmp_path / "notified-reboot")) == {"delay": 5}
    state = shadow_state(emulator)
    assert "reboot" not in state.get("reported", {})
    assert "reboot" not in state.get("desired", {})


def test_delete_requests(tmp_path, emulator, certstore, daemon_factory):
    notify, runs = notify_counter(tmp_path, "app")
    outfile = str(tmp_path / "app.json")
    json_service(tmp_path / "services", "app", key="app", outfile=outfile, outformat="JSON",
                 notifycmd=notify)
    emulator.update_shadow(THING, {"reported": {"app": {"a": 1, "b": 2, "c": 3, "d": [4]}}})
    d = start(daemon_factory, certstore, "--services=%s:%s" % (THING, tmp_path / "services"),
              "--empty-array-as-delete-request")
    emulator.set_desired(THING, {"app": {"a": "DELETE", "b": [], "d": [5]}})
    d.wait_log("cleared desired app")
    assert json.loads(read_file(outfile)) == {"c": 3, "d": [5]}
    assert shadow_state(emulator)["reported"]["app"] == {"c": 3, "d": [5]}


def test_notifycmd_missing_failing_or_hanging(tmp_path, emulator, certstore, daemon_factory):
    services = tmp_path / "services"
    json_service(services, "missing", key="missing", outfile=str(tmp_path / "m.json"),
                 outformat="JSON", notifycmd=str(tmp_path / "no-such-command"))
    json_service(services, "failing", key="failing", outfile=str(tmp_path / "f.json"),
                 outformat="JSON", notifycmd="echo broken >&2; exit 3")
    json_service(services, "hanging", key="hanging", outfile=str(tmp_path / "h.json"),
                 outformat="JSON", notifycmd="sleep 30", timeout=1)
    d = start(daemon_factory, certstore, "--services=%s:%s" % (THING, services))
    emulator.set_desired(THING, {"hanging": {"x": 1}})
    d.wait_log("cleared desired hanging")
    # While that notify hangs, the loop still serves other changes.
    emulator.set_desired(THING, {"missing": {"x": 1}, "failing": {"x": 1}})
    d.wait_log("cleared desired failing, missing")
    d.wait_log(r"missing: notifycmd '.*no-such-command' exited with status 127")
    d.wait_log(r"failing: notifycmd 'echo broken >&2; exit 3' exited with status 3: broken")
    d.wait_log(r"hanging: notifycmd 'sleep 30' timed out and was killed")
    # The configs were applied all the same: the outfiles changed.
    assert json.loads(read_file(tmp_path / "h.json")) == {"x": 1}
    assert shadow_state(emulator)["reported"]["missing"] == {"x": 1}


def test_outfile_that_cannot_be_written(tmp_path, emulator, certstore, daemon_factory):
    services = tmp_path / "services"
    notify, runs = notify_counter(tmp_path, "nodir")
    json_service(services, "nodir", key="nodir", outfile=str(tmp_path / "missing" / "x.json"),
                 outformat="JSON", notifycmd=notify)
    d = start(daemon_factory, certstore, "--services=%s:%s" % (THING, services))
    emulator.set_desired(THING, {"nodir": {"x": 1}, "other": 1})
    d.wait_log(r"nodir: delta version \d+ not applied: cannot write .*/missing/x.json: "
               r"No such file or directory; left in desired")
    assert_quiet(emulator, [runs], seconds=1)
    # Nothing to report, nothing to clear (beyond creating the missing shadow).
    assert [u["state"] for u in device_updates(emulator)] == [{"reported": {}}]
    assert shadow_state(emulator)["desired"]["nodir"] == {"x": 1}
    # Once the directory exists, the next fetch applies it.
    os.mkdir(str(tmp_path / "missing"))
    d.signal(1)
    d.wait_log("cleared desired nodir")
    assert json.loads(read_file(tmp_path / "missing" / "x.json")) == {"x": 1}
    assert runs() == 1 or wait_until(lambda: runs() == 1, what="notify")


def test_updates_directory(tmp_path, emulator, certstore, daemon_factory):
    services = tmp_path / "services"
    notify, runs = notify_counter(tmp_path, "console")
    console_rc = str(tmp_path / "console.rc")
    json_service(services, "console", key="console", outfile=console_rc, outformat="SHELL",
                 informat="SHELL", notifycmd=notify)
    updates = tmp_path / "updates"
    d = start(daemon_factory, certstore, "--services=%s:%s" % (THING, services),
              "--updates=%s:%s" % (THING, updates))
    drop_update(updates, "console.0001", "enabled='true'\nname='a b'\nbaud=9600\n")
    drop_update(updates, "stats", '{"uptime": 5, "load": [0.5, 0.1]}')
    d.wait_log("reported .*stats")
    wait_until(lambda: shadow_state(emulator)["reported"].get("console"), what="console")
    state = shadow_state(emulator)
    assert state["reported"] == {"console": {"enabled": True, "name": "a b", "baud": 9600},
                                 "stats": {"uptime": 5, "load": [0.5, 0.1]}}
    assert source_in(["sh"], console_rc, ["enabled", "name"]) == [b"true", b"a b"]
    wait_until(lambda: os.listdir(str(updates / "new")) == [], what="update files deleted")

    drop_update(updates, "console.0002", "name='DELETE'\n")
    drop_update(updates, "console.0003", "this is $(not) shell\n")
    drop_update(updates, ".hidden", "{}")
    drop_update(updates, "stats.1", "{not json")
    d.wait_log(r"new/console.0003: not valid SHELL: .*; moved to failed/")
    d.wait_log(r"new/.hidden: the file name does not start with a shadow key; moved to failed/")
    d.wait_log(r"new/stats.1: not valid JSON: .*; moved to failed/")
    wait_until(lambda: "name" not in shadow_state(emulator)["reported"]["console"],
               what="name deleted")
    assert sorted(os.listdir(str(updates / "failed"))) == [".hidden", "console.0003", "stats.1"]
    assert source_in(["sh"], console_rc, ["enabled", "name"]) == [b"true", b""]
    wait_until(lambda: runs() == 2, what="a notify run per applied file")


def test_update_files_survive_until_reported(tmp_path, broker, emulator, certstore,
                                             daemon_factory):
    services = tmp_path / "services"
    outfile = str(tmp_path / "app.json")
    notify, runs = notify_counter(tmp_path, "app")
    json_service(services, "app", key="app", outfile=outfile, outformat="JSON", notifycmd=notify)
    once, once_runs = notify_counter(tmp_path, "once")
    json_service(services, "once", key="once", ephemeraldata=True, notifycmd=once)
    updates = tmp_path / "updates"
    # Polling: the directory is looked at again and again while the file waits.
    d = daemon_factory("--services=%s:%s" % (THING, services), "--poll-interval=0.1",
                       "--updates=%s:%s" % (THING, updates), certstore=certstore,
                       env={"CHARIOTD_NO_INOTIFY": "1"})
    wait_synced(d)
    broker.stop()
    d.wait_log("connection to .* lost")
    drop_update(updates, "app", '{"offline": true}')
    drop_update(updates, "once", '{"command": "x"}')
    # Applied on the device at once (once), but kept until the cloud has it.
    wait_until(lambda: runs() == 1 and once_runs() == 1, what="applied while offline")
    assert_quiet(emulator, [runs, once_runs], seconds=1)
    assert json.loads(read_file(outfile)) == {"offline": True}
    d.kill()  # a crash or power cut before the report went out
    assert sorted(os.listdir(str(updates / "new"))) == ["app", "once"]
    broker.start()
    assert emulator.wait_ready(10)
    d.start()
    d.wait_log("reported app")
    assert shadow_state(emulator)["reported"] == {"app": {"offline": True}}
    wait_until(lambda: os.listdir(str(updates / "new")) == [], what="file deleted")


def test_an_update_file_refused_by_the_cloud_goes_to_failed(tmp_path, emulator, certstore,
                                                            daemon_factory):
    updates = tmp_path / "updates"
    d = start(daemon_factory, certstore, "--updates=%s:%s" % (THING, updates))
    drop_update(updates, "blob.1", json.dumps({"data": "x" * 9000}))
    d.wait_log(r"new/blob.1: the shadow cannot take it: 413 The payload exceeds the maximum size "
               r"allowed; moved to failed/")
    assert os.listdir(str(updates / "failed")) == ["blob.1"]
    drop_update(updates, "blob.2", json.dumps({"data": "small"}))
    d.wait_log("reported blob")
    assert shadow_state(emulator)["reported"] == {"blob": {"data": "small"}}
    wait_until(lambda: os.listdir(str(updates / "new")) == [], what="files deleted")
    assert "retrying" not in d.log()
