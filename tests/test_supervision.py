"""The real chariotd under the real supervisors, with the project's own init files.

runit (Debian's runit package: runsvdir, runsv, sv, svlogd) runs
init/runit/chariotd/ against the test broker: it comes up, `sv restart`
restarts it, an exit after certificate rotation or fleet provisioning is
followed by a restart (after the finish script's pause), `sv down` stops it
cleanly with its last will published once, svlogd writes and rotates the log.
init/sysvinit/S90chariotd runs it under BusyBox's start-stop-daemon the same
way. Only paths are changed in the copied scripts (and syslog's logger, which
is not a supervisor, writes to a file). The rotation test takes about 25 s
(six refused connections with backoff, as chariotd does it); the rest a few
seconds each.
"""

import os
import re
import shutil
import signal
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
from emulator_fixture import TEMPLATE
from process import make_certstore, wait_until

ROOT = Path(__file__).resolve().parent.parent
INIT = ROOT / "init"
RUNIT = INIT / "runit" / "chariotd"
WILL = "dev/supervised/will"


def tool(name):
    for d in (os.environ.get("PATH", "").split(os.pathsep) + ["/usr/sbin", "/sbin", "/usr/bin"]):
        path = os.path.join(d, name)
        if os.access(path, os.X_OK):
            return path
    return None


def copy(src, dst, **replace):
    text = src.read_text()
    for old, new in replace.items():
        assert old in text, (src, old)
        text = text.replace(old, new)
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_text(text)
    dst.chmod(0o755)
    return dst


