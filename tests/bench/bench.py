#!/usr/bin/env python3
"""The benchmark report (`make bench`, `make bench-armv7`; not a test).

Runs its own mosquitto (TLS with client certificates, as the tests do, with
per-message logging off and without Nagle's delay), the AWS IoT Core emulator on its plain port and
the real daemon, and prints one table (and writes the same figures as JSON)
in which every figure of chariotd stands beside references measured in the
same run: a bare paho client, and a paho client that also reads, parses and
deletes each message file (the least at-least-once from files can cost).
Figures are medians over rounds; a ratio is the median of the per-round
ratios (the machine's speed drifts between rounds, and the runs of one
round are seconds apart). Steps:

  memory      idle RSS / anonymous memory / PSS of the daemon with every
              feature configured (services in JSON, SHELL and PLAINTEXT,
              updates, commands, messages, subscriptions) and with messages
              only, against a bare paho client connected over TLS; with the
              idle CPU and wake-ups of the same processes;
  rate        a backlog at the default --publish-rate: msg/s at the broker,
              most in any second, and CPU per 10,000 messages against the
              two references paced the same way;
  throughput  unpaced (--publish-rate=0): start-up backlog and a live burst
              of files renamed into a running daemon; msg/s and CPU per
              10,000 messages against both references;
  latency     file rename to broker on an idle daemon (inotify);
  shadow      app-side desired change to the service's outfile written,
              taking turns with a bare paho client that writes each delta
              to a file, and chariotd's own share (the paired difference);
  spool       RSS with 100,000 files waiting, against idle (also with every
              file prioritised), and the time to index them;
  offline     CPU while the broker is unreachable, with 100,000 files waiting
              and with none, over a short window extrapolated to an hour.

Usage: .venv/bin/python tests/bench/bench.py [--quick] [--rounds N] [--json PATH] [STEP...]
"""

import argparse
import compileall
import json
import os
import platform
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

BENCH = os.path.dirname(os.path.abspath(__file__))
TESTS = os.path.dirname(BENCH)
ROOT = os.path.dirname(TESTS)
sys.path.insert(0, ROOT)
sys.path.insert(0, TESTS)
sys.path.insert(0, BENCH)

from footprint import BARE_IDLE, full_config, loopback_up, read_mem  # noqa: E402
from observer import Observer, new_client  # noqa: E402
from process import DaemonProcess, make_certstore  # noqa: E402

from emulator.broker import Broker, free_port, mosquitto_path  # noqa: E402
from emulator.cloud import Emulator  # noqa: E402
from emulator.pki import Pki  # noqa: E402
from lib.connection import BACKOFF_CAP, backoff_delay  # noqa: E402

AWS_RATE = 100
DEFAULT_RATE = 97  # the daemon's default --publish-rate
UNPACED = ("--publish-rate=0", "--publish-bytes-rate=0")
STEPS = ["memory", "rate", "throughput", "latency", "shadow", "spool", "offline"]
WINDOW = 10  # the daemon's default --message-concurrency
THING = "Gw1"
# The daemons of the memory step, beside a bare paho client.
CONFIGS = (("full", "all features"),
           ("health", "all features, --defender and --status-file"),
           ("messages", "--messages only"))
OFFLINE_CAP = 2.0  # s: the backoff's cap while the offline step measures
REF_THING = "RefGw"  # the shadow step's paho reference
PER = 10000  # CPU is reported per this many messages


# -- measuring helpers ------------------------------------------------------

def cpu_seconds(pid):
    """User + system CPU of a process and all its threads, dead ones included."""
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


def settled_mem(pid, quiet=1.5, timeout=30.0):
    """read_mem once VmRSS has not moved for `quiet` seconds."""
    deadline = time.monotonic() + timeout
    last, since = None, time.monotonic()
    while True:
        mem = read_mem(pid)
        now = time.monotonic()
        if mem.get("VmRSS") != last:
            last, since = mem.get("VmRSS"), now
        elif now - since >= quiet or now > deadline:
            return mem
        time.sleep(0.1)


def _attempts(daemon):
    """Connection attempts the daemon has failed, by its log."""
    return len(re.findall(r"offline; attempt \d+ in a row", daemon.log()))


def _attempts_per_hour(runs=200):
    """The connection attempts an hour offline holds from the start: the
    daemon's own backoff (lib/connection.py), averaged over runs."""
    total = 0
    rng = random.Random(1)
    for _ in range(runs):
        t = failures = 0
        while t < 3600:
            t += backoff_delay(failures, rng, BACKOFF_CAP)
            failures += 1
        total += failures
    return total / runs


def median(values):
    return statistics.median(values)


def percentile(values, pct):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * pct / 100))]


def rate_of(messages):
    return (len(messages) - 1) / (messages[-1].time - messages[0].time)


