"""AWS's managed job templates run unchanged with the handlers of examples/jobs.

Each template's document (tests/jobs_templates/) is filled in as AWS fills
it in when a job is created from the template, and run by the real daemon
against the emulator. `sv` and `opkg` are stand-ins on PATH that record
their arguments; the download comes from a web server on 127.0.0.1.
"""

import hashlib
import http.server
import json
import os
import re
import shutil
import signal
import subprocess
import threading

import pytest
from jobhelpers import THING, finished
from process import wait_until

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLES = os.path.join(ROOT, "examples", "jobs")
TEMPLATES = os.path.join(ROOT, "tests", "jobs_templates")
RECORDER = """#!/bin/sh
printf '%%s\\n' "$*" >>%s/%s.calls
"""


def template(name, **parameters):
    """The template's document with ${aws:iot:parameter:X} filled in ("" when not given)."""
    with open(os.path.join(TEMPLATES, name + ".json")) as f:
        text = f.read()
    return json.loads(re.sub(r"\$\{aws:iot:parameter:([A-Za-z0-9]+)\}",
                             lambda m: parameters.get(m.group(1), ""), text))


@pytest.fixture
def device(tmp_path):
    """A copy of examples/jobs, and a bin directory of recording stand-ins."""
    handlers = str(tmp_path / "jobs")
    shutil.copytree(EXAMPLES, handlers)
    bindir = tmp_path / "bin"
    bindir.mkdir()
    for program in ("sv", "opkg"):
        (bindir / program).write_text(RECORDER % (bindir, program))
        (bindir / program).chmod(0o755)
    return handlers, str(bindir)


def calls(bindir, program):
    path = os.path.join(bindir, program + ".calls")
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return f.read().splitlines()


def start(daemon_factory, certstore, device, *options):
    handlers, bindir = device
    d = daemon_factory("--jobs=%s:%s" % (THING, handlers), *options, certstore=certstore,
                       env={"PATH": bindir + ":" + os.environ["PATH"]})
    d.wait_log("connected to")
    return d


def test_every_template_names_a_shipped_handler():
    names = sorted(os.listdir(TEMPLATES))
    assert len([n for n in names if n.endswith(".json")]) == 7
    for name in names:
        if name.endswith(".json"):
            handler = template(name[:-5])["steps"][0]["action"]["input"]["handler"]
            assert os.access(os.path.join(EXAMPLES, handler), os.X_OK), handler


def test_the_handlers_pass_shellcheck():
    if not shutil.which("shellcheck"):
        pytest.skip("no shellcheck (make tools installs it)")
    scripts = sorted(os.path.join(EXAMPLES, n) for n in os.listdir(EXAMPLES) if n.endswith(".sh"))
    subprocess.run(["shellcheck", "-s", "sh"] + scripts, check=True)


@pytest.mark.parametrize("name, verb", [("AWS-Start-Application", "start"),
                                        ("AWS-Stop-Application", "stop"),
                                        ("AWS-Restart-Application", "restart")])
def test_service_templates(emulator, certstore, daemon_factory, device, name, verb):
    start(daemon_factory, certstore, device)
    emulator.queue_job(THING, "svc", template(name, services="ntpd dropbear"))
    e = finished(emulator, "svc")
    assert e["status"] == "SUCCEEDED", e
    assert calls(device[1], "sv") == ["%s ntpd" % verb, "%s dropbear" % verb]


def test_a_bad_service_name_fails(emulator, certstore, daemon_factory, device):
    start(daemon_factory, certstore, device)
    emulator.queue_job(THING, "svc", template("AWS-Stop-Application", services="-x ok"))
    e = finished(emulator, "svc")
    assert e["status"] == "FAILED"
    assert "not a service name: -x" in e["statusDetails"]["stderr"]
    assert calls(device[1], "sv") == ["stop ok"]


@pytest.mark.parametrize("name, verb", [("AWS-Install-Application", "install"),
                                        ("AWS-Remove-Application", "remove")])
def test_package_templates(emulator, certstore, daemon_factory, device, name, verb):
    start(daemon_factory, certstore, device)
    emulator.queue_job(THING, "pkg", template(name, packages="lftp dos2unix"))
    e = finished(emulator, "pkg")
    assert e["status"] == "SUCCEEDED", e
    assert calls(device[1], "opkg") == ["%s lftp dos2unix" % verb]


