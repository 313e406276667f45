"""The --commands directory: dispatch, refusals and start-up backlog, seen from files and logs.
(open-tunnel and close-tunnel at work are in test_tunnels.py, reprovision in
test_provisioning.py.)"""

import json
import os
import re

import pytest
from observer import Observer
from process import drop_action, wait_until

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def write_command(directory, name, contents=""):
    drop_action(directory, name, contents if isinstance(contents, str) else json.dumps(contents))


@pytest.mark.parametrize("name, contents, reason", [
    ("frobnicate", "", "unknown command 'frobnicate'"),
    ("open-tunnel", "{not json", "arguments are not valid JSON: Expecting property name"),
    ("close-tunnel", "[]", "arguments are not a JSON object"),
    ("close-tunnel", {"thing": ""}, 'no "thing" in the arguments'),
    ("open-tunnel.7", {"thing": "gw-1", "region": "r", "services": ["SSH"], "token": "secret"},
     "tunnels need --tunnelmappings"),
    ("reprovision", "", "reprovision needs --fleetprov"),
])
def test_refused_command_goes_to_failed_with_a_line(tmp_path, certstore, daemon_factory, name,
                                                    contents, reason):
    commands = str(tmp_path / "commands")
    d = daemon_factory("--commands=" + commands, certstore=certstore)
    d.wait_log("connected to")
    write_command(commands, name, contents)
    d.wait_log(re.escape("%s: %s" % (os.path.join(commands, "new", name), reason)) +
               ".*; moved to failed/")
    # The line is logged just before the move.
    wait_until(lambda: os.listdir(os.path.join(commands, "failed")) == [name],
               what="%s in failed/" % name)
    assert os.listdir(os.path.join(commands, "new")) == []
    assert "secret" not in d.log()
    assert d.stop() == 0


def test_reprovision_with_a_broken_fleetprov_file_is_refused(tmp_path, certstore,
                                                             daemon_factory):
    commands, fleetprov = str(tmp_path / "commands"), tmp_path / "fleetprov.json"
    fleetprov.write_text('{"claimstore": "/x", "template": "T"}')
    d = daemon_factory("--commands=" + commands, "--fleetprov=%s" % fleetprov,
                       certstore=certstore)
    d.wait_log("connected to")
    write_command(commands, "reprovision")
    d.wait_log(re.escape("reprovision: --fleetprov: %s: 'parameters' is missing or not an "
                         "object; moved to failed/" % fleetprov))
    assert d.proc.poll() is None
    assert d.stop() == 0


def test_backlog_at_start_up_is_handled_in_name_order(tmp_path, certstore, daemon_factory):
    commands = str(tmp_path / "commands")
    for name in ("zz-unknown", "close-tunnel", "aa-unknown"):
        write_command(commands, name, "[]")
    d = daemon_factory("--commands=" + commands, certstore=certstore)
    wait_until(lambda: d.log().count("moved to failed/") == 3, what="three refused commands")
    lines = [line for line in d.log().splitlines() if "moved to failed/" in line]
    assert [line.split("/new/")[1].split(":")[0] for line in lines] == \
        ["aa-unknown", "close-tunnel", "zz-unknown"]
    assert d.stop() == 0


def test_refetch_fetches_the_shadow_again(tmp_path, certstore, daemon_factory, broker,
                                         emulator):
    observer = Observer(broker.plain_port, topics=("$aws/things/thing-r/shadow/get",))
    commands = str(tmp_path / "commands")
    d = daemon_factory("--commands=" + commands, "--updates=thing-r:%s" % (tmp_path / "upd"),
                       certstore=certstore)
    get = "$aws/things/thing-r/shadow/get"
    observer.wait_topic(get, 1)
    write_command(commands, "refetch")
    observer.wait_topic(get, 2)
    d.wait_log("command refetch")
    assert os.listdir(os.path.join(commands, "failed")) == []
    assert d.stop() == 0
    observer.close()