def write_defaults(path, pki, certstore, args, **extra):
    lines = ['CLIENTID="device-1"', 'CACERT="%s"' % pki.ca_cert, 'CERTSTORE="%s"' % certstore,
             'CHARIOTD_ARGS="--last-will-topic=%s --last-will-payload=gone %s"' % (WILL, args)]
    lines += ['%s="%s"' % kv for kv in extra.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def daemon_env():
    """The test's Python and paho for chariotd.py, however the scripts start it."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = sysconfig.get_paths()["purelib"]
    return env


def chariotd_command(bindir):
    """/usr/bin/chariotd for the scripts: this checkout's chariotd.py (exec, so
    the supervisor's signals reach it)."""
    bindir.mkdir(exist_ok=True)
    path = bindir / "chariotd"
    path.write_text('#!/bin/sh\nexec "%s" "%s" "$@"\n'
                    % (os.path.realpath(sys.executable), ROOT / "chariotd.py"))
    path.chmod(0o755)
    return path


# -- runit -----------------------------------------------------------------


class Runit:
    """runsvdir on a scratch service directory holding init/runit/chariotd."""

    def __init__(self, tmp_path, defaults):
        for name in ("runsvdir", "runsv", "sv", "svlogd"):
            if not tool(name):
                pytest.skip("no %s here (apt-get install runit)" % name)
        self.sv_bin = tool("sv")
        self.logdir = tmp_path / "log"
        self.svc = tmp_path / "sv" / "chariotd"
        command = chariotd_command(tmp_path / "bin")
        copy(RUNIT / "run", self.svc / "run", **{"/etc/default/chariotd": str(defaults),
                                                  "/usr/bin/chariotd": str(command)})
        copy(RUNIT / "finish", self.svc / "finish",
             **{"/etc/default/chariotd": str(defaults)})
        copy(RUNIT / "log" / "run", self.svc / "log" / "run",
             **{"/etc/default/chariotd": str(defaults)})
        self.service_dir = tmp_path / "service"
        self.service_dir.mkdir()
        (self.service_dir / "chariotd").symlink_to(self.svc)
        env = daemon_env()
        env["PATH"] = os.path.dirname(tool("svlogd")) + os.pathsep + env["PATH"]
        self.proc = subprocess.Popen([tool("runsvdir"), "-P", str(self.service_dir)],
                                     env=env, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     start_new_session=True)

    def sv(self, *args, check=True, service=None):
        r = subprocess.run([self.sv_bin] + list(args) + [str(service or self.svc)],
                           capture_output=True,
                           text=True, timeout=30)
        assert r.returncode == 0 or not check, r.stdout + r.stderr
        return r.stdout

    def pid(self):
        m = re.match(r"run: \S+: \(pid (\d+)\)", self.sv("status"))
        return int(m.group(1)) if m else None

    def log(self):
        current = self.logdir / "current"
        return current.read_text(errors="replace") if current.exists() else ""

    def count(self, text):
        return self.log().count(text)

    def wait_log(self, text, count=1, timeout=20):
        wait_until(lambda: self.count(text) >= count, timeout,
                   "%r %d time(s) in the svlogd log:\n%s" % (text, count, self.log()))

    def close(self):
        # runsvdir passes SIGHUP on to each runsv as SIGTERM: they stop their
        # service and log, and exit
        if self.proc.poll() is None:
            subprocess.run([self.sv_bin, "-w", "10", "down", str(self.svc)],
                           capture_output=True, timeout=30)
            os.killpg(self.proc.pid, signal.SIGHUP)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()


@pytest.fixture
def runit_factory(tmp_path, pki):
    made = []

    def make(certstore, args="", **extra):
        defaults = write_defaults(tmp_path / "default", pki, certstore, args,
                                  CHARIOTD_LOGDIR=str(tmp_path / "log"), **extra)
        made.append(Runit(tmp_path, defaults))
        return made[-1]

    yield make
    for r in made:
        r.close()


CONNECTED = "INFO: connected to localhost"


def test_runit_runs_restarts_and_stops_chariotd(runit_factory, certstore, observer):
    runit = runit_factory(certstore)
    runit.wait_log(CONNECTED)
    first = runit.pid()
    assert first
    # svlogd's own config, written by log/run, and its UTC timestamps
    assert (runit.logdir / "config").read_text() == "s100000\nn5\n"
    assert re.match(r"\d{4}-\d\d-\d\d_\d\d:\d\d:\d\d\.\d+ ", runit.log())

    runit.sv("restart")
    runit.wait_log(CONNECTED, 2)
    assert runit.pid() not in (None, first)
    assert runit.count("finish: chariotd exited with status 0: starting it again") == 1

    runit.sv("-w", "15", "down")
    assert runit.sv("status").startswith("down: ")
    # a clean stop each time: the last will of the restart, and of the stop
    observer.wait_topic(WILL, 2)
    assert [m.payload for m in observer.on(WILL)] == [b"gone", b"gone"]
    assert runit.count("finish: chariotd exited with status 0") == 2
    # nothing restarted it
    assert runit.count(CONNECTED) == 2


def test_svlogd_rotates_the_log(runit_factory, certstore):
    runit = runit_factory(certstore)
    runit.wait_log(CONNECTED)
    # svlogd rotates `current` on ALRM: the old log becomes an @<stamp>.s file
    runit.sv("alarm", service=runit.svc / "log")
    wait_until(lambda: list(runit.logdir.glob("@*.s")), 10, "a rotated log file")
    (old,) = runit.logdir.glob("@*.s")
    assert CONNECTED in old.read_text()
    # and goes on writing into a new `current`
    runit.sv("restart")
    runit.wait_log(CONNECTED)
    assert runit.count("finish: chariotd exited with status 0") == 1, (
        runit.log(), {p.name: p.read_text() for p in runit.logdir.iterdir()})
    assert "finish:" not in old.read_text()


def test_runit_restarts_after_certificate_rotation(runit_factory, tmp_path, pki, rogue_pki,
                                                   broker):
    store = make_certstore(str(tmp_path / "store"), "localhost:%d" % broker.tls_port,
                           [("good",) + pki.issue("device-1"),
                            ("bad",) + rogue_pki.issue("device-1-rogue")])
    os.symlink("bad", os.path.join(store, "preferred"))
    runit = runit_factory(store, CHARIOTD_RESTART_PAUSE="1")
    runit.wait_log("rotated preferred certificate", timeout=60)
    runit.wait_log(CONNECTED, timeout=30)
    log = runit.log()
    exited = re.search(r"finish: chariotd exited with status (\d+): starting it again in 1 s",
                       log)
    assert exited and exited.group(1) != "0", log
    # in order: rotation, the finish script's pause, the new start on the good one
    assert log.index("rotated preferred") < exited.start() < log.index(CONNECTED)
    assert os.readlink(os.path.join(store, "preferred")) == "good"


def test_runit_restarts_after_fleet_provisioning(runit_factory, tmp_path, pki, broker,
                                                 emulator):
    import json

    endpoint = "localhost:%d" % broker.tls_port
    claimstore = make_certstore(str(tmp_path / "claimstore"), endpoint,
                                [("claim",) + pki.issue("claim")])
    certstore = make_certstore(str(tmp_path / "certstore"), endpoint, [])
    fleetprov = tmp_path / "fleetprov.json"
    fleetprov.write_text(json.dumps({"claimstore": claimstore, "template": TEMPLATE,
                                     "parameters": {"SerialNumber": "7"}}))
    runit = runit_factory(certstore, "--fleetprov=%s" % fleetprov)
    runit.wait_log("finish: chariotd exited with status 0: starting it again", timeout=30)
    # the claim connection, then the restart's with the new certificate
    runit.wait_log(CONNECTED, 2, timeout=20)
    log = runit.log()
    assert log.index("finish: chariotd exited with status 0") < log.rindex(CONNECTED)
    assert os.path.islink(os.path.join(certstore, "preferred"))
    assert "Gw_7" in emulator.things


# -- sysvinit under BusyBox start-stop-daemon --------------------------------


@pytest.fixture
def sysv(tmp_path, pki, certstore):
    busybox = shutil.which("busybox")
    if not busybox or subprocess.run([busybox, "start-stop-daemon", "--help"],
                                     capture_output=True).returncode not in (0, 1):
        pytest.skip("no BusyBox with start-stop-daemon here")
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "start-stop-daemon").symlink_to(busybox)
    # syslog is not what is tested: logger writes to a file
    (bindir / "logger").write_text('#!/bin/sh\ncat >>"%s/syslog"\n' % tmp_path)
    (bindir / "logger").chmod(0o755)
    pidfile = tmp_path / "chariotd.pid"
    defaults = write_defaults(tmp_path / "default", pki, certstore, "",
                              PIDFILE=str(pidfile), PYTHON=os.path.realpath(sys.executable),
                              CHARIOTD_PY=str(ROOT / "chariotd.py"))
    script = copy(INIT / "sysvinit" / "S90chariotd", tmp_path / "S90chariotd", **{
        '"/etc/default/$DAEMON"': '"%s"' % defaults,
        "/etc/inittab": str(tmp_path / "inittab")})
    env = daemon_env()
    env["PATH"] = "%s:%s" % (bindir, env["PATH"])
    syslog = tmp_path / "syslog"

    def run(action):
        return subprocess.run([busybox, "sh", str(script), action], env=env,
                              capture_output=True, text=True, timeout=30)

    run.syslog = lambda: syslog.read_text() if syslog.exists() else ""
    run.pidfile = pidfile
    yield run
    if pidfile.exists():
        try:
            pid = int(pidfile.read_text())
            with open("/proc/%d/cmdline" % pid, "rb") as f:
                if b"chariotd.py" in f.read():
                    os.kill(pid, signal.SIGKILL)
        except (OSError, ValueError):
            pass


