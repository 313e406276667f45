#!/usr/bin/env python3
"""Memory footprint of a running chariotd: idle, with a message backlog, after it drained.

Self-contained (no pytest): makes a throwaway CA and certificates with the
openssl CLI (emulator/pki.py), starts mosquitto with a TLS listener
(emulator/broker.py), runs chariotd.py as a subprocess with the same
interpreter as this script and reads the daemon's /proc/PID/smaps_rollup (Rss,
Anonymous, Pss, Private: exact, see read_mem) and /proc/PID/status (VmHWM,
threads) at each stage:

  1. idle, connected (with --full: every feature configured, as `make
     bench` does, with the emulator answering for the shadow);
  2. with 1,000 and then 10,000 message files waiting in its --messages
     directory while the broker is stopped: SIGSTOPped, so the TCP connection
     stays up but nothing is acknowledged (unless --no-messages);
  3. after SIGCONT, once new/ is empty (drained at the default publish rate).

For comparison it also measures bare interpreters (`python3 -c pass` and
`import paho.mqtt.client, ssl`) and a bare paho client connected over TLS
and idle (the reference of `make bench`) the same way. With --smaps it
sorts the idle daemon's and the bare client's memory by kind (interpreter,
OpenSSL, C libraries, extension modules, heap) and by mapping; with
--imports it prints the RSS and anonymous memory each import adds, alone
and in the daemon's order. Prints plain tables; sizes are KiB.
FOOTPRINT.md (top level) explains the figures.

Host:   .venv/bin/python tests/bench/footprint.py --full --smaps --imports --no-messages
armv7:  see FOOTPRINT.md (qemu-system-arm VM; needs a tmpfs for --workdir).

Inside a bare VM (loopback down, no /etc/hosts) it brings `lo` up itself when
run as root and always talks to 127.0.0.1.
"""

import argparse
import compileall
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tests"))

from process import DaemonProcess, make_certstore  # noqa: E402

from emulator.broker import Broker, mosquitto_path  # noqa: E402
from emulator.cloud import Emulator  # noqa: E402
from emulator.pki import Pki  # noqa: E402

STATUS_KEYS = ("VmRSS", "VmHWM", "RssAnon", "RssFile", "Threads")
ROLLUP_KEYS = ("Rss", "Anonymous", "Pss", "Pss_Anon", "Private_Clean", "Private_Dirty")
COLUMNS = ("RSS", "HWM", "anon", "PSS", "private", "thr")

# A bare paho client connected over TLS, idle: the memory and idle-CPU reference.
BARE_IDLE = """
import sys, ssl
import paho.mqtt.client as mqtt
if hasattr(mqtt, "CallbackAPIVersion"):
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bare-paho-idle")
else:
    c = mqtt.Client(client_id="bare-paho-idle")
ctx = ssl.create_default_context(cafile=%(ca)r)
ctx.load_cert_chain(%(cert)r, %(key)r)
c.tls_set_context(ctx)
c.on_connect = lambda *a: (sys.stdout.write("up\\n"), sys.stdout.flush())
c.connect(%(host)r, %(port)d, keepalive=1200)
c.loop_forever()
"""


# Imports measured one by one with --imports (each in a fresh interpreter).
SINGLE_IMPORTS = (
    "os", "logging", "argparse", "threading", "socket", "select", "queue", "hashlib",
    "random", "uuid", "platform", "ctypes", "ctypes.util", "tempfile", "json", "zlib",
    "typing", "enum", "urllib.parse", "urllib.request", "ssl", "paho.mqtt.client",
)
# The daemon's own import order, measured cumulatively: lib.mqttlib puts its
# stand-ins for what paho imports and never uses in place before paho loads.
CHAIN = (
    ("+ logging", "import logging"),
    ("+ lib.options", "from lib import options"),
    ("+ ssl", "import ssl"),
    ("+ paho.mqtt.client (lib.mqttlib)", "import lib.mqttlib"),
    ("+ lib.daemon (all core)", "import lib.cli, lib.daemon"),
    ("+ shadow services and updates", "import lib.shadowsync"),
    ("+ lib.messages", "import lib.messages"),
    ("+ subscriptions, commands", "import lib.subscriptions, lib.commands"),
)
# The bare paho client's (BARE_IDLE).
BARE_CHAIN = (
    ("+ ssl", "import ssl"),
    ("+ paho.mqtt.client", "import paho.mqtt.client"),
)
# Kinds of mapping, for --smaps: (kind, test on the mapping's name).
KINDS = (
    ("interpreter (python, libpython)",
     lambda n: n.startswith("python3") or n.startswith("libpython")),
    ("OpenSSL (libcrypto, libssl, _ssl)",
     lambda n: n.startswith(("libcrypto", "libssl", "_ssl."))),
    ("other extension modules", lambda n: ".cpython-" in n or n.endswith("module.so")),
    ("C libraries (libc, ld.so, libm, ...)", lambda n: ".so" in n),
    ("heap and anonymous (Python objects, malloc)",
     lambda n: n in ("[heap]", "[anon]") or n.startswith("[anon:")),
    ("stack", lambda n: n == "[stack]"),
)


