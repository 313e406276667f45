"""The supervisor files in init/ and the Buildroot package in buildroot-package/.

Syntax under every /bin/sh a device may have, the scripts' behaviour with a
stand-in chariotd (so what reaches chariotd's command line is what
/etc/default/chariotd says), and the install paths of the Buildroot package.
No daemon, no network: a few seconds in all.
"""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lib import options

ROOT = Path(__file__).resolve().parent.parent
INIT = ROOT / "init"
RUN = INIT / "runit" / "chariotd" / "run"
FINISH = INIT / "runit" / "chariotd" / "finish"
LOG_RUN = INIT / "runit" / "chariotd" / "log" / "run"
SYSV = INIT / "sysvinit" / "S90chariotd"
DEFAULTS = INIT / "default" / "chariotd"
UNIT = INIT / "systemd" / "chariotd.service"
PKG = ROOT / "buildroot-package"
MK = PKG / "chariotd" / "chariotd.mk"

SCRIPTS = [RUN, FINISH, LOG_RUN, SYSV, DEFAULTS]
SHELLS = {"sh": ["sh"], "dash": ["dash"], "busybox sh": ["busybox", "sh"]}

# The options the example settings give, once uncommented.
EXAMPLE_ARGS = [
    "--services=Gw1:/etc/chariotd/services",
    "--updates=Gw1:/data/chariotd/updates",
    "--messages=/data/chariotd/messages",
    "--commands=/data/chariotd/commands",
    "--subscribe-exec=cmd/Gw1/reboot:/sbin/reboot -d 5",
]


def shell(name):
    argv = SHELLS[name]
    if not shutil.which(argv[0]):
        pytest.skip("%s is not installed" % argv[0])
    if name == "sh":
        # the usual case: sh is one of the others, tested under its own name
        real = os.path.realpath(shutil.which("sh"))
        for other in ("dash", "busybox"):
            if shutil.which(other) and os.path.realpath(shutil.which(other)) == real:
                pytest.skip("sh is %s here" % other)
    if name == "busybox sh":
        probe = subprocess.run(argv + ["-c", "true"], capture_output=True)
        if probe.returncode:
            pytest.skip("this busybox has no sh applet")
    return argv


def rel(path):
    return str(path.relative_to(ROOT))


