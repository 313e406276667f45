"""Fleet provisioning by claim, by CSR, rejected, misconfigured, and the reprovision rotation,
end to end through mosquitto and the emulator."""

import json
import os
import stat
import subprocess

import pytest
from emulator_fixture import TEMPLATE
from process import drop_action, make_certstore

from lib.certstore import CertStore

CONFIGURATION = {"FallbackUrl": "https://www.example.com/test-site",
                 "LocationUrl": "https://example.aws/Nowhere"}


@pytest.fixture
def setup(tmp_path, pki, broker):
    """fleetprov(**overrides) -> (config path, device certstore with no certificate)."""
    endpoint = "localhost:%d" % broker.tls_port
    claimstore = make_certstore(str(tmp_path / "claimstore"), endpoint,
                                [("claim", *pki.issue("claim"))])
    certstore = make_certstore(str(tmp_path / "certstore"), endpoint, [])

    def fleetprov(**overrides):
        config = {"claimstore": claimstore, "template": TEMPLATE,
                  "parameters": {"SerialNumber": "42"},
                  "outfile": str(tmp_path / "thing.json"), "outformat": "JSON",
                  "notifycmd": "echo notified > %s" % (tmp_path / "notified")}
        config.update(overrides)
        path = str(tmp_path / "fleetprov.json")
        with open(path, "w") as f:
            json.dump({k: v for k, v in config.items() if v is not None}, f)
        return path

    return fleetprov, certstore


def preferred(certstore):
    return os.readlink(os.path.join(certstore, "preferred"))


def mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def public_key(kind, path):
    return subprocess.run(["openssl", kind, "-in", path, "-noout", "-pubkey"] if kind == "x509"
                          else ["openssl", "pkey", "-in", path, "-pubout"],
                          capture_output=True, check=True).stdout


def broker_log(broker):
    with open(broker.log) as f:
        return f.read()


def test_claim_provisioning_stores_the_certificate_and_exits_0(tmp_path, setup, emulator,
                                                               daemon_factory, broker):
    fleetprov, certstore = setup
    old_umask = os.umask(0)  # the key must be private whatever the umask
    try:
        d = daemon_factory("--fleetprov=" + fleetprov(), certstore=certstore)
        assert d.wait_exit(30) == 0
    finally:
        os.umask(old_umask)
    [cert_id] = CertStore(certstore).ids()
    assert preferred(certstore) == cert_id
    assert emulator.things["Gw_42"]["certificateId"] == cert_id
    assert emulator.certificates[cert_id]["status"] == "ACTIVE"
    cert, key = CertStore(certstore).paths(cert_id)
    assert mode(os.path.dirname(key)) == 0o700 and mode(key) == 0o600
    assert public_key("x509", cert) == public_key("pkey", key)
    with open(tmp_path / "thing.json") as f:
        assert json.load(f) == {"thing": "Gw_42", "configuration": CONFIGURATION}
    assert (tmp_path / "notified").read_text() == "notified\n"
    # The claim connection used --clientid with the claim certificate.
    assert "as device-1 (p2, c1, k1200, u'claim')" in broker_log(broker)
    [created] = emulator.on("$aws/certificates/create/json/accepted")
    secrets = [created.json()[k] for k in ("privateKey", "certificateOwnershipToken")]
    log = d.log()
    assert not any(s in log for s in secrets + ["PRIVATE KEY", "BEGIN CERTIFICATE"])

    # The supervisor's restart connects with the new certificate.
    d.start()
    d.wait_log("connected to")
    assert "with certificate %s" % cert_id in d.log()
    assert "u'AWS IoT Certificate'" in broker_log(broker)
    assert d.stop() == 0


def test_csr_provisioning_keeps_the_key_on_the_device(setup, emulator, daemon_factory):
    fleetprov, certstore = setup
    d = daemon_factory("--fleetprov=" + fleetprov(csr=True, outfile=None, outformat=None),
                       certstore=certstore)
    assert d.wait_exit(30) == 0
    [cert_id] = CertStore(certstore).ids()
    cert, key = CertStore(certstore).paths(cert_id)
    assert public_key("x509", cert) == public_key("pkey", key)
    assert mode(key) == 0o600
    assert emulator.on("$aws/certificates/create-from-csr/json")
    assert emulator.things["Gw_42"]["certificateId"] == cert_id
    # Nothing that crossed the broker carried a private key.
    assert not [m for m in emulator.messages if b"PRIVATE KEY" in m.payload]
    d.start()
    d.wait_log(r"connected to")
    assert "with certificate %s" % cert_id in d.log()
    assert d.stop() == 0


def test_rejected_provisioning_stores_nothing_and_exits_after_a_pause(
        tmp_path, setup, emulator, daemon_factory):
    fleetprov, certstore = setup
    d = daemon_factory("--fleetprov=" + fleetprov(parameters={"Serial": "42"}),
                       certstore=certstore)
    d.wait_log("fleet provisioning failed: RegisterThing rejected: 400 InvalidParameters: "
               "Missing required parameter: SerialNumber")
    d.wait_log("exiting in 30s")
    # The 30 s pause (docs/interface.md#exit-statuses); the test does not sit through it.
    assert d.proc.poll() is None
    d.kill()
    assert CertStore(certstore).ids() == []
    assert not (tmp_path / "thing.json").exists() and not (tmp_path / "notified").exists()


