"""Fleet provisioning emulation (docs/aws-facts.md#fleet-provisioning), CBOR and templates.

The end-to-end tests run as a device would: over the broker's TLS
listener with a claim certificate, then with the certificate the emulator
issued.
"""

import json
import subprocess
import threading
import time

import pytest
from emulator_fixture import TEMPLATE, TEMPLATES, write_templates

from emulator import cbor
from emulator.cloud import Emulator, new_client
from emulator.provisioning import (
    ProvisioningService,
    TemplateError,
    load_templates,
    templates_from,
)

CREATE = "$aws/certificates/create/%s"
CSR = "$aws/certificates/create-from-csr/%s"
REGISTER = "$aws/provisioning-templates/%s/provision/%%s" % TEMPLATE
EMPTY_TOKEN = {"statusCode": 400, "errorCode": "InvalidCertificateOwnershipToken",
               "errorMessage": "Certificate ownership token cannot be empty."}


class Clock:
    def __init__(self, now=1_700_000_000):
        self.now = now

    def __call__(self):
        return self.now


# ---- CBOR ------------------------------------------------------------------

@pytest.mark.parametrize("hex_bytes, value", [  # RFC 8949 appendix A
    ("00", 0), ("17", 23), ("1818", 24), ("1903e8", 1000), ("1b000000e8d4a51000", 1000000000000),
    ("20", -1), ("3863", -100), ("f90000", 0.0), ("f93c00", 1.0), ("fa47c35000", 100000.0),
    ("fb3ff199999999999a", 1.1), ("f4", False), ("f5", True), ("f6", None),
    ("4401020304", b"\x01\x02\x03\x04"), ("6449455446", "IETF"), ("62c3bc", "\u00fc"),
    ("83010203", [1, 2, 3]), ("a201020304", {1: 2, 3: 4}),
    ("a26161016162820203", {"a": 1, "b": [2, 3]}),
    ("9f018202039f0405ffff", [1, [2, 3], [4, 5]]),
    ("bf61610161629f0203ffff", {"a": 1, "b": [2, 3]}),
    ("7f657374726561646d696e67ff", "streaming"),
    ("c074323031332d30332d32315432303a30343a30305a", "2013-03-21T20:04:00Z"),
])
def test_cbor_decodes_rfc_vectors(hex_bytes, value):
    assert cbor.loads(bytes.fromhex(hex_bytes)) == value


@pytest.mark.parametrize("value", [
    {"certificateOwnershipToken": "x" * 300, "parameters": {"SerialNumber": "1"}},
    [0, 23, 24, 255, 256, 65535, 65536, 2**32, 2**64 - 1, -1, -2**64, 1.5, "", b""],
    {"nested": {"list": [None, True, False, {"k": "ü"}]}},
])
def test_cbor_round_trip(value):
    assert cbor.loads(cbor.dumps(value)) == value


@pytest.mark.parametrize("data", [b"", b"\x18", b"\x62a", b"\x01\x02", b"\xff", b"\x1c",
                                  b"\x62\xff\xfe", b"\xa1\x80\x01"])
def test_cbor_rejects_bad_input(data):
    with pytest.raises(cbor.CborError):
        cbor.loads(data)


def test_cbor_refuses_unencodable_values():
    with pytest.raises(cbor.CborError):
        cbor.dumps({"x": object()})
    with pytest.raises(cbor.CborError):
        cbor.dumps(2**64)


# ---- templates -------------------------------------------------------------

def test_templates_file_is_loaded_and_rendered(tmp_path):
    templates = load_templates(write_templates(tmp_path / "t.json"))
    template = templates[TEMPLATE]
    values = template.resolve({"SerialNumber": "1", "Extra": "ignored"}, "cert-id")
    assert template.render(values) == ("Gw_1", {
        "FallbackUrl": "https://www.example.com/test-site",
        "LocationUrl": "https://example.aws/Nowhere"})


@pytest.mark.parametrize("spec, complaint", [
    ({"T": {"parameters": {}}}, "thingName"),
    ({"T": {"thingName": "x_{Serial}"}}, "{Serial}"),
    ({"T": {"thingName": "x", "deviceConfiguration": {"u": "{Nope}"}}}, "{Nope}"),
    ({"T": {"thingName": "x", "certificateStatus": "REVOKED"}}, "certificateStatus"),
    ({"T": {"thingName": "x", "parameters": {"P": {"default": 1}}}}, "default"),
    ({"T": {"thingName": "x", "parameters": ["P"]}}, "parameters"),
    (["T"], "object"),
])
def test_bad_templates_are_refused(spec, complaint):
    with pytest.raises(TemplateError, match=complaint.replace("{", r"\{").replace("}", r"\}")):
        templates_from(spec)


