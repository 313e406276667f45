#!/usr/bin/env python3
"""Idle cost benchmark (`make bench`; not a test).

Connects the real daemon (TLS, keepalive 1200, one --messages directory
watched with inotify) and a bare paho client running its own network loop
(loop_forever) to the same mosquitto, leaves both idle for a while and
prints the CPU seconds each used, scaled to an hour, and their ratio. The
daemon should sleep until its next real deadline; paho's loop wakes every
second.
A second daemon with --defender and --status-file as well is left idle
beside them, and the idle memory (RSS, PSS) of both daemons is printed:
what the two health features cost.
Usage: .venv/bin/python tests/bench/bench_idle.py [SECONDS]
"""

import os
import subprocess
import sys
import tempfile
import time

TESTS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(TESTS))
sys.path.insert(0, TESTS)

from process import DaemonProcess, make_certstore  # noqa: E402

from emulator.broker import Broker  # noqa: E402
from emulator.pki import Pki  # noqa: E402

BARE_PAHO = """
import sys, ssl
sys.path.insert(0, %(tests)r)
from observer import new_client
c = new_client("bare-paho")
ctx = ssl.create_default_context(cafile=%(ca)r)
ctx.load_cert_chain(%(cert)r, %(key)r)
c.tls_set_context(ctx)
c.connect("localhost", %(port)d, keepalive=1200)
c.loop_forever()
"""


def cpu_seconds(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wakeups(pid):
    """Voluntary context switches of every thread: how often it went to sleep."""
    total = 0
    for tid in os.listdir("/proc/%d/task" % pid):
        with open("/proc/%d/task/%s/status" % (pid, tid)) as f:
            for line in f:
                if line.startswith("voluntary_ctxt_switches"):
                    total += int(line.split()[1])
    return total


def memory_kib(pid):
    """(VmRSS, Pss) in KiB."""
    rss = pss = 0
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
    try:
        with open("/proc/%d/smaps_rollup" % pid) as f:
            for line in f:
                if line.startswith("Pss:"):
                    pss = int(line.split()[1])
    except OSError:
        pass
    return rss, pss


def main(seconds):
    work = tempfile.mkdtemp(prefix="chariotd-idle-")
    pki = Pki(os.path.join(work, "pki"))
    broker = Broker(os.path.join(work, "broker"), pki.ca_cert,
                    *pki.issue("server", server=True)).start()
    cert, key = pki.issue("device-1")
    store = make_certstore(os.path.join(work, "certstore"), "localhost:%d" % broker.tls_port,
                           [("device-1", cert, key)])
    daemon = DaemonProcess(work, ["--clientid=device-1", "--cacert=" + pki.ca_cert,
                                  "--certstore=" + store,
                                  "--messages=" + os.path.join(work, "messages")]).start()
    cert2, key2 = pki.issue("device-2")
    store2 = make_certstore(os.path.join(work, "certstore2"), "localhost:%d" % broker.tls_port,
                            [("device-2", cert2, key2)])
    health = DaemonProcess(os.path.join(work, "health"), [
        "--clientid=device-2", "--cacert=" + pki.ca_cert, "--certstore=" + store2,
        "--messages=" + os.path.join(work, "messages2"), "--defender=Gw2",
        "--status-file=" + os.path.join(work, "status.json")])
    os.makedirs(health.workdir)
    health.start()
    bare = subprocess.Popen([sys.executable, "-c", BARE_PAHO % dict(
        tests=TESTS, ca=pki.ca_cert, cert=cert, key=key, port=broker.tls_port)])
    try:
        daemon.wait_log("connected to")
        health.wait_log("connected to")
        time.sleep(2)  # past start-up work, for both
        pids = (daemon.proc.pid, bare.pid, health.proc.pid)
        start = {p: (cpu_seconds(p), wakeups(p)) for p in pids}
        time.sleep(seconds)
        used = {p: (cpu_seconds(p) - start[p][0], wakeups(p) - start[p][1]) for p in pids}
        memory = {p: memory_kib(p) for p in (daemon.proc.pid, health.proc.pid)}
    finally:
        bare.kill()
        health.stop()
        daemon.stop()
        broker.stop()
    per_hour = 3600.0 / seconds
    print("idle for %ds, scaled to an hour (CPU is counted in %.2fs clock ticks):"
          % (seconds, 1.0 / os.sysconf("SC_CLK_TCK")))
    print("  %-26s %12s %14s" % ("", "CPU s/h", "wakeups/h"))
    for name, pid in (("chariotd", daemon.proc.pid), ("bare paho, loop_forever", bare.pid),
                      ("chariotd +defender +status", health.proc.pid)):
        cpu, woke = used[pid]
        print("  %-26s %12.3f %14.0f" % (name, cpu * per_hour, woke * per_hour))
    d, b = used[daemon.proc.pid][1], used[bare.pid][1]
    print("  wakeups ratio chariotd/bare paho: %.3f" % (d / b if b else float("nan")))
    print("idle memory, KiB:")
    print("  %-26s %12s %14s" % ("", "RSS", "PSS"))
    for name, pid in (("chariotd", daemon.proc.pid),
                      ("chariotd +defender +status", health.proc.pid)):
        print("  %-26s %12d %14d" % ((name,) + memory[pid]))
    (r0, p0), (r1, p1) = memory[daemon.proc.pid], memory[health.proc.pid]
    print("  both health features cost:  %+d KiB RSS, %+d KiB PSS" % (r1 - r0, p1 - p0))


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 60)