def test_no_claim_certificate_fails_provisioning(tmp_path, setup, daemon_factory):
    fleetprov, certstore = setup
    empty = make_certstore(str(tmp_path / "empty-claimstore"), "localhost:1", [])
    d = daemon_factory("--fleetprov=" + fleetprov(claimstore=empty), certstore=certstore)
    d.wait_log("fleet provisioning failed: no usable certificate in %s" % empty)
    d.wait_log("exiting in 30s")
    d.kill()


@pytest.mark.parametrize("overrides, problem", [
    ({"claimstore": None}, "'claimstore' is missing or not a string"),
    ({"template": None}, "'template' is missing or not a string"),
    ({"template": "a/b"}, "'a/b' is not a valid template name"),
    ({"parameters": None}, "'parameters' is missing or not an object"),
    ({"parameters": ["SerialNumber", "42"]}, "'parameters' is missing or not an object"),
    ({"outformat": None}, "'outfile' needs 'outformat'"),
    ({"outformat": "XML"}, "'outformat': unknown format 'XML'"),
    ({"csr": "yes"}, "'csr' must be true or false"),
])
def test_bad_config_is_one_error_line_and_status_2(setup, daemon_factory, overrides, problem):
    fleetprov, certstore = setup
    path = fleetprov(**overrides)
    d = daemon_factory("--fleetprov=" + path, certstore=certstore)
    assert d.wait_exit() == 2
    errors = [line for line in d.log().splitlines() if line.startswith("ERROR")]
    assert len(errors) == 1 and errors[0].startswith("ERROR: --fleetprov: %s: %s"
                                                     % (path, problem))


def test_reprovision_rotates_the_certificate_beside_the_working_connection(
        tmp_path, setup, certstore, emulator, daemon_factory, broker):
    fleetprov, _ = setup
    commands = str(tmp_path / "commands")
    d = daemon_factory("--fleetprov=" + fleetprov(), "--commands=" + commands,
                       certstore=certstore)
    d.wait_log("connected to")
    drop_action(commands, "reprovision.1")
    drop_action(commands, "reprovision.2")
    assert d.wait_exit(30) == 0
    assert "reprovisioning is already under way" in d.log()
    # A second connection, its own client id, while the device stayed connected.
    assert "as device-1-reprovision (p2, c1, k1200, u'claim')" in broker_log(broker)
    assert "lost" not in d.log()
    new_id = emulator.things["Gw_42"]["certificateId"]
    assert sorted(CertStore(certstore).ids()) == sorted(["device-1", new_id])
    assert preferred(certstore) == new_id
    d.start()
    d.wait_log("connected to")
    assert "with certificate %s" % new_id in d.log()
    assert d.stop() == 0


def test_failed_reprovision_keeps_the_current_certificate(tmp_path, setup, certstore, emulator,
                                                          daemon_factory):
    fleetprov, _ = setup
    commands = str(tmp_path / "commands")
    d = daemon_factory("--fleetprov=" + fleetprov(template="NoSuchTemplate"),
                       "--commands=" + commands, certstore=certstore)
    d.wait_log("connected to")
    drop_action(commands, "reprovision")
    d.wait_log("fleet provisioning failed: RegisterThing rejected: 404 ResourceNotFound")
    d.wait_log("certificate rotation failed; keeping the current certificate")
    assert d.proc.poll() is None
    assert CertStore(certstore).ids() == ["device-1"] and preferred(certstore) == "device-1"
    assert d.stop() == 0


def test_claim_connection_failures_rotate_the_claimstore(tmp_path, setup, rogue_pki, emulator,
                                                         daemon_factory, broker):
    fleetprov, certstore = setup
    config = fleetprov()
    with open(config) as f:
        claimstore = json.load(f)["claimstore"]
    # A claim certificate the broker does not trust, preferred over the good one.
    make_certstore(claimstore, "localhost:%d" % broker.tls_port,
                   [("rogue", *rogue_pki.issue("rogue"))])
    os.symlink("rogue", os.path.join(claimstore, "preferred"))
    d = daemon_factory("--fleetprov=" + config, certstore=certstore)
    d.wait_log(r"fleet provisioning failed: 6 connection failures in a row", timeout=60)
    d.wait_log("exiting in 30s")
    assert "rotated preferred certificate from rogue to claim" in d.log()
    assert preferred(claimstore) == "claim" and CertStore(certstore).ids() == []
    d.kill()
    # The supervisor's restart provisions with the rotated claim certificate.
    d.start()
    assert d.wait_exit(30) == 0
    assert preferred(certstore) == emulator.things["Gw_42"]["certificateId"]


def test_the_rotation_client_id_stays_within_aws_limit():
    from lib.provisioning import rotation_clientid

    assert rotation_clientid("gw-7") == "gw-7-reprovision"
    for longest in ("g" * 128, "ü" * 64, "g" + "ü" * 63 + "x"):  # 128 bytes each
        rotated = rotation_clientid(longest)
        assert len(rotated.encode()) <= 128 and rotated.endswith("-reprovision")
        assert longest.startswith(rotated[:-len("-reprovision")])