def max_in_window(times, window):
    best = start = 0
    for end, t in enumerate(times):
        while t - times[start] >= window:
            start += 1
        best = max(best, end - start + 1)
    return best


def write_messages(path, sub, count, topic, payload_size=100, priorities=False):
    payload = "x" * payload_size
    for i in range(count):
        priority = '"priority": %d, ' % (i % 7) if priorities else ""
        with open(os.path.join(path, sub, "m%06d" % i), "w") as f:
            f.write('{"topic": "%s", %s"payload": {"id": %d, "data": "%s"}}'
                    % (topic, priority, i, payload))


def wait_empty(path, timeout=300):
    new = os.path.join(path, "new")
    deadline = time.monotonic() + timeout
    while os.listdir(new):
        if time.monotonic() > deadline:
            raise AssertionError("%s did not drain" % new)
        time.sleep(0.005)


class Inotify:
    """Just enough inotify (ctypes) to time a rename into one directory."""

    IN_MOVED_TO = 0x80

    def __init__(self, directory):
        import ctypes
        import ctypes.util

        self.libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        self.fd = self.libc.inotify_init1(os.O_CLOEXEC)
        if self.fd < 0 or self.libc.inotify_add_watch(self.fd, directory.encode(),
                                                      self.IN_MOVED_TO) < 0:
            raise OSError(ctypes.get_errno(), "inotify")

    def wait(self, name, timeout):
        """The monotonic time at which NAME was renamed into the directory."""
        import select
        import struct

        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.fd], [], [], left)[0]:
                raise AssertionError("%s was not written within %s s" % (name, timeout))
            now = time.monotonic()
            data = os.read(self.fd, 65536)
            while data:
                _wd, _mask, _cookie, size = struct.unpack_from("iIII", data)
                got = data[16:16 + size].rstrip(b"\0").decode()
                data = data[16 + size:]
                if got == name:
                    return now

    def close(self):
        os.close(self.fd)


# -- the references, run as this script in a child process --------------------

def _paced(rate):
    """A function that sleeps until the next send slot at RATE per second (0: never)."""
    rate = float(rate)
    if not rate:
        return lambda: None
    slot = [time.monotonic()]

    def wait():
        now = time.monotonic()
        if slot[0] > now:
            time.sleep(slot[0] - now)
        slot[0] = max(slot[0], now - 1.0 / rate) + 1.0 / rate
    return wait


def bare_paho(count, topic, host, port, cacert, certfile, keyfile, rate="0"):
    """Publish count messages at QoS 1 with WINDOW in flight, as plainly as paho
    allows (at RATE per second when not 0); prints the CPU seconds used from
    CONNACK to the last PUBACK."""
    payloads = [json.dumps({"id": i, "data": "x" * 100}, separators=(",", ":")).encode()
                for i in range(int(count))]
    client = new_client("bare-paho")
    client.tls_set(ca_certs=cacert, certfile=certfile, keyfile=keyfile)
    client.max_inflight_messages_set(WINDOW)
    pace = _paced(rate)
    waiting = iter(payloads)
    acked = []
    cpu = []

    def send_next():
        payload = next(waiting, None)
        if payload is not None:
            pace()
            client.publish(topic, payload, qos=1)

    def on_publish(*_args):
        acked.append(1)
        if len(acked) == len(payloads):
            client.disconnect()
            print(time.process_time() - cpu[0])
        elif float(rate):
            send_next()

    def on_connect(*_args):
        cpu.append(time.process_time())
        if float(rate):
            for _ in range(WINDOW):
                send_next()
        else:
            for payload in payloads:  # beyond the window paho queues them
                client.publish(topic, payload, qos=1)

    client.on_connect = on_connect
    client.on_publish = on_publish
    client.connect(host, int(port), keepalive=60)
    client.loop_forever()


def paho_with_files(spool, host, port, cacert, certfile, keyfile, rate="0"):
    """The least a publisher of the spool's files must do, on a bare paho client:
    read and parse each file when its turn comes, publish its payload, delete it
    once acknowledged; WINDOW in flight (at RATE per second when not 0). No
    checks, no order beyond sorted names. Prints CPU seconds as bare_paho."""
    new = os.path.join(spool, "new")
    names = sorted(os.listdir(new))
    client = new_client("paho-with-files")
    client.tls_set(ca_certs=cacert, certfile=certfile, keyfile=keyfile)
    client.max_inflight_messages_set(WINDOW)
    pace = _paced(rate)
    sending = {}  # mid -> name
    cpu = []

    def send_next():
        if names:
            name = names.pop(0)
            with open(os.path.join(new, name), "rb") as f:
                doc = json.loads(f.read())
            payload = json.dumps(doc["payload"], separators=(",", ":")).encode()
            pace()
            sending[client.publish(doc["topic"], payload, qos=1).mid] = name

    def on_publish(_client, _userdata, mid, *_args):
        os.unlink(os.path.join(new, sending.pop(mid)))
        send_next()
        if not sending:
            client.disconnect()
            print(time.process_time() - cpu[0])

    def on_connect(*_args):
        cpu.append(time.process_time())
        for _ in range(WINDOW):
            send_next()

    client.on_connect = on_connect
    client.on_publish = on_publish
    client.connect(host, int(port), keepalive=60)
    client.loop_forever()