def full_config(base, thing):
    """Options that configure every feature, with their directories made under
    base: services in each outfile format, updates, commands, messages and
    both kinds of subscription (what `make bench` measures)."""
    services = os.path.join(base, "services")
    os.makedirs(services)
    out = os.path.join(base, "out")
    os.makedirs(out)
    for name, fmt in (("network", "JSON"), ("console", "SHELL"), ("motd", "PLAINTEXT")):
        with open(os.path.join(services, name + ".json"), "w") as f:
            json.dump({"key": name, "outfile": os.path.join(out, name), "outformat": fmt,
                       "informat": fmt, "notifycmd": "true"}, f)
    return [
        "--services=%s:%s" % (thing, services),
        "--updates=%s:%s" % (thing, os.path.join(base, "updates")),
        "--commands=" + os.path.join(base, "commands"),
        "--messages=" + os.path.join(base, "messages"),
        "--subscribe-write=bench/full/w:" + os.path.join(out, "written"),
        "--subscribe-exec=bench/full/x:cat",
    ]


# -- measuring ------------------------------------------------------------

def read_mem(pid):
    """{key: KiB (Threads: count)} from /proc/PID/status and smaps_rollup, with
    "rss" and "anon" the exact figures: smaps_rollup's Rss and Anonymous, which
    the kernel counts by walking the page tables. status's VmRSS and RssAnon
    are counters that kernels before 6.2 bring up to date only every 64 page
    faults of a thread (SPLIT_RSS_COUNTING): on the armv7 VM of make
    bench-armv7 (6.1) they were 0.7 MB short for a bare paho client and 0.1 MB
    for chariotd, in every run."""
    out = {}
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in STATUS_KEYS:
                out[key] = int(value.split()[0])
    try:
        with open("/proc/%d/smaps_rollup" % pid) as f:
            for line in f:
                key, _, value = line.partition(":")
                if key in ROLLUP_KEYS:
                    out[key] = int(value.split()[0])
    except OSError:
        pass  # kernel < 4.14: no smaps_rollup
    out["rss"] = out.get("Rss", out.get("VmRSS"))
    out["anon"] = out.get("Anonymous", out.get("RssAnon"))
    return out


def _smaps_groups(pid):
    """{mapping name: [RSS, PSS, private, anonymous]} from /proc/PID/smaps."""
    groups = {}
    name = None
    fields_of = {"Rss": 0, "Pss": 1, "Private_Clean": 2, "Private_Dirty": 2, "Anonymous": 3}
    with open("/proc/%d/smaps" % pid) as f:
        for line in f:
            first, _, rest = line.partition(" ")
            if "-" in first and not first.endswith(":"):
                fields = rest.split(None, 4)
                name = fields[4].strip() if len(fields) > 4 else "[anon]"
                name = os.path.basename(name) if name.startswith("/") else name
                continue
            key, value = first.rstrip(":"), rest.split()
            if key in fields_of and value:
                groups.setdefault(name, [0, 0, 0, 0])[fields_of[key]] += int(value[0])
    return groups


def mappings(pid, top=12):
    """[(name, rss, pss, private)] of /proc/PID/smaps grouped by mapped file, largest first."""
    rows = sorted(((n,) + tuple(v[:3]) for n, v in _smaps_groups(pid).items()),
                  key=lambda r: -r[1])
    return rows[:top], rows[top:]


def kinds(pid):
    """{kind: [RSS, PSS, private, anonymous]} of /proc/PID/smaps, by KINDS."""
    out = {}
    for name, values in _smaps_groups(pid).items():
        kind = next((k for k, test in KINDS if test(name)), "other (locale, vdso, ...)")
        total = out.setdefault(kind, [0, 0, 0, 0])
        for i, v in enumerate(values):
            total[i] += v
    return out


