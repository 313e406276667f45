#!/usr/bin/env python3
"""`make demo`: one device and one cloud app, a round trip through chariotd.

Everything runs on this machine, unprivileged, under a temporary directory
that is removed at the end: a throwaway CA (emulator.pki), mosquitto set up
like AWS IoT Core (emulator.broker), the IoT Core emulator standing in for
AWS and for the cloud application (emulator.cloud), and chariotd itself as
a process, run the way a supervisor runs it. The steps, each printed with
what it changed:

1. Fleet provisioning: chariotd starts with only a claim certificate, makes
   a key, has the emulator sign it (`"csr": true`, quick and independent of
   the machine's load, unlike the emulator's RSA key generation) and
   register the thing, exits 0; restarted with the same command line it
   connects with the new certificate.
2. The app sets desired state for the example services of examples/services
   (a SHELL `console` service, a JSON `ssh` service whose notify command
   installs authorized keys): both outfiles appear, the notify commands
   run, the shadow's reported state follows and desired is cleared.
3. The app switches the console off; the SHELL file changes.
4. A local update dropped into the --updates directory reaches reported.
5. A message dropped into the --messages spool reaches the app.
6. A backlog spooled while chariotd is stopped drains after its restart,
   the message with a priority first.
7. AWS IoT Jobs: the app queues a job from AWS's managed template
   AWS-Download-File for a file served over 127.0.0.1; chariotd runs
   examples/jobs/download-file.sh and the job SUCCEEDS.

The example definitions are copied into the temporary directory with their
device paths rewritten as examples/README.md describes. Every wait has a
deadline; on a failure the demo says what did not happen, shows
the end of chariotd's log and exits 1. Whatever happens, Ctrl-C included,
it stops chariotd, the emulator and mosquitto and removes the directory.
"""

import hashlib
import http.server
import json
import logging
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from emulator.broker import Broker  # noqa: E402
from emulator.cloud import Emulator  # noqa: E402
from emulator.pki import Pki  # noqa: E402
from emulator.shadow import ShadowError  # noqa: E402
from lib.certstore import CertStore  # noqa: E402
from lib.services import load_services  # noqa: E402

CHARIOTD = os.path.join(ROOT, "chariotd.py")
EXAMPLES = os.path.join(ROOT, "examples")
THING = "Gw_0042"  # what the template below makes of serial number 0042
TEMPLATE = "DemoGatewayTemplate"
TEMPLATES = {TEMPLATE: {
    "parameters": {"SerialNumber": {}},
    "thingName": "Gw_{SerialNumber}",
    "deviceConfiguration": {"site": "demo-lab"},
}}
ADMIN_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDemoKeyNotForUse admin@example.com"
CONSOLE_ON = {"enabled": True, "tty": "ttyS0", "baud": 115200}
FIRMWARE = {"version": "2.4.1", "built": "2026-11-20"}
TELEMETRY = "telemetry/" + THING
ALARM = "alarm/" + THING
WAIT = 10.0  # seconds any one thing may take
SHORT = 15  # characters of a certificate id shown

# examples/README.md: every device path starts with one of these prefixes.
# The getty restart becomes a line in a file, so that the demo can show it.
REWRITES = (
    ("/etc/chariotd", "{demo}"),
    ("/var/lib/chariotd", "{demo}/var"),
    ("/usr/share/chariotd", "{demo}/share"),
    ("/root/.ssh", "{demo}/ssh"),
    ("sv restart console-getty", "echo sv restart console-getty >>{demo}/sv.log"),
)
SAFE_PATH = re.compile(r"[A-Za-z0-9_./-]+")  # survives the rewrite into JS and JSON strings


class DemoFailed(Exception):
    """A step did not happen; the text says what."""


# ---- output ----------------------------------------------------------------