def paho_shadow(thing, outfile, host, port, cacert, certfile, keyfile):
    """The least a device can do with a desired change, on a bare paho client:
    take the thing's deltas and write the "network" section of each to outfile
    atomically (a temporary file, fsync, rename), as chariotd writes an
    outfile. No reports, checks or formats. Prints "up" once subscribed."""
    client = new_client("paho-shadow")
    client.tls_set(ca_certs=cacert, certfile=certfile, keyfile=keyfile)
    tmp = outfile + ".tmp"

    def on_message(_client, _userdata, msg):
        data = json.dumps(json.loads(msg.payload)["state"]["network"]).encode()
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(tmp, outfile)

    def on_subscribe(*_args):
        print("up", flush=True)

    client.on_connect = lambda *_a: client.subscribe(
        "$aws/things/%s/shadow/update/delta" % thing, 1)
    client.on_subscribe = on_subscribe
    client.on_message = on_message
    client.connect(host, int(port), keepalive=60)
    client.loop_forever()


# -- the benchmark ------------------------------------------------------------

class Bench:
    def __init__(self, work, args):
        self.work = work
        self.args = args
        self.quick = args.quick
        self.rounds = args.rounds or (2 if args.quick else 5)
        self.host = "127.0.0.1"
        self.pki = Pki(os.path.join(work, "pki"))
        self.pki.server = self.pki.issue("server", server=True)
        self.broker = Broker(os.path.join(work, "broker"), self.pki.ca_cert, *self.pki.server)
        # Logging every message would make mosquitto the bottleneck; with
        # Nagle's algorithm a small packet sent right after another waits for
        # the peer's delayed ACK, which would be most of a shadow change's
        # latency (set for every client alike).
        with open(self.broker.conf) as f:
            conf = f.read().replace("log_type all", "log_type error\nset_tcp_nodelay true")
        with open(self.broker.conf, "w") as f:
            f.write(conf)
        self.broker.start()
        self.emulator = Emulator(self.broker.plain_port, host=self.host,
                                 workdir=os.path.join(work, "emulator"),
                                 max_messages=1000).start()
        self.devices = {}
        self.runs = 0
        self.rows = []  # dicts, in order

    def close(self):
        self.emulator.stop()
        self.broker.stop()

    def device(self, name="device-1"):
        """(cert, key, certstore) of a device of that name, made once."""
        if name not in self.devices:
            cert, key = self.pki.issue(name)
            store = make_certstore(os.path.join(self.work, "certstore-" + name),
                                   "%s:%d" % (self.host, self.broker.tls_port),
                                   [(name, cert, key)])
            self.devices[name] = (cert, key, store)
        return self.devices[name]

    # -- a row of the report --

    def row(self, key, what, value, unit, bare=None, files=None, target=None, ok=None,
            better="low", note=""):
        """One figure: chariotd's value, the references' values and the ratios
        (already medians of per-round ratios when given as (value, ratio))."""
        r = {"key": key, "what": what, "unit": unit, "value": value, "target": target,
             "ok": ok, "better": better, "note": note}
        for name, ref in (("bare", bare), ("files", files)):
            if ref is None:
                continue
            if isinstance(ref, tuple):
                r[name], r[name + "_ratio"] = ref
            else:
                r[name] = ref
                r[name + "_ratio"] = value / ref if ref else None
        self.rows.append(r)
        print("  %-52s %s" % (what, fmt(value, unit)) + (
            "  (%s)" % target if target else "") + ("" if ok is None else
                                                   "  ok" if ok else "  MISSED"), flush=True)
        return r

    # -- processes --

    def spool(self, count=0, topic="bench/m", priorities=False):
        """A fresh --messages directory with count files waiting in new/."""
        self.runs += 1
        path = os.path.join(self.work, "spool-%d" % self.runs)
        for sub in ("tmp", "new", "failed"):
            os.makedirs(os.path.join(path, sub))
        write_messages(path, "new", count, topic, priorities=priorities)
        return path

    def daemon(self, *options, device="device-1", wait="connected to", env=None, store=None):
        """A daemon started with options (and its device's certstore, or store)."""
        self.runs += 1
        workdir = os.path.join(self.work, "daemon-%d" % self.runs)
        os.makedirs(workdir, exist_ok=True)
        store = store or self.device(device)[2]
        args = ["--clientid=" + device, "--cacert=" + self.pki.ca_cert,
                "--certstore=" + store, "--log-timestamps"] + list(options)
        d = DaemonProcess(workdir, args, env=env).start()
        d.wait_log(wait, timeout=self.args.timeout)
        return d

    def observer(self, prefix):
        """An Observer subscribed at QoS 0, so that acknowledging costs it nothing."""
        obs = Observer(self.broker.plain_port, topics=())
        subscribed = threading.Event()
        obs.client.on_subscribe = lambda *a: subscribed.set()
        obs.client.subscribe(prefix + "#", 0)
        subscribed.wait(10)
        return obs

    def reference(self, count, prefix, *args, background=False):
        """Run this script with args (a reference publishing count messages
        under prefix); returns (msg/s at the broker, CPU s), or a function
        that waits for them when background."""
        obs = self.observer(prefix)
        proc = subprocess.Popen([sys.executable, os.path.abspath(__file__)] + list(args),
                                stdout=subprocess.PIPE)

        def finish():
            out = proc.communicate(timeout=self.args.timeout + count / 50)[0]
            if proc.returncode:
                raise RuntimeError("reference %s failed" % args[0])
            obs.wait_for(lambda ms: len(ms) >= count, timeout=60, what=args[0])
            obs.close()
            return rate_of(obs.messages), float(out), [m.time for m in obs.messages]
        return finish if background else finish()

    def bare_paho(self, count, rate=0, background=False):
        prefix = "bench/bare/"
        cert, key, _ = self.device("ref-bare")
        return self.reference(count, prefix, "--bare-paho", str(count), prefix + "m", self.host,
                              str(self.broker.tls_port), self.pki.ca_cert, cert, key,
                              str(rate), background=background)

    def paho_files(self, count, rate=0, background=False):
        prefix = "bench/files/"
        cert, key, _ = self.device("ref-files")
        d = self.spool(count, prefix + "m")
        return self.reference(count, prefix, "--paho-with-files", d, self.host,
                              str(self.broker.tls_port), self.pki.ca_cert, cert, key,
                              str(rate), background=background)

    def full_config(self):
        """(directory, options) configuring every feature (footprint.full_config)."""
        self.runs += 1
        base = os.path.join(self.work, "full-%d" % self.runs)
        return base, full_config(base, THING)

    # -- memory (and idle CPU) --------------------------------------------------

    def memory(self):
        rounds = self.args.memory_rounds or (1 if self.quick else 3)
        window = self.args.idle_seconds or (5 if self.quick else 20)
        got = {"bare": [], "full": [], "health": [], "messages": []}
        cpu = {k: [0.0, 0] for k in got}
        for _ in range(rounds):
            cert, key, _ = self.device("ref-idle")
            bare = subprocess.Popen([sys.executable, "-c", BARE_IDLE % dict(
                ca=self.pki.ca_cert, cert=cert, key=key, host=self.host,
                port=self.broker.tls_port)], stdout=subprocess.PIPE)
            procs = {}
            try:
                if bare.stdout.readline() != b"up\n":
                    raise RuntimeError("the bare paho client did not connect")
                _, full_options = self.full_config()
                procs["full"] = self.daemon(*full_options, device="device-full",
                                            wait=r"shadow \S+: synced")
                # ... and with the health features too (issue 14: what they cost)
                base, health_options = self.full_config()
                procs["health"] = self.daemon(
                    *health_options, "--defender=%s:300" % THING,
                    "--status-file=" + os.path.join(base, "status.json"),
                    device="device-health", wait=r"shadow \S+: synced")
                procs["messages"] = self.daemon("--messages=" + self.spool(),
                                                device="device-msg")
                pids = {"bare": bare.pid, "messages": procs["messages"].proc.pid}
                pids.update((k, procs[k].proc.pid) for k in ("full", "health"))
                time.sleep(2.0)  # past start-up work
                for k, pid in pids.items():
                    got[k].append(settled_mem(pid))
                start = {k: (cpu_seconds(p), wakeups(p)) for k, p in pids.items()}
                time.sleep(window)
                for k, p in pids.items():
                    cpu[k][0] += cpu_seconds(p) - start[k][0]
                    cpu[k][1] += wakeups(p) - start[k][1]
            finally:
                bare.kill()
                bare.wait()
                for d in procs.values():
                    d.stop()
        # rss and anon: smaps_rollup's exact figures (footprint.read_mem)
        for field, key, what in (("rss", "rss", "RSS"), ("anon", "anon", "anonymous"),
                                 ("Pss", "pss", "PSS")):
            bare_kib = median(m[field] for m in got["bare"])
            for cfg, label in CONFIGS:
                value = median(m[field] for m in got[cfg])
                ratio = median(a[field] / b[field] for a, b in zip(got[cfg], got["bare"]))
                target = "<= 1.00 x bare" if cfg == "full" and key != "pss" else None
                self.row("memory.%s.%s" % (key, cfg), "idle %s, %s" % (what, label),
                         value / 1024, "MiB", bare=(bare_kib / 1024, ratio), target=target,
                         ok=(ratio <= 1.0) if target else None)
        hours = 3600.0 / (window * rounds)
        for cfg, label in CONFIGS:
            b = cpu["bare"]
            self.row("idle.cpu.%s" % cfg, "idle CPU, %s" % label, cpu[cfg][0] * hours,
                     "s/h", bare=b[0] * hours)
            self.row("idle.wakeups.%s" % cfg, "idle wake-ups, %s" % label, cpu[cfg][1] * hours,
                     "/h", bare=b[1] * hours)

    # -- rate: the default pacing -------------------------------------------------

    def rate(self):
        count = 500 if self.quick else 1500
        rounds = max(1, (self.rounds + 1) // 2)  # odd: the median is one round's figure
        results = []
        for _ in range(rounds):
            prefix = "bench/a/"
            obs = self.observer(prefix)
            d = self.spool(count, prefix + "m")
            # The references at the daemon's default rate, at the same time:
            # at 100/s nobody is short of CPU, and it saves minutes.
            bare = self.bare_paho(count, DEFAULT_RATE, background=True)
            files = self.paho_files(count, DEFAULT_RATE, background=True)
            daemon = self.daemon("--messages=" + d)
            c0 = cpu_seconds(daemon.proc.pid)
            obs.wait_for(lambda ms: len(ms) >= count, timeout=count / 50 + 30, what="backlog")
            wait_empty(d)
            used = cpu_seconds(daemon.proc.pid) - c0
            daemon.stop()
            obs.close()
            times = [m.time for m in obs.messages]
            results.append(dict(rate=(len(times) - 1) / (times[-1] - times[0]),
                                busiest=max_in_window(times, 1.0), cpu=used,
                                bare=bare()[1], files=files()[1]))
        self._cpu_rows("rate", "at the default rate (%d/s)" % DEFAULT_RATE, results, count)
        rate = median(r["rate"] for r in results)
        self.row("rate.msgs", "%d backlog at the default rate: msg/s at broker" % count, rate,
                 "msg/s", target=">= %d" % (0.95 * AWS_RATE), ok=rate >= 0.95 * AWS_RATE,
                 better="high")
        busiest = max(r["busiest"] for r in results)
        self.row("rate.busiest", "most messages in any 1 s window", busiest, "msgs",
                 target="<= %d" % AWS_RATE, ok=busiest <= AWS_RATE)

    def _cpu_rows(self, key, label, results, count, name="cpu"):
        per = PER / count
        value = median(r[name] for r in results) * per
        bare = (median(r["bare"] for r in results) * per,
                median(r[name] / r["bare"] for r in results))
        files = (median(r["files"] for r in results) * per,
                 median(r[name] / r["files"] for r in results))
        self.row("%s.cpu" % key, "CPU per %d messages, %s" % (PER, label), value, "s",
                 bare=bare, files=files, target="<= 1.00 x paho+files",
                 ok=files[1] <= 1.0)

    # -- throughput: unpaced --------------------------------------------------

    def throughput(self):
        count = 1000 if self.quick else 5000
        rounds = []
        for _ in range(self.rounds):
            bare, files = self.bare_paho(count), self.paho_files(count)
            backlog, burst = self.daemon_backlog(count), self.daemon_burst(count)
            rounds.append({"bare": bare, "files": files, "backlog": backlog, "burst": burst})
        for name, label in (("backlog", "start-up backlog of %d, unpaced" % count),
                            ("burst", "live burst of %d, unpaced" % count)):
            rs = [dict(cpu=r[name][1], bare=r["bare"][1], files=r["files"][1]) for r in rounds]
            self._cpu_rows("throughput.%s" % name, label, rs, count)
            value = median(r[name][0] for r in rounds)
            files = (median(r["files"][0] for r in rounds),
                     median(r[name][0] / r["files"][0] for r in rounds))
            bare = (median(r["bare"][0] for r in rounds),
                    median(r[name][0] / r["bare"][0] for r in rounds))
            self.row("throughput.%s.msgs" % name, "%s: msg/s" % label, value, "msg/s",
                     bare=bare, files=files, target=">= 1.00 x paho+files",
                     ok=files[1] >= 1.0, better="high")

    def daemon_backlog(self, count):
        prefix = "bench/b1/"
        obs = self.observer(prefix)
        d = self.spool(count, prefix + "m")
        daemon = self.daemon("--messages=" + d, *UNPACED)
        cpu = cpu_seconds(daemon.proc.pid)
        obs.wait_for(lambda ms: len(ms) >= count, timeout=120, what="start-up backlog")
        wait_empty(d)
        cpu = cpu_seconds(daemon.proc.pid) - cpu
        daemon.stop()
        obs.close()
        return rate_of(obs.messages), cpu

    def daemon_burst(self, count):
        prefix = "bench/b2/"
        obs = self.observer(prefix)
        d = self.spool()
        write_messages(d, "tmp", count, prefix + "m")
        daemon = self.daemon("--messages=" + d, *UNPACED)
        names = sorted(os.listdir(os.path.join(d, "tmp")))
        cpu = cpu_seconds(daemon.proc.pid)
        start = time.monotonic()
        for name in names:
            os.rename(os.path.join(d, "tmp", name), os.path.join(d, "new", name))
        obs.wait_for(lambda ms: len(ms) >= count, timeout=120, what="burst")
        wait_empty(d)
        cpu = cpu_seconds(daemon.proc.pid) - cpu
        daemon.stop()
        obs.close()
        return (count - 1) / (obs.messages[-1].time - start), cpu

    # -- latency ------------------------------------------------------------------

    def latency(self):
        samples = 50 if self.quick else 200
        prefix = "bench/c/"
        obs = self.observer(prefix)
        d = self.spool()
        daemon = self.daemon("--messages=" + d)
        time.sleep(0.5)  # let start-up settle; this is a measurement, not a test
        latencies = []
        for i in range(samples):
            tmp = os.path.join(d, "tmp", "m%d" % i)
            with open(tmp, "w") as f:
                json.dump({"topic": prefix + "m", "payload": {"id": i}}, f)
            start = time.monotonic()
            os.rename(tmp, os.path.join(d, "new", "m%d" % i))
            obs.wait_for(lambda ms, n=i + 1: len(ms) >= n, timeout=10, what="message")
            latencies.append(obs.messages[i].time - start)
            # later than 1/--publish-rate, or it would measure the pacer
            time.sleep(random.uniform(0, 0.01) + 0.02)
        daemon.stop()
        obs.close()
        p50, p95 = percentile(latencies, 50) * 1000, percentile(latencies, 95) * 1000
        self.row("latency.p50", "file rename to broker (inotify), p50", p50, "ms",
                 target="< 5 ms", ok=p50 < 5)
        self.row("latency.p95", "file rename to broker (inotify), p95", p95, "ms",
                 target="< 10 ms", ok=p95 < 10)

    # -- shadow path --------------------------------------------------------------

    def shadow(self):
        """The app's desired change (the emulator's UpdateThingShadow, as an app
        calls it) to the outfile renamed into place, for chariotd and for a bare
        paho client that writes each delta to a file (paho_shadow), taking
        turns. The broker and the emulator send without Nagle's delay (see
        Bench.__init__), or this would measure their delayed ACKs (10 to 40 ms)."""
        samples = 40 if self.quick else 200
        base, options = self.full_config()
        outdir = os.path.join(base, "out")
        refdir = os.path.join(base, "ref")
        os.makedirs(refdir)
        daemon = self.daemon(*options, device="device-shadow", wait=r"shadow \S+: synced")
        cert, key, _ = self.device("ref-shadow")
        ref = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--paho-shadow",
                                REF_THING, os.path.join(refdir, "network"), self.host,
                                str(self.broker.tls_port), self.pki.ca_cert, cert, key],
                               stdout=subprocess.PIPE)
        watches = {}
        times = {"daemon": [], "ref": []}
        try:
            if ref.stdout.readline() != b"up\n":
                raise RuntimeError("the paho shadow reference did not subscribe")
            watches = {"daemon": Inotify(outdir), "ref": Inotify(refdir)}
            time.sleep(0.5)
            for i in range(samples):
                for who, thing in (("daemon", THING), ("ref", REF_THING)):
                    start = time.monotonic()
                    self.emulator.set_desired(thing, {"network": {"seq": i, "mode": "dhcp"}})
                    times[who].append(watches[who].wait("network", 10) - start)
                    # let the report go out and the notifycmd finish, as between
                    # two changes made by a person
                    time.sleep(random.uniform(0.02, 0.05))
            with open(os.path.join(outdir, "network")) as f:
                if json.load(f)["seq"] != samples - 1:
                    raise AssertionError("the outfile does not hold the last change")
        finally:
            for watch in watches.values():
                watch.close()
            ref.kill()
            ref.wait()
            daemon.stop()
        for pct, target in ((50, 2.0), (95, 3.0)):
            value = percentile(times["daemon"], pct) * 1000
            bare = percentile(times["ref"], pct) * 1000
            self.row("shadow.p%d" % pct, "desired change to outfile written, p%d" % pct, value,
                     "ms", bare=bare, target="<= %g ms" % target, ok=value <= target,
                     note="NodeJS daemon %s ms" % {50: 3.2, 95: 4.1}[pct])
        # Each change to chariotd is followed by one to the reference: the
        # difference of a pair is chariotd's own time, with the machine's
        # drift and the emulator's and the broker's share taken out.
        extra = median(a - b for a, b in zip(times["daemon"], times["ref"])) * 1000
        self.row("shadow.extra", "desired change: chariotd beyond bare paho, median", extra,
                 "ms")

    # -- spool memory -------------------------------------------------------------

    def spool_memory(self):
        count = 20000 if self.quick else 100000
        idle = self.daemon("--messages=" + self.spool())
        idle_rss = settled_mem(idle.proc.pid)["rss"]
        idle.stop()
        for prioritised in (False, True):
            d = self.spool(count, "bench/d/m", priorities=prioritised)
            start = time.monotonic()
            daemon = self.daemon("--messages=" + d)
            daemon.wait_log(r"%d message\(s\) waiting" % count, timeout=300)
            found = time.monotonic() - start
            time.sleep(2.0)  # sending at the default rate: the backlog stays ~count
            mem = read_mem(daemon.proc.pid)
            daemon.stop()
            grown = (mem["rss"] - idle_rss) / 1024
            kind = "prioritised " if prioritised else ""
            self.row("spool.rss" + (".prioritised" if prioritised else ""),
                     "RSS growth with %d %sfiles waiting" % (count, kind), grown, "MiB",
                     target="<= +10 MiB", ok=grown <= 10,
                     note="" if prioritised else "NodeJS daemon: +143 MB")
            self.row("spool.scan" + (".prioritised" if prioritised else ""),
                     "start-up to %d %sfiles indexed" % (count, kind), found, "s")

    # -- offline ------------------------------------------------------------------

    def offline(self):
        """An hour without a network, files waiting, costs what the connection
        attempts cost: two daemons side by side with nowhere to connect (a
        closed port: refused at once), one with count files waiting and one
        with none, over a window with the backoff capped at OFFLINE_CAP s so
        that it holds many attempts; CPU per attempt, times the attempts an
        hour holds at the real cap (BACKOFF_CAP, full jitter), plus what the
        daemon spends between attempts."""
        count = 20000 if self.quick else 100000
        window = self.args.offline_seconds or (20 if self.quick else 60)
        cert, key = self.pki.issue("device-offline")
        store = make_certstore(os.path.join(self.work, "certstore-offline"),
                               "%s:%d" % (self.host, free_port()),
                               [("device-offline", cert, key)])
        env = {"CHARIOTD_BACKOFF_CAP": str(OFFLINE_CAP)}
        daemons = {}
        try:
            for name, files in (("files", count), ("none", 0)):
                daemons[name] = self.daemon("--messages=" + self.spool(files, "bench/o/m"),
                                            device="device-offline", store=store,
                                            wait=r"%d message\(s\) waiting" % files, env=env)
            for d in daemons.values():  # start-up done, the backoff at its cap
                d.wait_log(r"(?s)(offline; attempt \d+ in a row.*){4}", timeout=60)
            start = {k: (cpu_seconds(d.proc.pid), _attempts(d)) for k, d in daemons.items()}
            time.sleep(window)
            used = {k: (cpu_seconds(d.proc.pid) - start[k][0], _attempts(d) - start[k][1])
                    for k, d in daemons.items()}
        finally:
            for d in daemons.values():
                d.stop()
        per_hour = _attempts_per_hour()
        hour = {k: cpu / max(1, attempts) * per_hour for k, (cpu, attempts) in used.items()}
        self.row("offline.cpu.none", "an hour offline, no files (the attempts alone)",
                 hour["none"], "s/h", note="%.2f s CPU in %d attempts, %g s (cap %g s); x %.0f "
                 "attempts/h" % (used["none"] + (window, OFFLINE_CAP, per_hour)))
        # CPU is counted in clock ticks: two of them either way are the same.
        tick = 2.0 / os.sysconf("SC_CLK_TCK") / max(1, used["files"][1]) * per_hour
        self.row("offline.cpu.files", "an hour offline, %d files waiting" % count, hour["files"],
                 "s/h", target="<= 1.00 x no files", ok=hour["files"] <= hour["none"] + tick,
                 note="%.2f s CPU in %d attempts (CPU in %g s ticks)" % (
                     used["files"] + (1.0 / os.sysconf("SC_CLK_TCK"),)))

    # -- the report ---------------------------------------------------------------

    def table(self):
        head = ("figure", "chariotd", "bare paho", "ratio", "paho+files", "ratio", "target",
                "", "note")
        lines = []
        for r in self.rows:
            lines.append((r["what"], fmt(r["value"], r["unit"]),
                          fmt(r.get("bare"), r["unit"]), ratio(r.get("bare_ratio")),
                          fmt(r.get("files"), r["unit"]), ratio(r.get("files_ratio")),
                          r["target"] or "", "" if r["ok"] is None else
                          "ok" if r["ok"] else "MISSED", r["note"]))
        widths = [max(len(x[i]) for x in lines + [head]) for i in range(len(head))]
        out = ["  ".join(h.ljust(w) for h, w in zip(head, widths)).rstrip(),
               "  ".join("-" * w for w in widths)]
        out += ["  ".join(c.ljust(w) for c, w in zip(x, widths)).rstrip() for x in lines]
        return "\n".join(out)