def row(mem):
    """The printed columns of one measurement."""
    private = None
    if "Private_Clean" in mem:
        private = mem["Private_Clean"] + mem["Private_Dirty"]
    return (mem.get("rss"), mem.get("VmHWM"), mem.get("anon"), mem.get("Pss"), private,
            mem.get("Threads"))


def settle(pid, quiet=2.0, timeout=60.0, interval=0.25):
    """Wait until VmRSS stayed put for `quiet` seconds (or timeout); return read_mem."""
    deadline = time.monotonic() + timeout
    last, since = None, time.monotonic()
    while True:
        mem = read_mem(pid)
        now = time.monotonic()
        if mem.get("VmRSS") != last:
            last, since = mem.get("VmRSS"), now
        elif now - since >= quiet or now > deadline:
            return mem
        time.sleep(interval)


def measure_interpreter(code, env=None):
    """(read_mem, number of modules) of `python -c code` once it has run code."""
    wrapper = code + "\nimport sys\nsys.stdout.write('%d\\n' % len(sys.modules))\n" \
        "sys.stdout.flush()\nsys.stdin.read()\n"
    proc = subprocess.Popen([sys.executable, "-c", wrapper], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, cwd=ROOT,
                            env=dict(os.environ, PYTHONPATH=ROOT, **(env or {})))
    try:
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError("python -c %r failed" % code)
        mem = settle(proc.pid, quiet=0.5, timeout=5, interval=0.1)
        return mem, int(line)
    finally:
        proc.stdin.close()
        proc.wait()


# -- setting up -----------------------------------------------------------

def loopback_up():
    """A freshly booted VM has `lo` down; bring it up (needs root)."""
    try:
        with open("/sys/class/net/lo/flags") as f:
            flags = int(f.read(), 16)
    except OSError:
        return
    if flags & 1:
        return
    import fcntl
    import struct
    siocgifflags, siocsifflags = 0x8913, 0x8914
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        ifr = struct.pack("16sH22x", b"lo", 0)
        flags = struct.unpack("16sH22x", fcntl.ioctl(s, siocgifflags, ifr))[1]
        fcntl.ioctl(s, siocsifflags, struct.pack("16sH22x", b"lo", flags | 1))
    print("note: brought the loopback interface up")


def is_stopped(pid):
    """True while PID is stopped by a signal (state T in /proc/PID/stat)."""
    with open("/proc/%d/stat" % pid) as f:
        return f.read().rpartition(")")[2].split()[0] == "T"


def _exit_on_signal(signum, _frame):
    # SystemExit, so that the broker and the daemon are stopped on the way out.
    # SIGHUP matters: a process group that becomes orphaned while it holds a
    # stopped process (the frozen broker) gets SIGHUP + SIGCONT from the kernel,
    # e.g. when this script was put in the background by a shell that exits.
    raise SystemExit("footprint: got signal %d; stopping" % signum)


def write_messages(msgdir, first, count, payload_bytes):
    """Drop message files the way a writer should: tmp/ then rename into new/."""
    tmp, new = os.path.join(msgdir, "tmp"), os.path.join(msgdir, "new")
    filler = "x" * payload_bytes
    for i in range(first, first + count):
        name = "m%07d.json" % i
        with open(os.path.join(tmp, name), "w") as f:
            json.dump({"topic": "bench/footprint/%d" % (i % 10),
                       "payload": {"seq": i, "data": filler}}, f)
        os.rename(os.path.join(tmp, name), os.path.join(new, name))


def count_files(path):
    try:
        with os.scandir(path) as it:
            return sum(1 for _ in it)
    except FileNotFoundError:
        return 0


def free_mib(path):
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize // (1024 * 1024)


def code_digest():
    """A short digest of chariotd.py and lib/, to tie figures to the code measured."""
    import hashlib
    h = hashlib.sha1()
    paths = [os.path.join(ROOT, "chariotd.py")]
    for d, dirs, files in os.walk(os.path.join(ROOT, "lib")):
        dirs[:] = sorted(x for x in dirs if x != "__pycache__")
        paths += [os.path.join(d, f) for f in sorted(files) if f.endswith(".py")]
    for path in paths:
        h.update(os.path.relpath(path, ROOT).encode() + b"\0")
        with open(path, "rb") as f:
            h.update(f.read())
    return h.hexdigest()[:12]