class Out:
    """Numbered steps, detail lines under them, paths shown relative to $DEMO."""

    def __init__(self):
        self.demo = None
        self.step = 0

    def short(self, text):
        return text.replace(self.demo, "$DEMO") if self.demo else text

    def title(self, text):
        self.step += 1
        print("\n%d. %s" % (self.step, self.short(text)), flush=True)

    def line(self, text):
        print("   " + self.short(text), flush=True)

    def block(self, text):
        for row in text.rstrip("\n").split("\n"):
            print("     | " + self.short(row), flush=True)


OUT = Out()


def compact(value):
    return json.dumps(value)


def by_key(section):
    """One line per top-level key, for a block."""
    return "\n".join("%s: %s" % (key, compact(value)) for key, value in section.items())


def read(path):
    with open(path) as f:
        return f.read()


# ---- waiting -----------------------------------------------------------------

def wait(what, condition, daemon=None, timeout=WAIT):
    """condition()'s first truthy value; DemoFailed after timeout, or at once if the
    daemon exits meanwhile."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if daemon is not None and daemon.exited():
            raise DemoFailed("chariotd exited with status %s before %s" % (daemon.status(), what))
        if time.monotonic() > deadline:
            raise DemoFailed("no %s within %g s" % (what, timeout))
        time.sleep(0.05)


def file_holding(path, predicate=lambda text: True):
    """A condition: the file's text once it exists and predicate(text) holds."""
    def check():
        try:
            text = read(path)
        except FileNotFoundError:
            return None
        return text if predicate(text) else None
    return check


# ---- chariotd as a process -------------------------------------------------