def fmt(value, unit):
    if value is None:
        return ""
    if unit in ("msgs", "/h") or (unit == "msg/s" and value >= 100):
        return "%.0f %s" % (value, unit)
    if unit == "s" and value < 1:
        return "%.3f s" % value
    return "%.1f %s" % (value, unit) if unit != "s/h" else "%.2f s/h" % value


def ratio(value):
    return "" if value is None else "%.2f" % value


def versions():
    paho = subprocess.run([sys.executable, "-c", "import paho.mqtt as m; print(m.__version__)"],
                          capture_output=True, text=True).stdout.strip()
    mosq = subprocess.run([mosquitto_path(), "-h"], capture_output=True,
                          text=True).stdout.partition("\n")[0].strip()
    try:
        commit = subprocess.run(["git", "-C", ROOT, "describe", "--always", "--dirty"],
                                capture_output=True, text=True).stdout.strip()
    except OSError:  # no git (the armv7 VM of make bench-armv7)
        commit = ""
    return {"machine": platform.machine(), "kernel": platform.release(),
            "python": platform.python_version(), "paho": paho, "mosquitto": mosq,
            "cpus": os.cpu_count(), "commit": commit or "unknown"}


def main(argv):
    if argv[:1] == ["--bare-paho"]:
        bare_paho(*argv[1:])
        return 0
    if argv[:1] == ["--paho-with-files"]:
        paho_with_files(*argv[1:])
        return 0
    if argv[:1] == ["--paho-shadow"]:
        paho_shadow(*argv[1:])
        return 0
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("steps", nargs="*", metavar="STEP",
                   help="some of: " + " ".join(STEPS) + " (default: all)")
    p.add_argument("--quick", action="store_true", help="fewer messages, samples and rounds")
    p.add_argument("--rounds", type=int, help="rounds of the throughput runs (5)")
    p.add_argument("--memory-rounds", type=int, help="rounds of the memory step (3)")
    p.add_argument("--idle-seconds", type=float, help="idle window per memory round (20)")
    p.add_argument("--offline-seconds", type=float, help="window of the offline step (60)")
    p.add_argument("--timeout", type=float, default=120.0, help="for connecting (120)")
    p.add_argument("--json", help="write the figures here too (default build/bench-MACHINE.json)")
    p.add_argument("--workdir", help="parent of the scratch directory (default: TMPDIR)")
    args = p.parse_args(argv)
    steps = args.steps or STEPS
    unknown = [s for s in steps if s not in STEPS]
    if unknown:
        p.error("unknown step %s (steps: %s)" % (", ".join(unknown), " ".join(STEPS)))
    loopback_up()
    # A device has the daemon byte-compiled: do not count compiling it.
    compileall.compile_dir(os.path.join(ROOT, "lib"), quiet=1)
    info = versions()
    work = tempfile.mkdtemp(prefix="chariotd-bench-", dir=args.workdir)
    signal.signal(signal.SIGTERM, lambda *a: sys.exit("bench: terminated"))
    started = time.monotonic()
    bench = Bench(work, args)
    try:
        print("chariotd benchmark%s: %s" % (" (quick)" if args.quick else "", ", ".join(
            "%s %s" % kv for kv in info.items())), flush=True)
        for name in steps:
            print("%s:" % name, flush=True)
            getattr(bench, "spool_memory" if name == "spool" else name)()
    finally:
        bench.close()
        shutil.rmtree(work, ignore_errors=True)
    info["seconds"] = round(time.monotonic() - started)
    print("\n" + bench.table())
    missed = [r["what"] for r in bench.rows if r["ok"] is False]
    print("\n%d figures in %d s; %s" % (len(bench.rows), info["seconds"],
                                       "targets missed: " + "; ".join(missed) if missed
                                       else "every target met"))
    path = args.json or os.path.join(ROOT, "build", "bench-%s.json" % info["machine"])
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump({"run": info, "steps": steps, "figures": bench.rows}, f, indent=1)
    print("figures written to %s" % path)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
