"""Command-line errors: one line on stderr naming the option, exit 2, no connection;
a Python too old or without paho-mqtt: one line saying what to install, exit 1."""

import glob
import os
import subprocess
import sys
import venv

import pytest
from process import CHARIOTD

from lib import options

BASE = ["--clientid=x", "--cacert=/nonexistent/ca", "--certstore=/nonexistent/store"]


def run(args):
    return subprocess.run([sys.executable, CHARIOTD] + args, capture_output=True, text=True,
                          timeout=20)


@pytest.mark.parametrize("args, mentions", [
    ([], "--clientid"),
    (["--clientid=x", "--cacert=ca"], "--certstore"),
    (["--clientid=x", "--certstore=s"], "--cacert"),
    (BASE + ["--bogus"], "--bogus"),
    (BASE + ["--keepalive=ten"], "--keepalive"),
    (BASE + ["--keepalive=-5"], "--keepalive"),
    # MQTT's field is 16 bits (paho died on this in its thread); AWS holds at most 1200.
    (BASE + ["--keepalive=99999999"], "--keepalive"),
    (BASE + ["--keepalive=65536"], "--keepalive"),
    (BASE + ["--keepalive=1201"], "--keepalive"),
    (BASE + ["--keepalive=0"], "--keepalive"),
    (BASE + ["--messages=/dev/null"], "--messages: /dev/null is not a directory"),
    (BASE + ["--messages=%s" % __file__], "is not a directory"),
    (BASE + ["--messages=/dev/null/sub"], "--messages: /dev/null/sub: /dev/null is not"),
    (BASE + ["--commands=/dev/null"], "--commands"),
    (BASE + ["--updates=thing:/dev/null"], "--updates"),
    (BASE + ["--services=thing:/dev/null"], "--services"),
    (BASE + ["--publish-rate=fast"], "--publish-rate"),
    (BASE + ["--poll-interval=0"], "--poll-interval"),
    (BASE + ["--services=nothing"], "--services"),
    (BASE + ["--services=:dir"], "--services"),
    (BASE + ["--updates=thing:"], "--updates"),
    (BASE + ["--defaultshadow=thing/a/b:cmd"], "--defaultshadow"),
    (BASE + ["--subscribe-write=topic"], "--subscribe-write"),
    (BASE + ["--tunnelmappings=thing:SSH"], "--tunnelmappings"),
    (BASE + ["--messages=/m", "--message-order=/m:sideways"], "--message-order"),
    (BASE + ["--default-message-order=random"], "--default-message-order"),
    (BASE + ["--messages=/m", "--message-concurrency=/m:many"], "--message-concurrency"),
    (BASE + ["--messages=/m", "--message-retries=/other:3"], "--message-retries"),
    (BASE + ["--default-message-jam-timeout=soon"], "--default-message-jam-timeout"),
    (BASE + ["--last-will-topic=t"], "--last-will"),
])
def test_bad_option_is_one_line_and_status_2(args, mentions):
    proc = run(args)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert mentions in lines[0]
    assert proc.stdout == ""


# How the command line is read: as argparse (Python 3.11, no abbreviations)
# read it before chariotd read it itself, so run scripts mean what they meant.
@pytest.mark.parametrize("args, got", [
    (["--last-will-topic", "t", "--last-will-payload", "-1"], "-1"),  # a negative number
    (["--last-will-topic", "t", "--last-will-payload", "-.5"], "-.5"),
    (["--last-will-topic", "t", "--last-will-payload", "-x y"], "-x y"),  # a space
    (["--last-will-topic", "t", "--last-will-payload", "-"], "-"),
    (["--last-will-topic", "t", "--last-will-payload", ""], ""),
    (["--last-will-topic", "t", "--last-will-payload=-x"], "-x"),
    (["--last-will-topic", "t", "--last-will-payload=a=b"], "a=b"),
    (["--last-will-topic", "t", "--last-will-payload=p", "--last-will-payload=q"], "q"),
])
def test_values_are_read_as_argparse_read_them(args, got):
    assert options.parse(BASE + args).last_will_payload == got


@pytest.mark.parametrize("args, error", [
    (["--keepalive", "-x"], "argument --keepalive: expected one argument"),
    (["--keepalive", "-1e3"], "argument --keepalive: expected one argument"),
    (["--keepalive", "--clientid=y"], "argument --keepalive: expected one argument"),
    (["--keepalive", "-hx"], "argument --keepalive: expected one argument"),
    (["--keepalive", "--", "30"], "argument --keepalive: expected one argument"),
    (["--keepalive"], "argument --keepalive: expected one argument"),
    (["--log-timestamps=1"], "argument --log-timestamps: ignored explicit argument '1'"),
    (["-hx"], "argument -h/--help: ignored explicit argument 'x'"),
    (["-h="], "argument -h/--help: ignored explicit argument ''"),
    (["--client=x", "y", "-1"], "unrecognized arguments: --client=x y -1"),
    (["--", "--keepalive=30"], "unrecognized arguments: -- --keepalive=30"),
    ([""], "unrecognized arguments: "),
])
def test_bad_command_lines_are_refused_as_argparse_refused_them(args, error):
    with pytest.raises(options.OptionError) as e:
        options.parse(BASE + args)
    assert str(e.value) == error