class Chariotd:
    """chariotd run as a supervisor runs it, its log in a file."""

    def __init__(self, args, logpath):
        self.args = args
        self.logpath = logpath
        self.proc = None

    def start(self):
        with open(self.logpath, "ab") as log:
            self.log_start = log.tell()
            self.proc = subprocess.Popen(
                [sys.executable, CHARIOTD] + self.args, stdin=subprocess.DEVNULL,
                stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ, PYTHONUNBUFFERED="1"))
        return self

    def exited(self):
        return self.proc.poll() is not None

    def status(self):
        return self.proc.poll()

    def log(self):
        """This run's log."""
        with open(self.logpath, "rb") as f:
            f.seek(self.log_start)
            return f.read().decode("utf-8", "replace")

    def stop(self):
        """SIGTERM (a clean disconnect), kill -9 if that takes too long; the exit status."""
        if self.proc is None or self.exited():
            return self.status()
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(WAIT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()


def log_tail(path, lines=20):
    try:
        with open(path, "rb") as f:
            text = f.read().decode("utf-8", "replace")
    except FileNotFoundError:
        return "(chariotd never started)"
    return "\n".join(text.rstrip("\n").split("\n")[-lines:])


# ---- the setting -------------------------------------------------------------

class Demo:
    """The temporary directory and everything running in it."""

    def __init__(self, directory):
        self.dir = directory
        self.broker = self.emulator = self.daemon = None
        self.args = []
        self.certstore = os.path.join(directory, "certstore")
        self.logpath = os.path.join(directory, "chariotd.log")

    def path(self, *parts):
        return os.path.join(self.dir, *parts)

    def start_cloud(self):
        self.pki = Pki(self.path("pki"))
        self.broker = Broker(self.path("broker"), self.pki.ca_cert,
                             *self.pki.issue("server", server=True)).start()
        templates = self.path("templates.json")
        with open(templates, "w") as f:
            json.dump(TEMPLATES, f)
        self.emulator = Emulator(self.broker.plain_port, ca=self.pki, templates=templates,
                                 workdir=self.path("emulator")).start(timeout=WAIT)
        self.endpoint = "localhost:%d" % self.broker.tls_port
        OUT.line("mosquitto: TLS 127.0.0.1:%d for the device, plain 127.0.0.1:%d for the "
                 "emulator (the cloud side)" % (self.broker.tls_port, self.broker.plain_port))

    def stop(self):
        """Stop whatever was started, each part even if stopping another failed."""
        try:
            if self.daemon:
                self.daemon.stop()
        finally:
            try:
                if self.emulator:
                    self.emulator.stop()
            finally:
                if self.broker:
                    self.broker.stop()

    # -- chariotd's command line --

    def chariotd_args(self):
        shutil.copytree(os.path.join(ROOT, "examples", "jobs"), self.path("jobs"))
        return ["--clientid=" + THING, "--cacert=" + self.pki.ca_cert,
                "--certstore=" + self.certstore,
                "--fleetprov=" + self.write_fleetprov(),
                "--services=%s:%s" % (THING, self.copy_services()),
                "--updates=%s:%s" % (THING, self.path("updates")),
                "--messages=" + self.path("messages"),
                "--jobs=%s:%s" % (THING, self.path("jobs"))]

    def write_fleetprov(self):
        lay_out_certstore(self.certstore, self.endpoint)  # no certificate: provision one
        os.makedirs(self.path("var"), exist_ok=True)
        claimstore = self.path("claimstore")
        lay_out_certstore(claimstore, self.endpoint, "claim", *self.pki.issue("claim"))
        path = self.path("fleetprov.json")
        with open(path, "w") as f:
            json.dump({"claimstore": claimstore, "template": TEMPLATE, "csr": True,
                       "parameters": {"SerialNumber": "0042"},
                       "outfile": self.path("var", "provisioned.json"), "outformat": "JSON"}, f)
        return path

    def copy_services(self):
        """examples/services and its helper, device paths rewritten into the demo dir."""
        for sub in ("services", "var", "share"):
            os.makedirs(self.path(sub), exist_ok=True)
        for name in os.listdir(EXAMPLES):
            if name.endswith(".sh"):
                helper = self.path("share", name)
                shutil.copy(os.path.join(EXAMPLES, name), helper)
                os.chmod(helper, 0o755)
                if not os.access(helper, os.X_OK):
                    raise DemoFailed("cannot run programs in %s (mounted noexec?); set TMPDIR "
                                     "to another directory" % self.dir)
        for name in os.listdir(os.path.join(EXAMPLES, "services")):
            text = read(os.path.join(EXAMPLES, "services", name))
            for old, new in REWRITES:
                text = text.replace(old, new.format(demo=self.dir))
            with open(self.path("services", name), "w") as f:
                f.write(text)
        check_services(self.path("services"), self.dir)
        return self.path("services")

    def start_daemon(self):
        self.daemon = Chariotd(self.args, self.logpath).start()
        return self.daemon

    def wait_connected(self):
        """The running daemon's certificate id, once it is connected."""
        wait("connection to the broker", lambda: "connected to" in self.daemon.log(),
             self.daemon)
        found = re.search(r"with certificate (\S+)", self.daemon.log())
        return found.group(1) if found else "?"

    def reported(self):
        document = self.emulator.get_shadow(THING) or {}
        return document.get("state", {}).get("reported", {})

    def desired(self):
        document = self.emulator.get_shadow(THING) or {}
        return document.get("state", {}).get("desired", {})


def lay_out_certstore(directory, endpoint, cert_id=None, cert=None, key=None):
    """A certstore: endpoint.txt, and one certificate entry when given."""
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, "endpoint.txt"), "w") as f:
        f.write(endpoint + "\n")
    if cert_id:
        entry = os.path.join(directory, cert_id)
        os.makedirs(entry, mode=0o700, exist_ok=True)
        shutil.copy(cert, os.path.join(entry, cert_id + "-certificate.pem.crt"))
        shutil.copy(key, os.path.join(entry, cert_id + "-private.pem.key"))
        os.chmod(os.path.join(entry, cert_id + "-private.pem.key"), 0o600)


def check_services(directory, demo_dir):
    """Refuse to run a definition that would still touch the device's own files."""
    services, errors = load_services(directory)
    if errors:
        raise DemoFailed("example service definitions: " + "; ".join(errors))
    for service in services.values():
        paths = [service.outfile] + [  # a system program may run; no other file is touched
            p for p in re.findall(r"(?<![\w.])/[^\s'\";|&<>]+", service.notifycmd)
            if not (os.path.isfile(p) and os.access(p, os.X_OK))]
        outside = [p for p in paths if p and not p.startswith(demo_dir + "/")]
        if outside:
            raise DemoFailed("%s still names %s after the rewrite of examples/README.md"
                             % (os.path.basename(service.path), ", ".join(outside)))


