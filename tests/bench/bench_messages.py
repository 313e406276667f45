#!/usr/bin/env python3
"""Benchmark of the message spool (`make bench`; not a test).

Runs its own mosquitto (TLS, as the tests do, with per-message logging off)
and the real daemon, and prints one table:
  (a) publish rate seen at the broker for a 2,000-message backlog at the
      default --publish-rate (must stay under AWS's 100/s, reach 95% of it);
  (b) unpaced throughput (--publish-rate=0 --publish-bytes-rate=0) of 5,000
      messages over TLS, backlog at start-up and burst into a running
      daemon, against a bare paho client with the same in-flight window,
      against one that also reads and deletes the same files (the least
      that at-least-once from files costs), and the daemon's own loop,
      connection and publisher without the spool;
  (c) rename-to-broker latency of single messages on an idle daemon, with
      inotify and with polling;
  (d) the daemon's RSS with 100,000 files waiting in new/ against idle, with
      and without priorities.
Usage: .venv/bin/python tests/bench/bench_messages.py [--quick] [rate|throughput|latency|memory...]
"""

import json
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

TESTS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(TESTS))
sys.path.insert(0, TESTS)

from observer import Observer, new_client  # noqa: E402
from process import DaemonProcess, make_certstore  # noqa: E402

from emulator.broker import Broker  # noqa: E402
from emulator.pki import Pki  # noqa: E402

AWS_RATE = 100
UNPACED = ("--publish-rate=0", "--publish-bytes-rate=0")
STEPS = ["rate", "throughput", "latency", "memory"]
WINDOW = 10  # the daemon's default --message-concurrency


