"""Real links for the fault suite: the broker and the daemon each in a network
namespace of its own, joined by a veth pair, and a second veth pair from the
test's own namespace to the broker's (for the emulator and observers). All
names start with `cdf-`; `close()` removes everything, and the addresses are
private ones seen only inside these namespaces and on the `cdf-` link.

    daemon ns  cdf-N-d0 10.X.1.2/24 ==== cdf-N-b0 10.X.1.1/24  broker ns
    test ns    cdf-N-h0 10.X.2.2/24 ==== cdf-N-b1 10.X.2.1/24  broker ns
"""

import os
import shutil
import subprocess
import sys
import time

from emulator.broker import AWS_SETTINGS, MAX_PAYLOAD, mosquitto_path

RELAY = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "relay.py")


def sh(*argv, check=True):
    return subprocess.run(argv, check=check, capture_output=True, timeout=30, text=True)


def _listening(ns, port):
    out = sh("ip", "netns", "exec", ns, "ss", "-Hltn", "sport = :%d" % port, check=False).stdout
    return bool(out.strip())


def _free_octet(start):
    """An X for 10.X.2.0/24 that no route of the test's own namespace uses
    (the host end of the second pair lives there, beside other helpers')."""
    routes = sh("ip", "-4", "route", "show", "table", "all").stdout
    for i in range(150):
        octet = 100 + (start - 100 + i) % 150
        if "10.%d." % octet not in routes:
            return octet
    raise RuntimeError("no free 10.X.2.0/24 for the fault links")


def available():
    """None when real links can be made here, else why not (for pytest.skip)."""
    if os.geteuid() != 0:
        return "the real-link fault tests need root (network namespaces)"
    if not shutil.which("ip") and not os.path.exists("/usr/sbin/ip"):
        return "the real-link fault tests need iproute2's ip (apt-get install iproute2)"
    if not shutil.which("ss") and not os.path.exists("/usr/bin/ss"):
        return "the real-link fault tests need ss (apt-get install iproute2)"
    return None


class Net:
    TLS_PORT = 8883
    PLAIN_PORT = 1883
    RELAY_PORT = 9883

    def __init__(self, pki, workdir):
        n = os.getpid() % 10000
        self.tag = "cdf-%d" % n
        self.ns_d, self.ns_b = self.tag + "-d", self.tag + "-b"
        octet = _free_octet(100 + os.getpid() % 150)
        self.device_ip, self.broker_ip = "10.%d.1.2" % octet, "10.%d.1.1" % octet
        self.host_ip, self.broker_host_ip = "10.%d.2.2" % octet, "10.%d.2.1" % octet
        self.workdir = workdir
        self.pki = pki
        self.procs = []
        self.broker = None
        try:
            self._build()
            self.server_cert = self._server_cert()
        except BaseException:
            self.close()
            raise

    def _build(self):
        t = self.tag
        for ns in (self.ns_d, self.ns_b):
            sh("ip", "netns", "add", ns)
            sh("ip", "-n", ns, "link", "set", "lo", "up")
        sh("ip", "link", "add", t + "-d0", "netns", self.ns_d, "type", "veth",
           "peer", "name", t + "-b0", "netns", self.ns_b)
        sh("ip", "link", "add", t + "-h0", "type", "veth", "peer", "name", t + "-b1",
           "netns", self.ns_b)
        for ns, dev, ip in ((self.ns_d, t + "-d0", self.device_ip),
                            (self.ns_b, t + "-b0", self.broker_ip),
                            (self.ns_b, t + "-b1", self.broker_host_ip)):
            sh("ip", "-n", ns, "addr", "add", ip + "/24", "dev", dev)
            sh("ip", "-n", ns, "link", "set", dev, "up")
        sh("ip", "addr", "add", self.host_ip + "/24", "dev", t + "-h0")
        sh("ip", "link", "set", t + "-h0", "up")

    def _server_cert(self):
        """A server certificate for the broker's address, from the test CA."""
        key, csr, cert, ext = (os.path.join(self.workdir, "netbroker" + s)
                               for s in (".key", ".csr", ".crt", ".ext"))
        sh("openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
           "-nodes", "-keyout", key, "-out", csr, "-subj", "/CN=netbroker")
        with open(ext, "w") as f:
            f.write("subjectAltName=IP:%s\nextendedKeyUsage=serverAuth\n" % self.broker_ip)
        sh("openssl", "x509", "-req", "-in", csr, "-CA", self.pki.ca_cert, "-CAkey",
           self.pki.ca_key, "-CAcreateserial", "-out", cert, "-days", "30", "-sha256",
           "-extfile", ext)
        return cert, key

    def in_ns(self, ns, argv, **kw):
        p = subprocess.Popen(["ip", "netns", "exec", ns] + list(argv), **kw)
        self.procs.append(p)
        return p

    def start_broker(self):
        conf = os.path.join(self.workdir, "netbroker.conf")
        self.broker_log = os.path.join(self.workdir, "netbroker.log")
        with open(conf, "w") as f:
            f.write("user root\nallow_anonymous true\nlog_dest file %s\nlog_type all\n"
                    % self.broker_log)
            f.write(AWS_SETTINGS.format(max_packet=MAX_PAYLOAD + 512))
            f.write("listener %d 0.0.0.0\nmax_qos 1\ncafile %s\ncertfile %s\nkeyfile %s\n"
                    "require_certificate true\nuse_identity_as_username true\n"
                    % ((self.TLS_PORT, self.pki.ca_cert) + self.server_cert))
            f.write("listener %d 0.0.0.0\nmax_qos 1\n" % self.PLAIN_PORT)
        self.broker = self.in_ns(self.ns_b, [mosquitto_path(), "-c", conf],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self._wait_listening(self.ns_b, self.TLS_PORT)
        self._wait_listening(self.ns_b, self.PLAIN_PORT)

    def start_relay(self, latency, rate):
        """The slow link: a relay in the broker's namespace in front of its TLS port."""
        relay = self.in_ns(self.ns_b, [sys.executable, RELAY,
                                       "%s:%d" % (self.broker_ip, self.RELAY_PORT),
                                       "127.0.0.1:%d" % self.TLS_PORT, "--latency=%g" % latency,
                                       "--rate=%g" % rate], stdout=subprocess.PIPE, text=True)
        assert relay.stdout.readline().strip() == "listening"
        return relay

    def _wait_listening(self, ns, port, timeout=10):
        deadline = time.monotonic() + timeout
        while not _listening(ns, port):
            if time.monotonic() > deadline:
                raise AssertionError("nothing listens on %s port %d" % (ns, port))
            time.sleep(0.05)

    def link(self, up):
        sh("ip", "-n", self.ns_d, "link", "set", self.tag + "-d0", "up" if up else "down")

    def blackhole(self, on):
        """The broker's answers to the device vanish: no RST, no ICMP, nothing."""
        sh("ip", "-n", self.ns_b, "route", "add" if on else "del", "blackhole",
           self.device_ip + "/32")

    def daemon_command(self):
        return ["ip", "netns", "exec", self.ns_d]

    def close(self):
        for p in reversed(self.procs):
            if p.poll() is None:
                p.kill()
                p.wait()
        for ns in (self.ns_d, self.ns_b):
            sh("ip", "netns", "del", ns, check=False)  # takes its veth ends along
        sh("ip", "link", "del", self.tag + "-h0", check=False)