# ---- the steps -----------------------------------------------------------------

def provisioning(demo):
    OUT.title("Fleet provisioning: the certstore has no device certificate, only a claim "
              "certificate in %s" % demo.path("claimstore"))
    daemon = demo.start_daemon()
    wait("end of the provisioning run", lambda: daemon.exited() or
         "provisioning failed" in daemon.log(), timeout=WAIT + 5)
    if not daemon.exited():  # it would pause 30 s before exiting non-zero
        raise DemoFailed("fleet provisioning failed")
    if daemon.status() != 0:
        raise DemoFailed("the provisioning run exited with status %s" % daemon.status())
    cert_id = os.readlink(os.path.join(demo.certstore, "preferred"))
    if demo.emulator.things.get(THING, {}).get("certificateId") != cert_id:
        raise DemoFailed("the emulator has no thing %s with certificate %s" % (THING, cert_id))
    OUT.line("with the claim certificate, chariotd had its own new key signed "
             "(CreateCertificateFromCsr: the key never crossed the network), registered thing "
             "%s (RegisterThing) and exited 0" % THING)
    key = CertStore(demo.certstore).paths(cert_id)[1]
    OUT.line("certstore: endpoint.txt, %s…/ (key mode %04o), preferred -> %s…"
             % (cert_id[:SHORT], stat.S_IMODE(os.stat(key).st_mode), cert_id[:SHORT]))
    outfile = demo.path("var", "provisioned.json")
    OUT.line("its outfile %s: %s" % (outfile, compact(json.loads(read(outfile)))))
    demo.start_daemon()
    used = demo.wait_connected()
    if used != cert_id:
        raise DemoFailed("restarted chariotd connected with %s, not the new certificate" % used)
    OUT.line("restarted (same command line), chariotd connected to %s with certificate %s…"
             % (demo.endpoint, used[:SHORT]))


def desired_state(demo):
    desired = {"console": CONSOLE_ON, "ssh": {"authorized_keys": [ADMIN_KEY]}}
    OUT.title("The app sets the shadow's desired state (UpdateThingShadow):")
    OUT.block(by_key(desired))
    demo.emulator.set_desired(THING, desired)
    console = demo.path("var", "console.rc")
    text = wait("console.rc", file_holding(console, lambda t: "enabled='true'" in t), demo.daemon)
    OUT.line("%s (SHELL), which the getty's run script sources:" % console)
    OUT.block(text)
    ssh = demo.path("var", "ssh.json")
    text = wait("ssh.json", file_holding(ssh), demo.daemon)
    OUT.line("%s (JSON, shown compacted): %s" % (ssh, compact(json.loads(text))))
    keys = demo.path("ssh", "authorized_keys")
    text = wait("authorized_keys", file_holding(keys, lambda t: ADMIN_KEY in t), demo.daemon)
    OUT.line("ssh's notify command (ssh-authorized-keys.sh) wrote %s:" % keys)
    OUT.block(text)
    wait("getty restart", file_holding(demo.path("sv.log")), demo.daemon)
    OUT.line("console's notify command `sv restart console-getty` ran (here it only writes "
             "a line to %s)" % demo.path("sv.log"))
    reported = wait("reported state", lambda: all(
        demo.reported().get(k) == v for k, v in desired.items()) and not demo.desired()
        and demo.reported(), demo.daemon)
    OUT.line("the shadow (GetThingShadow) now has desired empty and reported:")
    OUT.block(by_key(reported))