class Bench:
    def __init__(self, work, quick):
        self.work = work
        self.quick = quick
        self.pki = Pki(os.path.join(work, "pki"))
        self.pki.server = self.pki.issue("server", server=True)
        self.broker = Broker(os.path.join(work, "broker"), self.pki.ca_cert, *self.pki.server)
        # Logging every message would make mosquitto the bottleneck of (b).
        with open(self.broker.conf) as f:
            conf = f.read().replace("log_type all", "log_type error")
        with open(self.broker.conf, "w") as f:
            f.write(conf)
        self.broker.start()
        self.device = self.pki.issue("device-1")
        self.certstore = make_certstore(os.path.join(work, "certstore"),
                                        "localhost:%d" % self.broker.tls_port,
                                        [("device-1",) + self.device])
        self.runs = 0
        self.rows = []

    def close(self):
        self.broker.stop()

    def spool(self, count=0, topic="bench/m", payload_size=100, priorities=False):
        """A fresh --messages directory with count files waiting in new/ (with
        priorities 0 to 6 in turn if asked)."""
        self.runs += 1
        path = os.path.join(self.work, "spool-%d" % self.runs)
        for sub in ("tmp", "new", "failed"):
            os.makedirs(os.path.join(path, sub))
        write_messages(path, "new", count, topic, payload_size, priorities)
        return path

    def daemon(self, *options, env=None):
        workdir = os.path.join(self.work, "daemon-%d" % self.runs)
        os.makedirs(workdir, exist_ok=True)
        args = ["--clientid=device-1", "--cacert=" + self.pki.ca_cert,
                "--certstore=" + self.certstore, "--log-timestamps"] + list(options)
        d = DaemonProcess(workdir, args, env=env).start()
        d.wait_log("connected to", timeout=120)
        return d

    def observer(self, prefix):
        """An Observer subscribed at QoS 0, so that acknowledging costs it nothing."""
        obs = Observer(self.broker.plain_port, topics=())
        subscribed = threading.Event()
        obs.client.on_subscribe = lambda *a: subscribed.set()
        obs.client.subscribe(prefix + "#", 0)
        subscribed.wait(10)
        return obs

    def row(self, what, figure, target, ok):
        self.rows.append((what, figure, target, "ok" if ok else "MISSED"))
        print("  %s: %s" % (what, figure), flush=True)

    # -- (a) ------------------------------------------------------------------

    def rate(self):
        count = 500 if self.quick else 2000
        prefix = "bench/a/"
        obs = self.observer(prefix)
        d = self.spool(count, prefix + "m")
        daemon = self.daemon("--messages=" + d)
        obs.wait_for(lambda ms: len(ms) >= count, timeout=count / 50 + 30, what="backlog")
        daemon.stop()
        obs.close()
        times = [m.time for m in obs.messages]
        rate = (len(times) - 1) / (times[-1] - times[0])
        busiest = max_in_window(times, 1.0)
        self.row("(a) default rate, %d backlog: msg/s at broker" % count, "%.1f" % rate,
                 ">= %d" % (0.95 * AWS_RATE), rate >= 0.95 * AWS_RATE)
        self.row("(a) most messages in any 1 s window", "%d" % busiest,
                 "<= %d" % AWS_RATE, busiest <= AWS_RATE)

    # -- (b) ------------------------------------------------------------------

    def throughput(self):
        """Five rounds of the five runs; figures are medians, and each ratio is the
        median of the ratios within a round (the machine's speed drifts between
        rounds: the runs of one round are seconds apart)."""
        count = 1000 if self.quick else 5000
        rounds = [(self.bare_paho(count), self.paho_files(count), self.mqtt_path(count),
                   self.daemon_backlog(count), self.daemon_burst(count)) for _ in range(5)]

        def figures(i):
            return "%.0f, %.0f us" % (statistics.median(r[i][0] for r in rounds),
                                      statistics.median(r[i][1] for r in rounds))

        def ratio(i, reference):
            return statistics.median(r[i][0] / r[reference][0] for r in rounds)

        self.row("(b) bare paho, window %d, TLS: msg/s, CPU/msg" % WINDOW, figures(0), "", True)
        self.row("(b) bare paho reading and deleting the files: msg/s, CPU/msg", figures(1),
                 "", True)
        self.row("(b)   ratio of the two (the cost of files alone)", "%.2f" % ratio(1, 0), "",
                 True)
        self.row("(b) daemon's loop, connection, publisher, no files: msg/s, CPU/msg",
                 figures(2), "", True)
        self.row("(b)   ratio to bare paho", "%.2f" % ratio(2, 0), "", True)
        for i, what in ((3, "%d backlog at start-up" % count),
                        (4, "burst of %d into running daemon" % count)):
            self.row("(b) daemon, %s: msg/s, CPU/msg" % what, figures(i), "", True)
            self.row("(b)   ratio daemon/bare paho", "%.2f" % ratio(i, 0), ">= 0.8",
                     ratio(i, 0) >= 0.8)
            self.row("(b)   ratio daemon/paho with files", "%.2f" % ratio(i, 1), "", True)

    def bare_paho(self, count):
        """The same messages from a bare paho client in its own process."""
        prefix = "bench/bare/"
        return self.reference(count, prefix, "--bare-paho", str(count), prefix + "m",
                              str(self.broker.tls_port), self.pki.ca_cert, *self.device)

    def mqtt_path(self, count):
        """The same messages through the daemon's loop, connection and publisher alone."""
        prefix = "bench/path/"
        return self.reference(count, prefix, "--daemon-mqtt-path", str(count), prefix + "m",
                              self.certstore, self.pki.ca_cert)

    def paho_files(self, count):
        """A bare paho client doing the file work at-least-once needs, on the same files."""
        prefix = "bench/files/"
        d = self.spool(count, prefix + "m")
        return self.reference(count, prefix, "--paho-with-files", d, str(self.broker.tls_port),
                              self.pki.ca_cert, *self.device)

    def reference(self, count, prefix, *args):
        """(msg/s at the broker, CPU us/msg) of this script run with args, which
        publishes count messages under prefix and prints its CPU seconds."""
        obs = self.observer(prefix)
        out = subprocess.run([sys.executable, os.path.abspath(__file__)] + list(args),
                             check=True, timeout=120, stdout=subprocess.PIPE).stdout
        obs.wait_for(lambda ms: len(ms) >= count, timeout=60, what=args[0])
        obs.close()
        return rate_of(obs.messages), float(out) / count * 1e6

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
        return rate_of(obs.messages), cpu / count * 1e6

    def daemon_burst(self, count):
        prefix = "bench/b2/"
        obs = self.observer(prefix)
        d = self.spool()
        write_messages(d, "tmp", count, prefix + "m", 100)
        daemon = self.daemon("--messages=" + d, *UNPACED)
        names = sorted(os.listdir(os.path.join(d, "tmp")))
        cpu = cpu_seconds(daemon.proc.pid)
        start = time.monotonic()
        for name in names:
            os.rename(os.path.join(d, "tmp", name), os.path.join(d, "new", name))
        self.renamed = time.monotonic() - start
        obs.wait_for(lambda ms: len(ms) >= count, timeout=120, what="burst")
        wait_empty(d)
        cpu = cpu_seconds(daemon.proc.pid) - cpu
        daemon.stop()
        obs.close()
        print("    burst: renames took %.3f s, last message after %.3f s"
              % (self.renamed, obs.messages[-1].time - start))
        return (count - 1) / (obs.messages[-1].time - start), cpu / count * 1e6

    # -- (c) ------------------------------------------------------------------

    def latency(self):
        samples = 50 if self.quick else 200
        self.row("(c) latency, inotify: p50 / p95", self._latency(samples, None),
                 "< 5 ms / < 10 ms", self._ok)
        self.row("(c) latency, polling 1 s: p50 / p95", self._latency(samples // 10, "1"),
                 "(poll interval)", True)
        self.row("(c) latency, polling 0.05 s: p50 / p95",
                 self._latency(samples // 4, "0.05"), "(poll interval)", True)

    def _latency(self, samples, poll_interval):
        prefix = "bench/c/"
        obs = self.observer(prefix)
        d = self.spool()
        options = ["--messages=" + d]
        env = None
        if poll_interval:
            options.append("--poll-interval=" + poll_interval)
            env = {"CHARIOTD_NO_INOTIFY": "1"}
        daemon = self.daemon(*options, env=env)
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
            # The next one at a random moment of the poll period; and later than
            # 1/--publish-rate, or it would measure the pacer, not an idle daemon.
            time.sleep(random.uniform(0, float(poll_interval or 0.01)) + 0.02)
        daemon.stop()
        obs.close()
        p50, p95 = percentile(latencies, 50), percentile(latencies, 95)
        self._ok = p50 < 0.005 and p95 < 0.010
        return "%.1f ms / %.1f ms" % (p50 * 1000, p95 * 1000)

    # -- (d) ------------------------------------------------------------------

    def memory(self):
        count = 20000 if self.quick else 100000
        d = self.spool()
        idle = self.daemon("--messages=" + d)
        time.sleep(1.0)
        idle_rss = rss_kib(idle.proc.pid)["VmRSS"]
        idle.stop()
        self.row("(d) RSS idle", "%.1f MiB" % (idle_rss / 1024), "", True)
        for what, priorities in (("files", False), ("prioritised files", True)):
            d = self.spool(count, "bench/d/m", priorities=priorities)
            start = time.monotonic()
            daemon = self.daemon("--messages=" + d)
            daemon.wait_log(r"%d message\(s\) waiting" % count, timeout=300)
            found = time.monotonic() - start
            time.sleep(2.0)  # sending at the default rate: the backlog stays ~100,000
            mem = rss_kib(daemon.proc.pid)
            daemon.stop()
            grown = (mem["VmRSS"] - idle_rss) / 1024
            self.row("(d) RSS with %d %s waiting" % (count, what), "%.1f MiB (+%.1f MiB)"
                     % (mem["VmRSS"] / 1024, grown), "<= +10 MiB", grown <= 10)
            self.row("(d)   peak RSS (VmHWM) during start-up scan",
                     "%.1f MiB" % (mem["VmHWM"] / 1024), "", True)
            self.row("(d)   start-up to %d files indexed" % count, "%.1f s" % found, "", True)

    def table(self):
        width = max(len(r[0]) for r in self.rows)
        print("\n%-*s  %-22s %-18s %s" % (width, "measurement", "figure", "target", ""))
        print("-" * (width + 50))
        for what, figure, target, ok in self.rows:
            print("%-*s  %-22s %-18s %s" % (width, what, figure, target, ok if target else ""))


def bare_paho(count, topic, port, cacert, certfile, keyfile):
    """Publish count messages at QoS 1 with WINDOW in flight, as plainly as paho allows."""
    payloads = [json.dumps({"id": i, "data": "x" * 100}, separators=(",", ":")).encode()
                for i in range(int(count))]
    client = new_client("bare-paho")
    client.tls_set(ca_certs=cacert, certfile=certfile, keyfile=keyfile)
    client.max_inflight_messages_set(WINDOW)
    acked = []
    cpu = []

    def on_publish(*_args):
        acked.append(1)
        if len(acked) == len(payloads):
            client.disconnect()
            print(time.process_time() - cpu[0])

    def on_connect(*_args):
        cpu.append(time.process_time())
        for payload in payloads:  # beyond the window paho queues them
            client.publish(topic, payload, qos=1)

    client.on_connect = on_connect
    client.on_publish = on_publish
    client.connect("localhost", int(port), keepalive=60)
    client.loop_forever()


def daemon_mqtt_path(count, topic, certstore, cacert):
    """The same messages as bare_paho() through the daemon's own event loop,
    connection and publisher, without the spool: WINDOW in flight."""
    from lib.certstore import CertStore
    from lib.connection import Connection
    from lib.eventloop import EventLoop
    from lib.publisher import Publisher

    payloads = [json.dumps({"id": i, "data": "x" * 100}, separators=(",", ":")).encode()
                for i in range(int(count))]
    loop = EventLoop()
    connection = Connection(loop, "device-1", cacert, CertStore(certstore))
    publisher = Publisher(loop, connection, 0, 0)
    waiting = iter(payloads)
    acked = []
    cpu = []

    def send_next():
        payload = next(waiting, None)
        if payload is not None:
            publisher.publish(topic, payload, 1, done)

    def done(_ok):
        acked.append(1)
        send_next()
        if len(acked) == len(payloads):
            print(time.process_time() - cpu[0])
            loop.stop()

    def up():
        cpu.append(time.process_time())
        for _ in range(WINDOW):
            send_next()

    connection.on_up(up)
    connection.start()
    loop.run()


def paho_with_files(spool, port, cacert, certfile, keyfile):
    """The least a publisher of the spool's files must do, on a bare paho client:
    read and parse each file when its turn comes, publish its payload, delete it
    once acknowledged; WINDOW in flight. No checks, no order beyond sorted names."""
    new = os.path.join(spool, "new")
    names = sorted(os.listdir(new))
    client = new_client("paho-with-files")
    client.tls_set(ca_certs=cacert, certfile=certfile, keyfile=keyfile)
    client.max_inflight_messages_set(WINDOW)
    sending = {}  # mid -> name
    cpu = []

    def send_next():
        if names:
            name = names.pop(0)
            with open(os.path.join(new, name), "rb") as f:
                doc = json.loads(f.read())
            payload = json.dumps(doc["payload"], separators=(",", ":")).encode()
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
    client.connect("localhost", int(port), keepalive=60)
    client.loop_forever()


def write_messages(path, sub, count, topic, payload_size, priorities=False):
    payload = "x" * payload_size
    for i in range(count):
        priority = '"priority": %d, ' % (i % 7) if priorities else ""
        with open(os.path.join(path, sub, "m%06d" % i), "w") as f:
            f.write('{"topic": "%s", %s"payload": {"id": %d, "data": "%s"}}'
                    % (topic, priority, i, payload))


def cpu_seconds(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_empty(path):
    new = os.path.join(path, "new")
    while os.listdir(new):
        time.sleep(0.005)


def rate_of(messages):
    return (len(messages) - 1) / (messages[-1].time - messages[0].time)


def max_in_window(times, window):
    best = start = 0
    for end, t in enumerate(times):
        while t - times[start] >= window:
            start += 1
        best = max(best, end - start + 1)
    return best


def percentile(values, pct):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * pct / 100))]


def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        fields = dict(re.findall(r"^(Vm\w+):\s+(\d+) kB", f.read(), re.M))
    return {k: int(v) for k, v in fields.items()}


def main(argv):
    if argv[:1] == ["--bare-paho"]:
        bare_paho(*argv[1:])
        return 0
    if argv[:1] == ["--daemon-mqtt-path"]:
        daemon_mqtt_path(*argv[1:])
        return 0
    if argv[:1] == ["--paho-with-files"]:
        paho_with_files(*argv[1:])
        return 0
    quick = "--quick" in argv
    work = tempfile.mkdtemp(prefix="chariotd-bench-")
    bench = Bench(work, quick)
    try:
        print("chariotd message spool benchmark%s (python %s)"
              % (" (quick)" if quick else "", sys.version.split()[0]), flush=True)
        steps = [name for name in argv if name in STEPS] or STEPS
        for name in steps:
            getattr(bench, name)()
        bench.table()
    finally:
        bench.close()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
