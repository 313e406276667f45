"""pytest fixture `emulator`: the AWS IoT Core emulator on the test broker.

Function scope: each test gets a fresh emulator (empty shadows, jobs and
provisioning records) connected to the module's `broker` on its plain
port, signing provisioned certificates with the session's `pki` CA, with
TEMPLATES written to a templates file.
"""

import json

import pytest

from emulator.cloud import Emulator

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