def console_off(demo):
    OUT.title('The app switches the console off: desired {"console": {"enabled": false}}')
    demo.emulator.set_desired(THING, {"console": {"enabled": False}})
    console = demo.path("var", "console.rc")
    text = wait("console.rc change", file_holding(console, lambda t: "enabled='false'" in t),
                demo.daemon)
    OUT.line("%s now:" % console)
    OUT.block(text)
    restarts = wait("second getty restart", file_holding(
        demo.path("sv.log"), lambda t: t.count("\n") >= 2), demo.daemon)
    reported = wait("reported console", lambda: demo.reported().get("console", {}).get(
        "enabled") is False and demo.reported()["console"], demo.daemon)
    OUT.line("getty restarted again (%d lines in sv.log); reported console: %s"
             % (restarts.count("\n"), compact(reported)))


def local_update(demo):
    updates = demo.path("updates")
    OUT.title("A local update: the firmware updater writes %s to %s/tmp/firmware and renames it "
              "into new/" % (compact(FIRMWARE), updates))
    drop_file(updates, "firmware", FIRMWARE)
    reported = wait("firmware in reported", lambda: demo.reported().get("firmware") == FIRMWARE
                    and demo.reported(), demo.daemon)
    wait("the update file to be consumed", lambda: not os.listdir(os.path.join(updates, "new")),
         demo.daemon)
    OUT.line("no service owns `firmware`, so it is reported as it is; the file is gone from new/")
    OUT.line("the shadow's reported now:")
    OUT.block(by_key(reported))


def drop_file(directory, name, value):
    """Write in tmp/, rename into new/: the reader only ever sees whole files."""
    for sub in ("tmp", "new"):
        os.makedirs(os.path.join(directory, sub), exist_ok=True)
    with open(os.path.join(directory, "tmp", name), "w") as f:
        json.dump(value, f)
    os.rename(os.path.join(directory, "tmp", name), os.path.join(directory, "new", name))


def arrived(demo, topics):
    return [m for m in demo.emulator.messages if m.topic in topics]


def one_message(demo):
    spool = demo.path("messages")
    message = {"topic": TELEMETRY, "payload": {"temp": 21.5, "humidity": 40}}
    OUT.title("A message: %s written to %s/tmp/m01, renamed into new/" % (compact(message), spool))
    drop_file(spool, "m01", message)
    got = wait("message on " + TELEMETRY, lambda: arrived(demo, [TELEMETRY]), demo.daemon)[0]
    wait("m01 to leave new/", lambda: not os.listdir(os.path.join(spool, "new")), demo.daemon)
    OUT.line("the app received on %s (QoS %d): %s" % (got.topic, got.qos, got.payload.decode()))
    OUT.line("the broker acknowledged it, so chariotd deleted the file")


def backlog(demo):
    spool = demo.path("messages")
    OUT.title("A backlog: chariotd is stopped (as if the device were offline), four messages "
              "are spooled, chariotd is started again")
    stop_daemon(demo)
    seen = len(arrived(demo, [TELEMETRY, ALARM]))
    for n in (2, 3, 4):
        drop_file(spool, "m%02d" % n, {"topic": TELEMETRY, "payload": {"seq": n}})
    drop_file(spool, "m05", {"topic": ALARM, "payload": {"door": "open"}, "priority": 1})
    OUT.line("new/: m02, m03, m04 (telemetry), m05 (an alarm with \"priority\": 1)")
    demo.start_daemon()
    got = wait("the backlog", lambda: len(arrived(demo, [TELEMETRY, ALARM])) >= seen + 4 and
               arrived(demo, [TELEMETRY, ALARM])[seen:], demo.daemon)
    OUT.line("the app received, in this order:")
    OUT.block("\n".join("%s %s" % (m.topic, m.payload.decode()) for m in got))
    if got[0].topic != ALARM:
        raise DemoFailed("the priority message did not arrive first")
    wait("the backlog to leave new/", lambda: not os.listdir(os.path.join(spool, "new")),
         demo.daemon)
    OUT.line("the prioritised alarm went ahead of the backlog, which followed in name order; "
             "new/ is empty")