def test_flags_and_help():
    ns = options.parse(BASE + ["--log-timestamps", "--jobs-allow-commands"])
    assert ns.log_timestamps and ns.jobs_allow_commands and not ns.help
    assert options.parse(["-hh"]).help and options.parse(["--help"]).help
    assert ns.services == [] and ns.tunnelproxy == "localproxy" and ns.fleetprov is None


def test_keepalive_range_ends_are_taken():
    for value in ("1", "30", "1200"):
        assert options.parse(BASE + ["--keepalive=" + value]).keepalive == int(value)


def test_missing_directories_are_fine(tmp_path):
    # Action directories are created when missing; only a non-directory is an error.
    ns = options.parse(BASE + ["--messages=%s" % (tmp_path / "new" / "deep"),
                               "--commands=%s" % (tmp_path / "cmds")])
    assert len(ns.messages) == 1 and ns.commands


def test_option_takes_separate_value_too():
    ns = options.parse(["--clientid", "c", "--cacert", "ca", "--certstore", "s",
                        "--keepalive", "30"])
    assert (ns.clientid, ns.keepalive) == ("c", 30)


def test_help_and_version():
    helped = run(["--help"])
    assert helped.returncode == 0 and "--certstore" in helped.stdout
    version = run(["--version"])
    assert version.returncode == 0 and version.stdout.startswith("chariotd ")


def test_per_directory_options_match_by_resolved_path(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    ns = options.parse(BASE + ["--messages=%s/" % a, "--messages=%s" % b,
                               "--default-message-concurrency=3",
                               "--message-concurrency=%s:7" % a,
                               "--message-topic-prefix=%s/:pre/" % b,
                               "--message-order=%s:newest-first" % a])
    by_path = {md.path.rstrip("/"): md for md in ns.messages}
    assert by_path[str(a)].concurrency == 7 and by_path[str(b)].concurrency == 3
    assert by_path[str(a)].topic_prefix == "" and by_path[str(b)].topic_prefix == "pre/"
    assert by_path[str(a)].order == "newest-first" and by_path[str(b)].order == "lexical"


def test_directory_letterhead_replaces_default(tmp_path):
    ns = options.parse(BASE + ["--messages=%s" % tmp_path, "--messages=/other",
                               "--default-letterhead-file=/lh.json",
                               "--letterhead-generator=%s:gen" % tmp_path])
    mine, other = ns.messages
    assert (mine.letterhead_file, mine.letterhead_generator) == (None, "gen")
    assert (other.letterhead_file, other.letterhead_generator) == ("/lh.json", None)


def test_split_at_first_colon_and_named_shadows():
    ns = options.parse(BASE + ["--services=Gw1/network:/etc/shadow.d:x",
                               "--subscribe-exec=a/b:echo x:y",
                               "--tunnelmappings=Gw1:SSH=22,HTTP=80"])
    assert ns.services == [("Gw1/network", "/etc/shadow.d:x")]
    assert ns.subscribe_exec == [("a/b", "echo x:y")]
    assert ns.tunnelmappings == {"Gw1": {"SSH": "22", "HTTP": "80"}}


OLD_PYTHONS = sorted(glob.glob("/root/.pyenv/versions/[23].[0-8].*/bin/python")
                     + glob.glob(os.path.expanduser("~/.pyenv/versions/[23].[0-8].*/bin/python")))


def _one_line_exit_1(python, *args):
    proc = subprocess.run([python, CHARIOTD] + list(args), capture_output=True, text=True,
                          timeout=20)
    assert proc.returncode == 1, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert proc.stdout == ""
    return lines[0]


@pytest.mark.parametrize("python", sorted(set(OLD_PYTHONS)) or [None])
def test_python_older_than_3_9_is_one_line(python):
    if python is None:
        pytest.skip("no Python older than 3.9 here (pyenv install 3.6.15)")
    line = _one_line_exit_1(python, *BASE)
    assert "needs Python 3.9 or newer" in line and "apt-get install python3" in line
    assert "BR2_PACKAGE_PYTHON3" in line


def test_missing_paho_is_one_line(tmp_path):
    # A Python of our own version without paho-mqtt: a venv with nothing installed.
    venv.create(str(tmp_path / "bare"), with_pip=False)
    line = _one_line_exit_1(str(tmp_path / "bare" / "bin" / "python"), *BASE)
    assert "paho-mqtt module is missing" in line
    for how in ("pip install paho-mqtt", "apt-get install python3-paho-mqtt",
                "BR2_PACKAGE_PYTHON_PAHO_MQTT"):
        assert how in line
