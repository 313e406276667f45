"""Run mosquitto configured as close to AWS IoT Core as its settings allow.

Two listeners on 127.0.0.1: TLS requiring a client certificate from the
given CA (the device side) and plain MQTT (the cloud side: the emulator,
tests, the demo's app). Which AWS behaviours mosquitto cannot reproduce is
listed in README.md. This module starts and stops the process; it does not
speak MQTT.
"""

import os
import shutil
import signal
import socket
import subprocess
import time

# AWS IoT Core: 128 KB payload, QoS 0/1 only, keepalive at most 1200 s,
# 100 unacknowledged QoS 1 messages per direction.
AWS_SETTINGS = """\
max_packet_size {max_packet}
max_keepalive 1200
max_inflight_messages 100
max_queued_messages 0
persistence false
"""
MAX_PAYLOAD = 128 * 1024


class BrokerError(RuntimeError):
    pass


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Broker:
    """One mosquitto process in DIRECTORY with a TLS and a plain listener."""

    def __init__(self, directory, ca_cert, server_cert, server_key, tls_port=None,
                 plain_port=None, max_packet=None):
        """max_packet: mosquitto's max_packet_size (it disconnects a client that
        sends a bigger packet); by default room for AWS's payload limit."""
        self.dir = directory
        os.makedirs(directory, exist_ok=True)
        self.tls_port = tls_port or free_port()
        self.plain_port = plain_port or free_port()
        self.conf = os.path.join(directory, "mosquitto.conf")
        self.log = os.path.join(directory, "mosquitto.log")
        # The packet limit covers the fixed header and the topic too; leave
        # room for a full-length topic on top of AWS's payload limit.
        settings = AWS_SETTINGS.format(max_packet=max_packet or MAX_PAYLOAD + 512)
        with open(self.conf, "w") as f:
            f.write("user root\nallow_anonymous true\nlog_dest file %s\n" % self.log)
            f.write("log_type all\n" + settings)
            f.write("listener %d 127.0.0.1\nmax_qos 1\ncafile %s\ncertfile %s\nkeyfile %s\n"
                    "require_certificate true\nuse_identity_as_username true\n"
                    % (self.tls_port, ca_cert, server_cert, server_key))
            f.write("listener %d 127.0.0.1\nmax_qos 1\n" % self.plain_port)
        self.proc = None

    def start(self, timeout=10):
        self.proc = subprocess.Popen([mosquitto_path(), "-c", self.conf],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BrokerError("mosquitto exited with %s; see %s" % (self.proc.returncode,
                                                                       self.log))
            if _listening(self.tls_port) and _listening(self.plain_port):
                return self
            time.sleep(0.02)
        self.stop()
        raise BrokerError("mosquitto did not listen within %s s" % timeout)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def restart(self):
        self.stop()
        return self.start()


def mosquitto_path():
    # Debian puts it in /usr/sbin, which is not on an ordinary user's PATH.
    found = shutil.which("mosquitto") or shutil.which("mosquitto", path="/usr/sbin:/sbin")
    if not found:
        raise BrokerError("mosquitto is not installed (Debian/Ubuntu: apt-get install mosquitto)")
    return found


def _listening(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False
