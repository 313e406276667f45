"""A stand-in for AWS's localproxy for the tunnelling tests (no tests here):
a program that records its arguments and environment, and ends on SIGTERM."""

import json
import os
import sys

from process import wait_until

FAKE_PROXY = """#!%s
import json, os, signal, sys, time
record = os.path.join(%r, "proxy-%%d" %% os.getpid())
def terminated(*_):
    with open(record + ".end", "w") as f:
        f.write("terminated")
    sys.exit(0)
signal.signal(signal.SIGTERM, terminated)
with open(record + ".tmp", "w") as f:
    json.dump({"argv": sys.argv[1:], "pid": os.getpid(),
               "token": os.environ.get("AWSIOT_TUNNEL_ACCESS_TOKEN"),
               "region": os.environ.get("AWSIOT_TUNNEL_REGION")}, f)
os.rename(record + ".tmp", record)
while True:
    time.sleep(1)
"""


class FakeProxy:
    """The proxy program for --tunnelproxy, and what its runs recorded."""

    def __init__(self, directory):
        self.dir = directory
        os.makedirs(directory)
        self.path = os.path.join(directory, "localproxy")
        with open(self.path, "w") as f:
            f.write(FAKE_PROXY % (sys.executable, directory))
        os.chmod(self.path, 0o755)

    def runs(self):
        """Records of every start, oldest first."""
        names = [n for n in os.listdir(self.dir) if n.startswith("proxy-")
                 and n[6:].isdigit()]
        records = []
        for name in names:
            with open(os.path.join(self.dir, name)) as f:
                records.append(json.load(f))
        return sorted(records, key=lambda r: os.stat(os.path.join(
            self.dir, "proxy-%d" % r["pid"])).st_mtime_ns)

    def terminated(self, run):
        return os.path.exists(os.path.join(self.dir, "proxy-%d.end" % run["pid"]))

    def wait_runs(self, count, timeout=10):
        return wait_until(lambda: len(self.runs()) >= count and self.runs(), timeout,
                          "%d proxy start(s)" % count)
