"""SHELL outfiles written from cloud desired state are safe to source:
sh (dash), bash and BusyBox ash get exactly the stored text and run
nothing, and keys that are not shell names refuse the change."""

import os
import shutil

import pytest
from process import wait_until
from shadowhelpers import (
    THING,
    json_service,
    notify_counter,
    read_file,
    shadow_state,
    source_in,
    wait_synced,
)

SHELLS = [["sh"], ["bash"], ["busybox", "ash"]]


def nasty_values(canary):
    """Values a cloud user might send, each name -> text."""
    return {
        "quote": "it's 'quoted' \"twice\"",
        "subst": "$(touch %s)" % canary,
        "backtick": "`touch %s`" % canary,
        "dollar": "$HOME ${PATH} $1 $$ $? $* $@",
        "backslash": "a\\b\\\\c\\'d\\",
        "newline": "line 1\nline 2\n\nend\n",
        "semicolon": "x; touch %s; 'y" % canary,
        "glob": "* ? [a-z] ~ ~root",
        "unicode": "grüße, 世界, emoji \U0001f600, nbsp\u00a0.",
        "empty": "",
        "spaces": "  lead and trail  ",
        "controls": "tab\there cr\rbell\x07",
    }


@pytest.fixture
def shell_daemon(tmp_path, emulator, certstore, daemon_factory):
    notify, runs = notify_counter(tmp_path, "console")
    outfile = str(tmp_path / "console.rc")
    json_service(tmp_path / "services", "console", key="console", outfile=outfile,
                 outformat="SHELL", notifycmd=notify)
    d = daemon_factory("--services=%s:%s" % (THING, tmp_path / "services"),
                       certstore=certstore)
    wait_synced(d)
    return d, outfile, runs


def test_injection_strings_come_out_exactly_and_run_nothing(tmp_path, emulator, shell_daemon):
    d, outfile, runs = shell_daemon
    canary = str(tmp_path / "pwned")
    values = nasty_values(canary)
    emulator.set_desired(THING, {"console": dict(values, nested={"deep": {"er": "'$(x)'"}})})
    d.wait_log("cleared desired console")
    names = sorted(values)
    expected = [values[n].encode() for n in names]
    for shell in SHELLS:
        if not shutil.which(shell[0]):
            continue
        assert source_in(shell, outfile, names) == expected, shell
        assert source_in(shell, outfile, ["nested_deep_er"]) == [b"'$(x)'"], shell
    # Arrays are bash arrays, which only bash reads; the POSIX shells skip
    # them and still get every scalar (the NodeJS form stopped them there).
    emulator.set_desired(THING, {"console": {"list": ["a b", "it's", "$(touch %s)" % canary]}})
    d.wait_log("(cleared desired console(.|\n)*){2}")
    assert source_in(["bash"], outfile, ["list[0]", "list[1]", "list[2]", "quote"]) == \
        [b"a b", b"it's", b"$(touch %s)" % canary.encode(), values["quote"].encode()]
    for shell in SHELLS:
        if shutil.which(shell[0]):
            assert source_in(shell, outfile, names) == expected, shell
    assert not os.path.exists(canary)
    assert shadow_state(emulator)["reported"]["console"]["quote"] == values["quote"]
    wait_until(lambda: runs() == 2, what="notify")


@pytest.mark.parametrize("bad", [
    {"bad-key": "x"},
    {"1st": "x"},
    {"grüße": "x"},
    {"a_b": "x", "a": {"b": "y"}},
    {"nul": "a\u0000b"},
    {"obj_in_list": [{"a": 1}]},
])
def test_values_a_shell_file_cannot_hold_refuse_the_change(emulator, shell_daemon, bad):
    d, outfile, runs = shell_daemon
    emulator.set_desired(THING, {"console": {"good": "1"}})
    d.wait_log("cleared desired console")
    wait_until(lambda: runs() == 1, what="the good change's notify")  # it runs on its own time
    before = read_file(outfile)
    emulator.set_desired(THING, {"console": bad})
    d.wait_log(r"console: delta version \d+ refused: cannot be written as SHELL: .*; "
               r"cleared from desired")
    wait_until(lambda: "console" not in shadow_state(emulator).get("desired", {}),
               what="desired console cleared")
    assert read_file(outfile) == before
    assert shadow_state(emulator)["reported"]["console"] == {"good": "1"}
    assert runs() == 1


def test_plaintext_refuses_an_object(tmp_path, emulator, certstore, daemon_factory):
    motd = str(tmp_path / "motd")
    json_service(tmp_path / "services", "motd", key="motd", outfile=motd,
                 outformat="PLAINTEXT", notifycmd="")
    d = daemon_factory("--services=%s:%s" % (THING, tmp_path / "services"),
                       certstore=certstore)
    wait_synced(d)
    emulator.set_desired(THING, {"motd": "hello $(id) 'x'\n"})
    d.wait_log("cleared desired motd")
    emulator.set_desired(THING, {"motd": {"text": "hi"}})
    d.wait_log(r"motd: delta version \d+ refused: cannot be written as PLAINTEXT: "
               r"PLAINTEXT config must be a string, not an object")
    assert read_file(motd) == "hello $(id) 'x'\n"


def test_names_the_shell_or_loader_acts_on_refuse_the_change(emulator, shell_daemon):
    d, outfile, runs = shell_daemon
    emulator.set_desired(THING, {"console": {"good": "1"}})
    d.wait_log("cleared desired console")
    before = read_file(outfile)
    # The document: PATH, and LD_PRELOAD and BASH_ENV made by joining keys.
    emulator.set_desired(THING, {"console": {"PATH": "/tmp/evil", "LD": {"PRELOAD": "/tmp/x.so"},
                                             "BASH": {"ENV": "/config/motd"}, "more": "x"}})
    d.wait_log(r"shadow Gw1: console: delta version \d+ refused: cannot be written as SHELL: "
               r"keys 'BASH_ENV', 'LD_PRELOAD', 'PATH' are names the shell, the dynamic loader "
               r"or the programs they start act on; not written; cleared from desired")
    wait_until(lambda: "console" not in shadow_state(emulator).get("desired", {}),
               what="desired console cleared")
    assert [line for line in d.log().splitlines() if "refused" in line and "PATH" in line] \
        and len([line for line in d.log().splitlines() if "refused" in line]) == 1
    assert read_file(outfile) == before
    # The reported config shows the change was not taken.
    assert shadow_state(emulator)["reported"]["console"] == {"good": "1"}
    assert runs() == 1
    # One such name alone is named alone; a lowercase one is an ordinary name.
    emulator.set_desired(THING, {"console": {"IFS": "/"}})
    d.wait_log(r"console: delta version \d+ refused: cannot be written as SHELL: key 'IFS' is a "
               r"name the shell")
    wait_until(lambda: "console" not in shadow_state(emulator).get("desired", {}),
               what="desired console cleared again")
    emulator.set_desired(THING, {"console": {"path": "/opt/bin"}})
    wait_until(lambda: shadow_state(emulator)["reported"]["console"] ==
               {"good": "1", "path": "/opt/bin"}, what="an ordinary name taken")
    assert source_in(["sh"], outfile, ["path"]) == [b"/opt/bin"]