def test_packages_on_a_read_only_root_fail_with_a_clear_reason(
        emulator, certstore, daemon_factory, device, tmp_path):
    if os.geteuid() != 0:
        pytest.skip("needs root to mount a read-only tmpfs")
    mountpoint = tmp_path / "rootfs"
    mountpoint.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "cdj-rootfs", str(mountpoint)],
                   check=True)
    try:
        with open(os.path.join(device[0], "packages.root"), "w") as f:
            f.write(str(mountpoint))
        start(daemon_factory, certstore, device)
        emulator.queue_job(THING, "pkg", template("AWS-Install-Application", packages="lftp"))
        e = finished(emulator, "pkg")
        assert e["status"] == "FAILED"
        assert "read-only" in e["statusDetails"]["stderr"]
        assert calls(device[1], "opkg") == []
    finally:
        subprocess.run(["umount", str(mountpoint)], check=True)


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def web(tmp_path):
    root = tmp_path / "www"
    root.mkdir()
    (root / "firmware.bin").write_bytes(b"\x7fELF" + os.urandom(5000))
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), lambda *a: _Quiet(*a, directory=str(root)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield "http://127.0.0.1:%d/" % server.server_address[1], root
    server.shutdown()
    server.server_close()


def test_download_file(emulator, certstore, daemon_factory, device, web, tmp_path):
    base, root = web
    start(daemon_factory, certstore, device)
    target = tmp_path / "data" / "firmware.bin"
    emulator.queue_job(THING, "dl", template("AWS-Download-File",
                                             downloadUrl=base + "firmware.bin",
                                             filePath=str(target)))
    e = finished(emulator, "dl")
    assert e["status"] == "SUCCEEDED", e
    assert target.read_bytes() == (root / "firmware.bin").read_bytes()
    # a missing file fails and leaves nothing behind
    emulator.queue_job(THING, "dl2", template("AWS-Download-File", downloadUrl=base + "nope",
                                              filePath=str(tmp_path / "data" / "nope")))
    e = finished(emulator, "dl2")
    assert e["status"] == "FAILED" and "404" in e["statusDetails"]["stderr"]
    assert sorted(os.listdir(tmp_path / "data")) == ["firmware.bin"]


def test_download_file_checks_a_sha256(emulator, certstore, daemon_factory, device, web,
                                       tmp_path):
    base, root = web
    start(daemon_factory, certstore, device)
    good = hashlib.sha256((root / "firmware.bin").read_bytes()).hexdigest()
    document = template("AWS-Download-File", downloadUrl=base + "firmware.bin",
                        filePath=str(tmp_path / "fw"))
    document["steps"][0]["action"]["input"]["args"].append("0" * 64)
    emulator.queue_job(THING, "bad-sum", document)
    e = finished(emulator, "bad-sum")
    assert e["status"] == "FAILED" and "SHA-256 mismatch" in e["statusDetails"]["stderr"]
    assert not (tmp_path / "fw").exists()
    document["steps"][0]["action"]["input"]["args"][-1] = good
    emulator.queue_job(THING, "good-sum", document)
    assert finished(emulator, "good-sum")["status"] == "SUCCEEDED"
    assert (tmp_path / "fw").exists()


def test_reboot_dry_run(emulator, certstore, daemon_factory, device):
    open(os.path.join(device[0], "reboot.dry-run"), "w").close()
    start(daemon_factory, certstore, device)
    emulator.queue_job(THING, "reboot", template("AWS-Reboot"))
    e = finished(emulator, "reboot")
    assert e["status"] == "SUCCEEDED", e


def test_reboot_resumes_after_the_restart(emulator, certstore, daemon_factory, device):
    with open(os.path.join(device[0], "reboot.dry-run"), "w") as f:
        f.write("wait")
    d = start(daemon_factory, certstore, device)
    emulator.queue_job(THING, "reboot", template("AWS-Reboot", runAsUser=""))
    wait_until(lambda: emulator.job_execution(THING, "reboot").get("statusDetails", {})
               .get("resumeAfterRestart"), 15, "reboot.sh to announce the reboot")
    pid = int(d.wait_log(r"step 'Reboot' started \(pid (\d+)\)").group(1))
    # The "reboot": chariotd and the handler die; the device comes back.
    d.kill()
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    d.start()
    e = finished(emulator, "reboot")
    assert e["status"] == "SUCCEEDED", e
    d.wait_log("asked to run again after a restart")