def a_job(demo):
    www = demo.path("www")
    os.makedirs(www)
    with open(os.path.join(www, "firmware.bin"), "wb") as f:
        f.write(os.urandom(64 * 1024))

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0),
                                             lambda *a: Quiet(*a, directory=www))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = "http://127.0.0.1:%d/firmware.bin" % server.server_address[1]
        target = demo.path("data", "firmware.bin")
        with open(os.path.join(ROOT, "tests", "jobs_templates", "AWS-Download-File.json")) as f:
            text = f.read()
        for name, value in (("downloadUrl", url), ("filePath", target), ("pathToHandler", ""),
                            ("runAsUser", "")):
            text = text.replace("${aws:iot:parameter:%s}" % name, value)
        OUT.title("A job: the app creates one from AWS's managed template AWS-Download-File "
                  "(downloadUrl %s, filePath %s)" % (url, target))
        demo.emulator.queue_job(THING, "download-1", json.loads(text))
        done = wait("the job to finish", lambda: (demo.emulator.job_execution(
            THING, "download-1") or {}).get("status") in ("SUCCEEDED", "FAILED", "REJECTED")
            and demo.emulator.job_execution(THING, "download-1"), demo.daemon)
        OUT.line("chariotd ran download-file.sh; the job is %s: %s"
                 % (done["status"], compact(done.get("statusDetails", {}))))
        if done["status"] != "SUCCEEDED":
            raise DemoFailed("the job did not succeed")
        with open(target, "rb") as got, open(os.path.join(www, "firmware.bin"), "rb") as sent:
            same = hashlib.sha256(got.read()).digest() == hashlib.sha256(sent.read()).digest()
        if not same:
            raise DemoFailed("the downloaded file differs")
        OUT.line("%s is there, byte for byte the served file" % target)
    finally:
        server.shutdown()
        server.server_close()


def stop_daemon(demo):
    status = demo.daemon.stop()
    if status != 0:
        raise DemoFailed("chariotd exited with status %s on SIGTERM" % status)


def run(demo):
    demo.start_cloud()
    demo.args = demo.chariotd_args()
    OUT.line("chariotd runs as: chariotd.py " + " ".join(demo.args))
    provisioning(demo)
    desired_state(demo)
    console_off(demo)
    local_update(demo)
    one_message(demo)
    backlog(demo)
    a_job(demo)
    stop_daemon(demo)


# ---- main ----------------------------------------------------------------------

def interrupt(signum, frame):
    raise KeyboardInterrupt


def main():
    started = time.monotonic()
    signal.signal(signal.SIGTERM, interrupt)
    directory = tempfile.mkdtemp(prefix="chariotd-demo-")
    demo = None
    status = 1
    try:
        print("chariotd demo: a device (chariotd) and a cloud app (the IoT Core emulator) on a "
              "local mosquitto")
        print("   working directory %s, called $DEMO below; removed at the end" % directory)
        OUT.demo = directory
        demo = Demo(directory)
        if not SAFE_PATH.fullmatch(directory):
            raise DemoFailed("the temporary directory %r has characters the demo cannot put in "
                             "a service definition; set TMPDIR to a plain path" % directory)
        run(demo)
        status = 0
    except KeyboardInterrupt:
        print("\ninterrupted; stopping everything", flush=True)
        status = 130
    except (DemoFailed, ShadowError, RuntimeError, OSError) as e:
        # RuntimeError: openssl, mosquitto or the emulator could not start.
        print("\ndemo failed: %s" % OUT.short(str(e)), flush=True)
        print("last lines of chariotd's log:", flush=True)
        OUT.block(log_tail(os.path.join(directory, "chariotd.log")))
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        # Ctrl-C reaches mosquitto too; the emulator's "lost the broker" is no news then.
        logging.getLogger("emulator").setLevel(logging.ERROR)
        if demo:
            demo.stop()
        shutil.rmtree(directory, ignore_errors=True)
    if status == 0:
        print("\ndone in %.1f s; chariotd, the emulator and mosquitto stopped, $DEMO removed"
              % (time.monotonic() - started))
    return status


if __name__ == "__main__":
    sys.exit(main())