def versions():
    paho = subprocess.run([sys.executable, "-c", "import paho.mqtt as m; print(m.__version__)"],
                          capture_output=True, text=True).stdout.strip()
    mosq = subprocess.run([mosquitto_path(), "-h"], capture_output=True,
                          text=True).stdout.partition("\n")[0].strip()
    ossl = subprocess.run(["openssl", "version"], capture_output=True, text=True).stdout.strip()
    kernel = platform.release()
    return ("machine %s, kernel %s, Python %s (%s), paho-mqtt %s, %s, %s; chariotd code %s"
            % (platform.machine(), kernel, platform.python_version(), sys.executable, paho,
               mosq, ossl, code_digest()))


# -- the run ----------------------------------------------------------------

class Run:
    def __init__(self, args, work):
        self.args = args
        self.work = work
        self.rows = []  # (label, mem or None, note)
        self.broker = None
        self.daemon = None
        self.emulator = None
        self.bare = []  # the bare paho clients' processes

    def add(self, label, mem, note=""):
        self.rows.append((label, mem, note))
        cols = row(mem) if mem else ()
        print("  measured %-34s %s %s" % (label, " ".join("%s" % c for c in cols), note),
              flush=True)

    def baselines(self):
        mem, n = measure_interpreter("pass")
        self.add("python3 -c pass", mem, "%d modules" % n)
        mem, n = measure_interpreter("import paho.mqtt.client, ssl")
        self.add("python3 + import paho.mqtt.client, ssl", mem, "%d modules" % n)

    def start_infra(self):
        pki = Pki(os.path.join(self.work, "pki"))
        server = pki.issue("server", server=True)
        device = pki.issue("device-1")
        self.broker = Broker(os.path.join(self.work, "broker"), pki.ca_cert, *server).start()
        self.certstore = make_certstore(os.path.join(self.work, "certstore"),
                                        "127.0.0.1:%d" % self.broker.tls_port,
                                        [("device-1",) + device])
        self.ca_cert = pki.ca_cert
        self.pki = pki

    def start_bare_paho(self, prelude=""):
        """The bare paho client of BARE_IDLE (after prelude), connected; returns its pid."""
        cert, key = self.pki.issue("bare-paho-idle-%d" % len(self.bare))
        proc = subprocess.Popen([sys.executable, "-c", prelude + BARE_IDLE % dict(
            ca=self.ca_cert, cert=cert, key=key, host="127.0.0.1", port=self.broker.tls_port)],
            stdout=subprocess.PIPE, cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT))
        self.bare.append(proc)
        if proc.stdout.readline() != b"up\n":
            raise RuntimeError("the bare paho client did not connect")
        return proc.pid

    def start_daemon(self, extra):
        args = ["--clientid=device-1", "--cacert=" + self.ca_cert,
                "--certstore=" + self.certstore] + extra + self.args.daemon_arg
        d = DaemonProcess(self.work, args)
        d.start()
        self.daemon = d
        return d

    def wait_connected(self):
        self.daemon.wait_log(r"connected to 127\.0\.0\.1:%d" % self.broker.tls_port,
                             timeout=self.args.timeout)
        if self.args.full:
            self.daemon.wait_log(r"shadow \S+: synced", timeout=self.args.timeout)

    def run(self):
        a = self.args
        print(versions(), flush=True)
        print("work directory %s (%d MiB free)" % (self.work, free_mib(self.work)), flush=True)
        self.baselines()
        self.start_infra()
        bare = self.start_bare_paho()
        time.sleep(a.settle)
        self.add("bare paho client, TLS, idle", settle(bare, quiet=a.quiet))
        # How much of the difference is lib/mqttlib.py's stand-ins for what
        # paho imports and never uses: the same client with them.
        lean = self.start_bare_paho("import lib.mqttlib\n")
        time.sleep(a.settle)
        self.add("  the same, with lib.mqttlib's stand-ins", settle(lean, quiet=a.quiet))
        msgdir = os.path.join(self.work, "messages")
        with_messages = not a.no_messages
        extra = []
        if a.full:
            self.emulator = Emulator(self.broker.plain_port,
                                     workdir=os.path.join(self.work, "emulator")).start()
            full = os.path.join(self.work, "full")
            extra = full_config(full, "Gw1")
            msgdir = os.path.join(full, "messages")
        if with_messages:
            # The broker is frozen for a while on purpose: do not let the
            # jam timeout end the daemon meanwhile.
            extra = [o for o in extra if not o.startswith("--messages=")] + [
                "--messages=" + msgdir, "--default-message-jam-timeout=3600"]
        d = self.start_daemon(extra)
        self.wait_connected()
        time.sleep(a.settle)
        self.add("chariotd idle, connected", settle(d.proc.pid, quiet=a.quiet),
                 "every feature" if a.full else "with --messages" if with_messages else "")
        if a.smaps:
            self.print_kinds({"chariotd": d.proc.pid, "bare paho": bare})
            self.print_mappings(d.proc.pid)
        if not with_messages:
            why = "skipped (--no-messages)"
            print(why, flush=True)
            self.rows.append(("backlog / drain", None, why))
            return
        needed = max(a.counts, default=0) * 4 // 1024 + 16  # a tmpfs page per small file
        if free_mib(self.work) < needed:
            print("warning: %d MiB free in %s, the backlog needs about %d MiB"
                  % (free_mib(self.work), self.work, needed), flush=True)
        os.kill(self.broker.proc.pid, signal.SIGSTOP)
        written = 0
        try:
            for total in a.counts:
                t0 = time.monotonic()
                write_messages(msgdir, written, total - written, a.payload_bytes)
                written = total
                took = time.monotonic() - t0
                time.sleep(a.settle)
                mem = settle(d.proc.pid, quiet=a.quiet, timeout=a.timeout)
                if not is_stopped(self.broker.proc.pid):
                    raise RuntimeError("the broker was resumed behind our back; figures void")
                if d.proc.poll() is not None:
                    raise RuntimeError("chariotd exited (%s):\n%s" % (d.proc.returncode,
                                                                      d.log()))
                self.add("backlog %d files, broker stopped" % total, mem,
                         "%d in new/ (written in %.1fs)"
                         % (count_files(os.path.join(msgdir, "new")), took))
        finally:
            os.kill(self.broker.proc.pid, signal.SIGCONT)
        t0 = time.monotonic()
        new = os.path.join(msgdir, "new")
        deadline = t0 + a.drain_timeout
        while count_files(new) and time.monotonic() < deadline and d.proc.poll() is None:
            time.sleep(0.5)
        took = time.monotonic() - t0
        left = count_files(new)
        if d.proc.poll() is not None:
            raise RuntimeError("chariotd exited (%s) while draining:\n%s"
                               % (d.proc.returncode, d.log()))
        time.sleep(a.settle)
        self.add("drained, broker back", settle(d.proc.pid, quiet=a.quiet),
                 "%d left in new/, %d in failed/, drained in %.0fs"
                 % (left, count_files(os.path.join(msgdir, "failed")), took))

    def print_kinds(self, pids):
        """The idle processes' memory by kind of mapping, side by side."""
        got = {name: kinds(pid) for name, pid in pids.items()}
        order = [k for k, _test in KINDS] + ["other (locale, vdso, ...)"]
        print("\nidle memory by kind (KiB; RSS / anonymous)\n  %-44s" % "kind"
              + "".join(" %17s" % name for name in got))
        for kind in order:
            cells = [got[name].get(kind, [0, 0, 0, 0]) for name in got]
            print("  %-44s" % kind + "".join(" %8d / %6d" % (c[0], c[3]) for c in cells))
        totals = [[sum(v[i] for v in got[name].values()) for i in range(4)] for name in got]
        print("  %-44s" % "total" + "".join(" %8d / %6d" % (t[0], t[3]) for t in totals),
              flush=True)

    def print_mappings(self, pid):
        top, rest = mappings(pid)
        print("\nidle daemon's mappings by RSS (KiB)\n  %-40s %7s %7s %7s"
              % ("mapping", "RSS", "PSS", "private"))
        for name, rss, pss, private in top:
            print("  %-40s %7d %7d %7d" % (name[:40], rss, pss, private))
        print("  %-40s %7d %7d %7d\n" % ("(%d others)" % len(rest), sum(r[1] for r in rest),
                                        sum(r[2] for r in rest), sum(r[3] for r in rest)),
              flush=True)

    def imports(self):
        print("\nimports: RSS of a fresh `python3 -c 'import X'` minus `python3 -c pass` (KiB)")
        bare, n0 = measure_interpreter("pass")
        print("  %-34s %7s %7s %8s" % ("module", "dRSS", "dPSS", "modules"))
        for name in SINGLE_IMPORTS:
            try:
                mem, n = measure_interpreter("import " + name)
            except RuntimeError:
                print("  %-34s  (import failed)" % name)
                continue
            print("  %-34s %7d %7s %8d" % (name, mem["rss"] - bare["rss"],
                                           _delta(mem, bare, "Pss"), n - n0))
        for title, chain in (("the daemon's", CHAIN), ("the bare paho client's", BARE_CHAIN)):
            print("\ncumulative, in %s order (KiB, each row: RSS, added, anonymous, added; "
                  "modules)" % title)
            code, prev = "", bare
            print("  %-34s %7d %7s %7d %7s %8d" % ("python3 -c pass", bare["rss"], "",
                                                  bare["anon"], "", n0))
            for label, stmt in chain:
                code += stmt + "\n"
                mem, n = measure_interpreter(code)
                print("  %-34s %7d %+7d %7d %+7d %8d" % (
                    label, mem["rss"], mem["rss"] - prev["rss"], mem["anon"],
                    mem["anon"] - prev["anon"], n))
                prev = mem

    def print_table(self):
        print("\nchariotd footprint (KiB; RSS, anon, PSS, private from smaps_rollup, "
              "HWM=VmHWM peak, thr=threads)")
        print("%-40s %7s %7s %7s %7s %7s %4s  %s" % (("stage",) + COLUMNS + ("note",)))
        for label, mem, note in self.rows:
            if mem is None:
                print("%-40s %s" % (label, note))
                continue
            cells = ["%7s" % ("-" if c is None else c) for c in row(mem)[:5]]
            print("%-40s %s %4s  %s" % (label, " ".join(cells), row(mem)[5], note))

    def close(self):
        for proc in self.bare:
            proc.kill()
            proc.wait()
        if self.emulator:
            self.emulator.stop()
        if self.daemon:
            if self.daemon.proc.poll() is None:
                self.daemon.stop()
            self.daemon.close()
        if self.broker and self.broker.proc:
            try:
                os.kill(self.broker.proc.pid, signal.SIGCONT)
            except OSError:
                pass
            self.broker.stop()