def test_missing_templates_file(tmp_path):
    with pytest.raises(TemplateError):
        load_templates(str(tmp_path / "absent.json"))


# ---- the service directly ----------------------------------------------------

@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def service(pki, clock, tmp_path):
    return ProvisioningService(pki, templates_from(TEMPLATES), clock, str(tmp_path / "work"))


def register(service, token, fmt="json", **parameters):
    request = {"certificateOwnershipToken": token, "parameters": parameters}
    payload = cbor.dumps(request) if fmt == "cbor" else json.dumps(request).encode()
    return dict(service.handle(REGISTER % fmt, payload))


def test_create_then_register(service, pki, tmp_path):
    created = dict(service.handle(CREATE % "json", b""))[CREATE % "json" + "/accepted"]
    assert created["privateKey"].startswith("-----BEGIN RSA PRIVATE KEY-----")
    assert len(created["certificateId"]) == 64
    cert = tmp_path / "new.crt"
    cert.write_text(created["certificatePem"])
    assert _openssl("verify", "-CAfile", pki.ca_cert, str(cert)).returncode == 0
    assert service.certificates[created["certificateId"]]["status"] == "PENDING_ACTIVATION"

    replies = register(service, created["certificateOwnershipToken"], SerialNumber="7",
                       DeviceLocation="Seattle")
    assert replies == {REGISTER % "json" + "/accepted": {
        "thingName": "Gw_7", "deviceConfiguration": {
            "FallbackUrl": "https://www.example.com/test-site",
            "LocationUrl": "https://example.aws/Seattle"}}}
    assert service.certificates[created["certificateId"]]["status"] == "ACTIVE"
    assert service.things["Gw_7"]["certificateId"] == created["certificateId"]
    assert service.things["Gw_7"]["parameters"]["SerialNumber"] == "7"


def _token(service):
    return service.create_keys_and_certificate()["certificateOwnershipToken"]


def _rejection(replies, fmt="json"):
    assert list(replies) == [REGISTER % fmt + "/rejected"], replies
    return replies[REGISTER % fmt + "/rejected"]


def test_tokens_are_single_use(service):
    token = _token(service)
    assert REGISTER % "json" + "/accepted" in register(service, token, SerialNumber="1")
    assert _rejection(register(service, token, SerialNumber="1")) == {
        "statusCode": 400, "errorCode": "InvalidCertificateOwnershipToken",
        "errorMessage": "Certificate ownership token is invalid."}


def test_tokens_expire_after_an_hour(service, clock):
    token = _token(service)
    clock.now += 3599
    early = _token(service)
    clock.now += 1
    assert _rejection(register(service, token, SerialNumber="1"))["errorMessage"] == (
        "Certificate ownership token has expired.")
    assert REGISTER % "json" + "/accepted" in register(service, early, SerialNumber="1")


def test_empty_unknown_and_missing_parameters(service):
    assert _rejection(register(service, "", SerialNumber="1")) == EMPTY_TOKEN
    assert _rejection(dict(service.handle(REGISTER % "json", b"{}"))) == EMPTY_TOKEN
    assert _rejection(register(service, "forged", SerialNumber="1"))["errorCode"] == (
        "InvalidCertificateOwnershipToken")
    token = _token(service)
    missing = _rejection(register(service, token, DeviceLocation="x"))
    assert missing == {"statusCode": 400, "errorCode": "InvalidParameters",
                       "errorMessage": "Missing required parameter: SerialNumber"}
    assert _rejection(register(service, token, SerialNumber="has space"))["errorCode"] == (
        "InvalidParameters")
    not_strings = dict(service.handle(REGISTER % "json", json.dumps(
        {"certificateOwnershipToken": token, "parameters": {"SerialNumber": 1}}).encode()))
    assert _rejection(not_strings)["errorCode"] == "InvalidParameters"
    # A failed registration does not use the token up.
    assert REGISTER % "json" + "/accepted" in register(service, token, SerialNumber="1")


