"""Shared fixtures: a test CA, a real mosquitto, observers and the daemon."""

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from observer import Observer  # noqa: E402
from process import DaemonProcess, make_certstore  # noqa: E402

from emulator.broker import Broker  # noqa: E402
from emulator.pki import Pki  # noqa: E402

# The IoT Core emulator fixture (`emulator`) lives in its own file.
pytest_plugins = ["emulator_fixture"]


@pytest.fixture(scope="session")
def pki(tmp_path_factory):
    """A CA with a localhost server certificate, issuing device certificates."""
    ca = Pki(str(tmp_path_factory.mktemp("pki")))
    ca.server = ca.issue("server", server=True)
    return ca


@pytest.fixture(scope="session")
def rogue_pki(tmp_path_factory):
    """A CA the broker does not trust."""
    return Pki(str(tmp_path_factory.mktemp("rogue-pki")), name="rogue-ca")


@pytest.fixture(scope="module")
def broker(pki, tmp_path_factory):
    b = Broker(str(tmp_path_factory.mktemp("broker")), pki.ca_cert, *pki.server).start()
    yield b
    b.stop()


@pytest.fixture
def observer(broker):
    obs = Observer(broker.plain_port)
    yield obs
    obs.close()


@pytest.fixture
def certstore(tmp_path, pki, broker):
    """A certstore with one valid device certificate pointing at the broker."""
    cert, key = pki.issue("device-1")
    return make_certstore(str(tmp_path / "certstore"), "localhost:%d" % broker.tls_port,
                          [("device-1", cert, key)])


@pytest.fixture
def daemon_factory(tmp_path, pki):
    """daemon_factory(*options, certstore=..., clientid=...) -> started Daemon."""
    daemons = []

    def make(*options, certstore, clientid="device-1", start=True, env=None):
        args = ["--clientid=" + clientid, "--cacert=" + pki.ca_cert,
                "--certstore=" + certstore] + list(options)
        d = DaemonProcess(str(tmp_path), args, env=env)
        daemons.append(d)
        return d.start() if start else d

    yield make
    for d in daemons:
        d.close()


def pytest_addoption(parser):
    parser.addoption("--soak", action="store_true",
                     help="also run the tests marked soak (long fault runs; `make soak`)")


def pytest_configure(config):
    config.addinivalue_line("markers", "soak: long (over ~20 s) fault test; run by `make soak`")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--soak"):
        return
    skip = pytest.mark.skip(reason="soak test (over ~20 s): `make soak` runs it")
    for item in items:
        if "soak" in item.keywords:
            item.add_marker(skip)