def _delta(mem, base, key):
    if key in mem and key in base:
        return "%d" % (mem[key] - base[key])
    return "-"


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--counts", default="1000,10000",
                   help="backlog sizes, cumulative (default 1000,10000)")
    p.add_argument("--payload-bytes", type=int, default=64, help="filler per message (64)")
    p.add_argument("--settle", type=float, default=3.0,
                   help="seconds to wait before sampling a stage (3)")
    p.add_argument("--quiet", type=float, default=3.0,
                   help="RSS must stay put this long to count as settled (3)")
    p.add_argument("--timeout", type=float, default=120.0,
                   help="for connecting and settling (120; a TCG VM is slow)")
    p.add_argument("--drain-timeout", type=float, default=900.0)
    p.add_argument("--daemon-arg", action="append", default=[],
                   help="extra chariotd option, e.g. --daemon-arg=--publish-rate=0")
    p.add_argument("--no-messages", action="store_true", help="skip the backlog stages")
    p.add_argument("--full", action="store_true",
                   help="configure every feature, as make bench does (with the emulator)")
    p.add_argument("--imports", action="store_true", help="also print import costs")
    p.add_argument("--smaps", action="store_true",
                   help="also print the idle daemon's memory by mapping")
    p.add_argument("--workdir", help="parent of the scratch directory (default: TMPDIR)")
    p.add_argument("--keep", action="store_true", help="keep the scratch directory")
    args = p.parse_args()
    args.counts = sorted(int(c) for c in args.counts.split(",") if c)
    if not sys.platform.startswith("linux"):
        sys.exit("footprint: needs Linux /proc")
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _exit_on_signal)
    loopback_up()
    # A device has the daemon byte-compiled; do not count compiling it.
    compileall.compile_dir(os.path.join(ROOT, "lib"), quiet=1)
    work = tempfile.mkdtemp(prefix="chariotd-footprint-", dir=args.workdir)
    run = Run(args, work)
    status = 0
    try:
        run.run()
    except (RuntimeError, AssertionError, OSError) as e:
        print("footprint: %s" % e, flush=True)
        status = 1
    finally:
        run.close()
        run.print_table()
        if args.keep:
            print("kept %s" % work)
        else:
            shutil.rmtree(work, ignore_errors=True)
    if args.imports:
        run.imports()
    return status


if __name__ == "__main__":
    sys.exit(main())