def test_unknown_template_and_bad_payloads(service):
    replies = dict(service.handle("$aws/provisioning-templates/Nope/provision/json",
                                  json.dumps({"certificateOwnershipToken": "t"}).encode()))
    assert replies["$aws/provisioning-templates/Nope/provision/json/rejected"]["statusCode"] == 404
    assert _rejection(dict(service.handle(REGISTER % "json", b"{oops")))["errorCode"] == (
        "InvalidPayload")
    assert _rejection(dict(service.handle(REGISTER % "cbor", b"\xff")), "cbor")["errorCode"] == (
        "InvalidPayload")
    bad_csr = dict(service.handle(CSR % "json", json.dumps(
        {"certificateSigningRequest": "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n"
                                      "-----END CERTIFICATE REQUEST-----\n"}).encode()))
    assert bad_csr[CSR % "json" + "/rejected"]["statusCode"] == 400
    no_csr = dict(service.handle(CSR % "json", b"{}"))
    assert no_csr[CSR % "json" + "/rejected"]["statusCode"] == 400


def test_template_can_leave_certificate_inactive(service):
    created = service.create_keys_and_certificate()
    service.register_thing("InactiveTemplate", {
        "certificateOwnershipToken": created["certificateOwnershipToken"],
        "parameters": {"SerialNumber": "9"}})
    assert service.certificates[created["certificateId"]]["status"] == "INACTIVE"
    assert service.things["Sensor_9"]["deviceConfiguration"] == {}


def test_ignores_other_topics(service):
    for topic in (CREATE % "json" + "/accepted", CREATE % "xml", REGISTER % "json" + "/rejected",
                  "$aws/certificates/create", "$aws/things/x/shadow/get"):
        assert service.handle(topic, b"") == [], topic


# ---- as a device, over TLS ---------------------------------------------------