@pytest.mark.parametrize("name", SHELLS)
@pytest.mark.parametrize("script", SCRIPTS, ids=rel)
def test_syntax(name, script):
    r = subprocess.run(shell(name) + ["-n", str(script)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_shellcheck():
    if not shutil.which("shellcheck"):
        pytest.skip("shellcheck is not installed")
    r = subprocess.run(["shellcheck", "-s", "sh"] + [str(s) for s in SCRIPTS[:-1]],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout


def test_defaults_file_reads_the_same_in_sh_and_systemd():
    """Only NAME="value" lines, no $ ` or \\ but a line-ending \\ (the common
    ground of sh and systemd's EnvironmentFile parser)."""
    text = DEFAULTS.read_text()
    logical = re.sub(r"\\\n", " ", text).splitlines()
    for line in logical:
        if not line.strip() or line.startswith("#"):
            continue
        assert re.fullmatch(r'[A-Z_]+="[^"$`\\]*"', line), line
    names = set(re.findall(r"^([A-Z_]+)=", text, re.M))
    assert {"CLIENTID", "CACERT", "CERTSTORE", "CHARIOTD_ARGS", "CHARIOTD_LOGDIR"} <= names


def example_defaults(tmp_path, clientid="Gw1"):
    """The shipped settings with the commented CHARIOTD_ARGS example turned on."""
    lines = []
    for line in DEFAULTS.read_text().splitlines():
        if line.startswith("#CHARIOTD_ARGS=") or line.startswith("# --") \
                or line.startswith("# '--"):
            line = line[1:]
        lines.append(line)
    text = "\n".join(lines) + "\n"
    text = text.replace('CLIENTID=""', 'CLIENTID="%s"' % clientid)
    path = tmp_path / "default"
    path.write_text(text)
    return path


def fake_chariotd(tmp_path, exit_status=None):
    """A stand-in for chariotd.py: records its argv and the signals it gets."""
    path = tmp_path / "fake-chariotd"
    path.write_text("""#!%s
import json, signal, sys, time
out = %r
def note(sig, frame):
    with open(out + "/signals", "a") as f:
        f.write(signal.Signals(sig).name + "\\n")
    if sig == signal.SIGTERM:
        sys.exit(0)
signal.signal(signal.SIGHUP, note)
signal.signal(signal.SIGTERM, note)
with open(out + "/argv.json", "w") as f:
    json.dump(sys.argv[1:], f)
if %r is not None:
    sys.exit(%r)
sys.stderr.write("fake chariotd up\\n")
sys.stderr.flush()
for _ in range(600):
    time.sleep(0.1)
""" % (os.path.realpath(sys.executable), str(tmp_path), exit_status, exit_status))
    path.chmod(0o755)
    return path


def copy_script(src, dst, **replace):
    text = src.read_text()
    for old, new in replace.items():
        assert old in text, old
        text = text.replace(old, new)
    dst.write_text(text)
    return dst


def fake_tool(bindir, name, body):
    bindir.mkdir(exist_ok=True)
    path = bindir / name
    path.write_text("#!/bin/sh\n" + body + "\n")
    path.chmod(0o755)


def env_with_path(bindir):
    env = dict(os.environ)
    env["PATH"] = "%s:%s" % (bindir, env.get("PATH", "/usr/bin:/bin"))
    return env


# -- runit ---------------------------------------------------------------


def runit_run(tmp_path, name, defaults, conf=None):
    svc = tmp_path / "sv"
    svc.mkdir()
    run = copy_script(RUN, svc / "run", **{
        "/etc/default/chariotd": str(defaults),
        "/usr/bin/chariotd": str(fake_chariotd(tmp_path, exit_status=0))})
    if conf is not None:
        (svc / "conf").write_text(conf)
    return subprocess.run(shell(name) + [str(run)], cwd=str(svc), capture_output=True,
                          text=True, timeout=10)


def recorded_argv(tmp_path):
    return json.loads((tmp_path / "argv.json").read_text())


@pytest.mark.parametrize("name", SHELLS)
def test_runit_run_passes_the_settings(tmp_path, name):
    r = runit_run(tmp_path, name, example_defaults(tmp_path))
    assert r.returncode == 0, r.stdout + r.stderr
    assert recorded_argv(tmp_path) == [
        "--clientid=Gw1", "--cacert=/etc/chariotd/AmazonRootCA1.pem",
        "--certstore=/data/chariotd/certstore"] + EXAMPLE_ARGS


@pytest.mark.parametrize("name", SHELLS)
def test_runit_conf_overrides_defaults(tmp_path, name):
    conf = 'CLIENTID="Gw2"\nCHARIOTD_ARGS="--keepalive=60"\n'
    r = runit_run(tmp_path, name, example_defaults(tmp_path), conf)
    assert r.returncode == 0, r.stdout + r.stderr
    argv = recorded_argv(tmp_path)
    assert argv[0] == "--clientid=Gw2" and argv[3:] == ["--keepalive=60"]


@pytest.mark.parametrize("name", SHELLS)
def test_runit_unbalanced_quote_is_status_2(tmp_path, name):
    r = runit_run(tmp_path, name, example_defaults(tmp_path), "CHARIOTD_ARGS=\"'--x\"\n")
    assert r.returncode == 2
    assert not (tmp_path / "argv.json").exists()


def test_runit_finish_pauses_after_a_failure(tmp_path):
    bindir = tmp_path / "bin"
    fake_tool(bindir, "sleep", 'echo "$@" >>"%s/slept"' % tmp_path)
    env = env_with_path(bindir)
    finish = copy_script(FINISH, tmp_path / "finish",
                         **{"/etc/default/chariotd": str(tmp_path / "default")})
    for status in ("0", "1", "-1", "2"):
        r = subprocess.run(["sh", str(finish), status, "0"], env=env, timeout=10,
                           capture_output=True, text=True)
        assert r.returncode == 0
        assert r.stdout.startswith("finish: chariotd exited with status %s:" % status)
    assert (tmp_path / "slept").read_text() == "5\n5\n60\n"
    (tmp_path / "default").write_text('CHARIOTD_RESTART_PAUSE="1"\n')
    (tmp_path / "slept").unlink()
    subprocess.run(["sh", str(finish), "1", "0"], env=env, timeout=10, capture_output=True)
    assert (tmp_path / "slept").read_text() == "1\n"


def test_runit_log_run(tmp_path):
    bindir = tmp_path / "bin"
    fake_tool(bindir, "svlogd", 'echo "$@" >"%s/svlogd"' % tmp_path)
    defaults = tmp_path / "default"
    defaults.write_text('CHARIOTD_LOGDIR="%s/log"\n' % tmp_path)
    log_run = copy_script(LOG_RUN, tmp_path / "log-run",
                          **{"/etc/default/chariotd": str(defaults)})
    r = subprocess.run(["sh", str(log_run)], env=env_with_path(bindir), timeout=10)
    assert r.returncode == 0
    assert (tmp_path / "svlogd").read_text() == "-tt %s/log\n" % tmp_path
    assert (tmp_path / "log" / "config").read_text() == "s100000\nn5\n"


# -- sysvinit ------------------------------------------------------------


def start_stop_daemons():
    found = []
    if shutil.which("start-stop-daemon") or os.path.exists("/usr/sbin/start-stop-daemon") \
            or os.path.exists("/sbin/start-stop-daemon"):
        found.append("debian")
    if shutil.which("busybox") and subprocess.run(
            ["busybox", "start-stop-daemon", "--help"], capture_output=True).returncode in (0, 1):
        found.append("busybox")
    return found


@pytest.fixture
def sysv(tmp_path, request):
    """S90chariotd pointed at a stand-in chariotd; yields a function running it."""
    impl = request.param
    if impl not in start_stop_daemons():
        pytest.skip("no %s start-stop-daemon here" % impl)
    bindir = tmp_path / "bin"
    fake_tool(bindir, "logger", 'cat >>"%s/syslog"' % tmp_path)
    if impl == "busybox":
        (bindir / "start-stop-daemon").symlink_to(shutil.which("busybox"))
    pidfile = tmp_path / "chariotd.pid"
    defaults = example_defaults(tmp_path)
    with defaults.open("a") as f:
        f.write('PIDFILE="%s"\nPYTHON="%s"\nCHARIOTD_PY="%s"\n'
                % (pidfile, os.path.realpath(sys.executable), fake_chariotd(tmp_path)))
    script = copy_script(SYSV, tmp_path / "S90chariotd", **{
        '"/etc/default/$DAEMON"': '"%s"' % defaults,
        "/etc/inittab": str(tmp_path / "inittab"),
        # the stand-in starts in a blink; no need to wait a second for it
        "\tsleep 1\n": "\tsleep 0.5\n"})
    env = env_with_path(bindir)
    env["PATH"] += ":/usr/sbin:/sbin"
    # a BusyBox device runs the script with BusyBox's own sh too
    argv = (shell("busybox sh") if impl == "busybox" else ["sh"]) + [str(script)]

    def run(action):
        return subprocess.run(argv + [action], env=env, capture_output=True, text=True,
                              timeout=20)

    yield run
    # a test that failed half-way may leave the stand-in running: end it,
    # and only it (the pid may have been reused since)
    try:
        pid = int(pidfile.read_text())
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            if str(tmp_path).encode() in f.read():
                os.kill(pid, signal.SIGKILL)
    except (OSError, ValueError):
        pass


def wait_for(predicate, timeout=3.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


@pytest.mark.parametrize("sysv", ["debian", "busybox"], indirect=True)
def test_sysv_start_reload_stop(sysv, tmp_path):
    r = sysv("start")
    assert (r.returncode, r.stdout) == (0, "Starting chariotd: OK\n"), r.stderr
    assert wait_for((tmp_path / "argv.json").exists)
    argv = recorded_argv(tmp_path)
    assert argv[:1] == ["--clientid=Gw1"] and argv[3:] == EXAMPLE_ARGS
    assert sysv("status").returncode == 0
    assert sysv("start").stdout == "Starting chariotd: already running\n"

    r = sysv("reload")
    assert (r.returncode, r.stdout) == (0, "Reloading chariotd: OK\n")
    signals = tmp_path / "signals"
    assert wait_for(lambda: signals.exists() and "SIGHUP" in signals.read_text())

    r = sysv("stop")
    assert (r.returncode, r.stdout) == (0, "Stopping chariotd: OK\n"), r.stderr
    assert signals.read_text() == "SIGHUP\nSIGTERM\n"
    assert not (tmp_path / "chariotd.pid").exists()
    assert sysv("status").returncode == 3
    # chariotd's stderr went to syslog through logger
    syslog = tmp_path / "syslog"
    assert wait_for(lambda: syslog.exists() and "fake chariotd up" in syslog.read_text())


@pytest.mark.parametrize("sysv", ["debian"], indirect=True)
def test_sysv_start_reports_a_daemon_that_exits(sysv, tmp_path):
    (tmp_path / "fake-chariotd").write_text("import sys\nsys.exit(2)\n")
    r = sysv("start")
    assert (r.returncode, r.stdout) == (1, "Starting chariotd: FAIL (see syslog)\n")


@pytest.mark.parametrize("sysv", ["debian"], indirect=True)
def test_sysv_start_leaves_chariotd_to_inittab(sysv, tmp_path):
    (tmp_path / "inittab").write_text("::respawn:/etc/init.d/S90chariotd foreground\n")
    r = sysv("start")
    assert r.stdout == "Starting chariotd: left to init (inittab)\n"
    assert not (tmp_path / "argv.json").exists()


# -- systemd -------------------------------------------------------------


def unit_settings():
    settings = {}
    for line in UNIT.read_text().splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            settings.setdefault(key, []).append(value)
    return settings


def test_systemd_unit():
    s = unit_settings()
    assert s["EnvironmentFile"] == ["-/etc/default/chariotd"]
    assert s["ExecStart"] == ["/usr/bin/chariotd --clientid=${CLIENTID} --cacert=${CACERT} "
                              "--certstore=${CERTSTORE} $CHARIOTD_ARGS"]
    assert s["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert s["Restart"] == ["always"]
    assert s["StartLimitIntervalSec"] == ["0"]


def test_systemd_analyze_verify(tmp_path):
    if not shutil.which("systemd-analyze"):
        pytest.skip("systemd-analyze is not installed")
    # verify wants ExecStart's program to exist; the rest is checked as is
    unit = copy_script(UNIT, tmp_path / "chariotd.service", **{"/usr/bin/chariotd": "/bin/true"})
    r = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True,
                       timeout=30)
    assert r.returncode == 0, r.stderr
    assert "chariotd.service" not in r.stdout + r.stderr


# -- Buildroot -----------------------------------------------------------


def test_buildroot_external_tree():
    desc = (PKG / "external.desc").read_text()
    assert re.search(r"^name: CHARIOTD$", desc, re.M)
    assert '"$BR2_EXTERNAL_CHARIOTD_PATH/chariotd/Config.in"' in (PKG / "Config.in").read_text()
    assert "$(BR2_EXTERNAL_CHARIOTD_PATH)/chariotd/chariotd.mk" in \
        (PKG / "external.mk").read_text()


def test_buildroot_config_in():
    text = (PKG / "chariotd" / "Config.in").read_text()
    assert "config BR2_PACKAGE_CHARIOTD\n" in text
    assert "\tdepends on BR2_PACKAGE_PYTHON3\n" in text
    assert "\tselect BR2_PACKAGE_PYTHON_PAHO_MQTT" in text
    assert "\tselect BR2_PACKAGE_PYTHON3_SSL" in text


def test_buildroot_mk_installs_to_the_right_places():
    mk = MK.read_text()
    assert re.search(r"^CHARIOTD_VERSION = (\S+)$", mk, re.M).group(1) == options.VERSION
    for needle in (
        "$(TARGET_DIR)/usr/lib/chariotd/chariotd.py",
        "cp -dpfr $(@D)/lib $(TARGET_DIR)/usr/lib/chariotd/lib",
        "ln -sf ../lib/chariotd/chariotd.py $(TARGET_DIR)/usr/bin/chariotd",
        "$(TARGET_DIR)/etc/default/chariotd",
        "$(TARGET_DIR)/etc/init.d/S90chariotd",
        "$(TARGET_DIR)/usr/lib/systemd/system/chariotd.service",
        "$(TARGET_DIR)/etc/sv/chariotd/run",
        "$(TARGET_DIR)/etc/sv/chariotd/finish",
        "$(TARGET_DIR)/etc/sv/chariotd/log/run",
        "--exclude=/tests", "--exclude=/emulator",
        "define CHARIOTD_INSTALL_INIT_SYSV", "define CHARIOTD_INSTALL_INIT_SYSTEMD",
    ):
        assert needle in mk, needle
    # every file the package takes from the source tree is there
    for src in re.findall(r"\$\(@D\)/(\S+)", mk):
        assert (ROOT / src).exists(), src


# The package's install commands run as Buildroot would run them: GNU make
# reads chariotd.mk with the variables Buildroot sets (generic-package is
# left empty), and runs CHARIOTD_INSTALL_TARGET_CMDS, the init system's
# commands and the post-install hooks into a scratch TARGET_DIR.
BUILDROOT_STUB = """\
INSTALL = install
TARGET_DIR = {target}
HOST_DIR = {host}
CHARIOTD_PKGDIR = {pkgdir}/
@D = {src}
{config}
generic-package =
include {mk}
install:
\t$(CHARIOTD_INSTALL_TARGET_CMDS)
\t$(CHARIOTD_INSTALL_INIT_SYSV)
\t$(foreach hook,$(CHARIOTD_POST_INSTALL_TARGET_HOOKS),$($(hook))$(sep))
define sep


endef
"""


def buildroot_install(tmp_path, config):
    target, host = tmp_path / "target", tmp_path / "host"
    (host / "bin").mkdir(parents=True)
    (host / "bin" / "python3").symlink_to(sys.executable)
    stub = tmp_path / "Makefile"
    stub.write_text(BUILDROOT_STUB.format(
        target=target, host=host, pkgdir=MK.parent, src=ROOT, mk=MK,
        config="\n".join("%s = y" % name for name in config)))
    r = subprocess.run(["make", "-s", "-f", str(stub), "install"], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    return {str(p.relative_to(target)) for p in target.rglob("*")
            if p.is_file() or p.is_symlink()}


def test_buildroot_installs_the_daemon_and_by_default_the_job_handlers(tmp_path):
    got = buildroot_install(tmp_path, ["BR2_PACKAGE_CHARIOTD_JOB_HANDLERS"])
    jobs = {"usr/share/chariotd/jobs/" + p.name for p in (ROOT / "examples" / "jobs").iterdir()}
    assert jobs and jobs <= got
    assert {"usr/lib/chariotd/chariotd.py", "usr/bin/chariotd", "etc/default/chariotd",
            "etc/init.d/S90chariotd", "usr/lib/chariotd/lib/daemon.py"} <= got
    assert [f for f in got if f.endswith(".pyc")]
    assert "default y" in (PKG / "chariotd" / "Config.in").read_text().split(
        "config BR2_PACKAGE_CHARIOTD_JOB_HANDLERS")[1].split("config ")[0]


def test_buildroot_leaves_the_job_handlers_out_when_told(tmp_path):
    got = buildroot_install(tmp_path, [])
    assert "usr/bin/chariotd" in got
    assert not [f for f in got if f.startswith("usr/share/chariotd")]
