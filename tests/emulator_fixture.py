"""pytest fixtures `emulator`: the AWS IoT Core emulator on the test broker,
and `serve`: the same as its command line runs it (`python3 -m emulator serve`).

Function scope: each test gets a fresh emulator (empty shadows, jobs and
provisioning records) connected to the module's `broker` on its plain
port, signing provisioned certificates with the session's `pki` CA, with
TEMPLATES written to a templates file. `Process`, `cli` and
`one_line_error` run the emulator's command line for the tests of it.
"""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from emulator.cloud import Emulator

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TEMPLATE = "GatewayTemplate"
TEMPLATES = {
    TEMPLATE: {
        "parameters": {"SerialNumber": {}, "DeviceLocation": {"default": "Nowhere"}},
        "thingName": "Gw_{SerialNumber}",
        "deviceConfiguration": {
            "FallbackUrl": "https://www.example.com/test-site",
            "LocationUrl": "https://example.aws/{DeviceLocation}",
        },
    },
    "InactiveTemplate": {
        "parameters": {"SerialNumber": {}},
        "thingName": "Sensor_{SerialNumber}",
        "certificateStatus": "INACTIVE",
    },
}


def write_templates(path):
    """Write TEMPLATES as a templates file at PATH; returns PATH as a string."""
    with open(path, "w") as f:
        json.dump(TEMPLATES, f)
    return str(path)


@pytest.fixture
def emulator(broker, pki, tmp_path):
    templates = write_templates(tmp_path / "templates.json")
    emu = Emulator(broker.plain_port, ca=pki, templates=templates,
                   workdir=str(tmp_path / "emulator"), tick_interval=0.2)
    emu.start()
    yield emu
    emu.stop()


class Process:
    """A `python3 -m emulator ...` process with stdout and stderr in files."""

    def __init__(self, directory, name, *args):
        self.out_path = os.path.join(directory, name + ".out")
        self.err_path = os.path.join(directory, name + ".err")
        with open(self.out_path, "w") as out, open(self.err_path, "w") as err:
            self.proc = subprocess.Popen([sys.executable, "-m", "emulator"] + list(args),
                                         cwd=ROOT, stdout=out, stderr=err,
                                         stdin=subprocess.DEVNULL)

    def output(self):
        with open(self.out_path) as out, open(self.err_path) as err:
            return out.read(), err.read()

    def wait_output(self, text, timeout=15):
        deadline = time.monotonic() + timeout
        while True:
            out, err = self.output()
            if text in out or text in err:
                return out, err
            assert self.proc.poll() is None, "exited %s before %r:\n%s%s" % (
                self.proc.returncode, text, out, err)
            assert time.monotonic() < deadline, "no %r within %s s:\n%s%s" % (
                text, timeout, out, err)
            time.sleep(0.05)

    def terminate(self, timeout=10):
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError("still running %s s after SIGTERM" % timeout) from None


def cli(port, *args, timeout=20):
    return subprocess.run([sys.executable, "-m", "emulator"] + list(args) + ["--port", str(port)],
                          cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def one_line_error(result):
    assert result.returncode == 1, result
    assert result.stdout == ""
    assert result.stderr.startswith("emulator: error: ") and result.stderr.count("\n") == 1, \
        result.stderr
    return result.stderr


@pytest.fixture
def serve(broker, pki, tmp_path):
    templates = write_templates(tmp_path / "templates.json")
    process = Process(str(tmp_path), "serve", "serve", "--port", str(broker.plain_port),
                      "--ca-dir", pki.dir, "--templates", templates)
    process.wait_output("and subscribed")
    yield process
    assert process.terminate() == 0, process.output()