class TlsDevice:
    """An MQTT client on the broker's TLS listener that records what it receives."""

    def __init__(self, broker, pki, cert, key, client_id, topics=()):
        self.messages = []
        self.cond = threading.Condition()
        self.result = None
        connected = threading.Event()
        self.client = new_client(client_id)
        self.client.tls_set(ca_certs=pki.ca_cert, certfile=str(cert), keyfile=str(key))
        self.client.on_message = self._on_message

        def on_connect(client, userdata, flags, reason, *rest):
            self.result = reason
            connected.set()
        self.client.on_connect = on_connect
        subscribed = threading.Event()
        self.client.on_subscribe = lambda *a: subscribed.set()
        self.client.connect("localhost", broker.tls_port, keepalive=30)
        self.client.loop_start()
        assert connected.wait(10), "no CONNACK from the TLS listener"
        assert self.result == 0, "connection refused: %s" % self.result
        if topics:
            self.client.subscribe([(t, 1) for t in topics])
            assert subscribed.wait(10)

    def _on_message(self, client, userdata, msg):
        with self.cond:
            self.messages.append((msg.topic, msg.payload))
            self.cond.notify_all()

    def publish(self, topic, payload):
        self.client.publish(topic, payload, qos=1).wait_for_publish(10)

    def wait_topic(self, topic, timeout=10):
        """The payload of the first message on TOPIC."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                found = [p for t, p in self.messages if t == topic]
                if found:
                    return found[0]
                assert time.monotonic() < deadline, "nothing on %s; saw %r" % (
                    topic, [t for t, _ in self.messages])
                self.cond.wait(0.2)

    def close(self):
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def claim(broker, pki):
    cert, key = pki.issue("claim-cert")
    device = TlsDevice(broker, pki, cert, key, "claim-client", topics=(
        "$aws/certificates/#", "$aws/provisioning-templates/%s/provision/#" % TEMPLATE))
    yield device
    device.close()


def _connects(broker, pki, tmp_path, thing, certificate_pem, key_path):
    cert_path = tmp_path / (thing + ".crt")
    cert_path.write_text(certificate_pem)
    device = TlsDevice(broker, pki, cert_path, key_path, thing)  # asserts CONNACK success
    device.close()


def test_create_keys_register_and_connect_with_new_certificate(emulator, claim, broker, pki,
                                                               tmp_path):
    claim.publish(CREATE % "json", b"")
    created = json.loads(claim.wait_topic(CREATE % "json" + "/accepted"))
    claim.publish(REGISTER % "json", json.dumps({
        "certificateOwnershipToken": created["certificateOwnershipToken"],
        "parameters": {"SerialNumber": "1", "DeviceLocation": "Seattle"}}))
    registered = json.loads(claim.wait_topic(REGISTER % "json" + "/accepted"))
    assert registered["thingName"] == "Gw_1"
    assert registered["deviceConfiguration"]["LocationUrl"] == "https://example.aws/Seattle"
    assert emulator.things["Gw_1"]["certificateId"] == created["certificateId"]
    assert emulator.certificates[created["certificateId"]]["status"] == "ACTIVE"
    key = tmp_path / "Gw_1.key"
    key.write_text(created["privateKey"])
    _connects(broker, pki, tmp_path, "Gw_1", created["certificatePem"], key)


def test_csr_flow_in_cbor(emulator, claim, broker, pki, tmp_path):
    key, csr = tmp_path / "device.key", tmp_path / "device.csr"
    assert _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                    "-keyout", str(key), "-out", str(csr), "-subj", "/CN=Gw_2").returncode == 0
    claim.publish(CSR % "cbor", cbor.dumps({"certificateSigningRequest": csr.read_text()}))
    created = cbor.loads(claim.wait_topic(CSR % "cbor" + "/accepted"))
    assert set(created) == {"certificateId", "certificatePem", "certificateOwnershipToken"}
    cert = tmp_path / "issued.crt"
    cert.write_text(created["certificatePem"])
    assert _public_key("x509", cert) == _public_key("pkey", key)
    claim.publish(REGISTER % "cbor", cbor.dumps({
        "certificateOwnershipToken": created["certificateOwnershipToken"],
        "parameters": {"SerialNumber": "2"}}))
    assert cbor.loads(claim.wait_topic(REGISTER % "cbor" + "/accepted"))["thingName"] == "Gw_2"
    _connects(broker, pki, tmp_path, "Gw_2", created["certificatePem"], key)


def test_bad_tokens_and_parameters_rejected_over_mqtt(emulator, claim):
    claim.publish(REGISTER % "json", json.dumps({"certificateOwnershipToken": "",
                                                 "parameters": {"SerialNumber": "3"}}))
    assert json.loads(claim.wait_topic(REGISTER % "json" + "/rejected")) == EMPTY_TOKEN
    claim.publish(CREATE % "cbor", b"")
    token = cbor.loads(claim.wait_topic(CREATE % "cbor" + "/accepted"))["certificateOwnershipToken"]
    claim.publish(REGISTER % "cbor", cbor.dumps({"certificateOwnershipToken": token,
                                                 "parameters": {"DeviceLocation": "x"}}))
    assert cbor.loads(claim.wait_topic(REGISTER % "cbor" + "/rejected")) == {
        "statusCode": 400, "errorCode": "InvalidParameters",
        "errorMessage": "Missing required parameter: SerialNumber"}
    assert emulator.things == {}


def test_expired_and_reused_tokens_rejected_over_mqtt(broker, pki, claim, tmp_path):
    clock = Clock()
    templates = write_templates(tmp_path / "templates.json")
    with Emulator(broker.plain_port, ca=pki, templates=templates, clock=clock,
                  workdir=str(tmp_path / "work")).start() as emulator:
        claim.publish(CREATE % "json", b"")
        token = json.loads(claim.wait_topic(CREATE % "json" + "/accepted"))[
            "certificateOwnershipToken"]
        request = json.dumps({"certificateOwnershipToken": token,
                              "parameters": {"SerialNumber": "4"}})
        clock.now += 3600
        claim.publish(REGISTER % "json", request)
        rejected = json.loads(claim.wait_topic(REGISTER % "json" + "/rejected"))
        assert rejected["errorCode"] == "InvalidCertificateOwnershipToken"
        assert rejected["errorMessage"] == "Certificate ownership token has expired."
        assert emulator.things == {}

        clock.now -= 60  # back inside the hour: register, then reuse
        claim.messages.clear()
        claim.publish(REGISTER % "json", request)
        assert json.loads(claim.wait_topic(REGISTER % "json" + "/accepted"))["thingName"] == "Gw_4"
        claim.messages.clear()
        claim.publish(REGISTER % "json", request)
        assert json.loads(claim.wait_topic(REGISTER % "json" + "/rejected"))["errorMessage"] == (
            "Certificate ownership token is invalid.")


def _openssl(*args):
    return subprocess.run(("openssl",) + args, capture_output=True, text=True)


def _public_key(kind, path):
    if kind == "x509":
        proc = _openssl("x509", "-in", str(path), "-noout", "-pubkey")
    else:
        proc = _openssl("pkey", "-in", str(path), "-pubout")
    assert proc.returncode == 0, proc.stderr
    return proc.stdout