def test_sysv_script_under_busybox_start_stop_daemon(sysv, observer):
    r = sysv("start")
    assert (r.returncode, r.stdout) == (0, "Starting chariotd: OK\n"), r.stdout + r.stderr
    wait_until(lambda: CONNECTED in sysv.syslog(), 15, "chariotd to connect")
    pid = int(sysv.pidfile.read_text())
    assert sysv("status").stdout == "chariotd is running\n"
    assert sysv("start").stdout == "Starting chariotd: already running\n"
    assert sysv("reload").stdout == "Reloading chariotd: OK\n"

    r = sysv("restart")
    assert r.stdout == "Stopping chariotd: OK\nStarting chariotd: OK\n", r.stdout + r.stderr
    wait_until(lambda: sysv.syslog().count(CONNECTED) == 2, 15, "chariotd to connect again")
    assert int(sysv.pidfile.read_text()) != pid
    assert not os.path.exists("/proc/%d" % pid) or \
        b"chariotd.py" not in Path("/proc/%d/cmdline" % pid).read_bytes()

    r = sysv("stop")
    assert r.stdout == "Stopping chariotd: OK\n", r.stdout + r.stderr
    assert not sysv.pidfile.exists()
    assert sysv("status").returncode == 3
    observer.wait_topic(WILL, 2)
    assert [m.payload for m in observer.on(WILL)] == [b"gone", b"gone"]
