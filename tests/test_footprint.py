"""What the idle daemon loads: with every feature configured and connected,
none of the modules it has no use for (FOOTPRINT.md: what each would cost).
The modules come from the daemon's PYTHONVERBOSE lines, so a stand-in that
lib/mqttlib.py put in place of a module paho imports counts as not loaded
until the real module is imported."""

import json
import sys

# Beside each, what used to load it.
NOT_NEEDED = {
    "urllib.request", "http.client", "email",  # paho, for proxy settings
    "urllib.parse", "ipaddress",  # paho, for proxy settings
    "uuid",  # paho, for a client id of its own making
    "argparse", "gettext",  # the command line
    "shutil", "bz2", "lzma",  # argparse, for the width of a terminal
    "random",  # the reconnect backoff's jitter
    "tempfile",  # the certstore, child processes
    "lib.jsliteral",  # .js service definitions
    "lib.status", "lib.defender", "lib.jobs", "lib.tunnels",  # not configured here
}
if sys.version_info >= (3, 11):  # before, platform (which paho uses) imports it
    NOT_NEEDED.add("subprocess")  # child processes


def _imported(daemon):
    return {line.split("'")[1] for line in daemon.log().splitlines()
            if line.startswith("import '")}


def test_idle_daemon_with_every_feature_loads_only_what_it_uses(tmp_path, broker, certstore,
                                                                  daemon_factory):
    services = tmp_path / "services"
    services.mkdir()
    for name, fmt in (("network", "JSON"), ("console", "SHELL"), ("motd", "PLAINTEXT")):
        (services / (name + ".json")).write_text(json.dumps({
            "key": name, "outfile": str(tmp_path / name), "outformat": fmt, "informat": fmt,
            "notifycmd": "true"}))
    d = daemon_factory("--services=Gw1:%s" % services, "--updates=Gw1:%s" % (tmp_path / "up"),
                       "--commands=%s" % (tmp_path / "cmd"), "--messages=%s" % (tmp_path / "m"),
                       "--subscribe-write=t/w:%s" % (tmp_path / "written"),
                       "--subscribe-exec=t/x:cat", certstore=certstore,
                       env={"PYTHONVERBOSE": "1"})
    d.wait_log("connected to")
    d.stop()
    loaded = _imported(d)
    # the check sees the daemon's imports, features included
    assert {"lib.shadowsync", "lib.formats.shell", "lib.messages", "lib.subscriptions",
            "lib.commands", "paho.mqtt.client", "ssl"} <= loaded
    assert not NOT_NEEDED & loaded, sorted(NOT_NEEDED & loaded)
