"""Fleet provisioning by claim (docs/aws-facts.md#fleet-provisioning), with no MQTT in it.

`ProvisioningService` answers CreateKeysAndCertificate,
CreateCertificateFromCsr and RegisterThing requests in `json` or `cbor`
format as a list of (topic, payload dict); `encoding_of(topic)` tells the
caller how to encode each payload. Certificates are signed by the CA it is
given (an `emulator.pki.Pki`), so a broker trusting that CA accepts them.
Ownership tokens are single-use and expire after an hour of the injectable
clock. RegisterThing checks the request against templates from a small
JSON file (format in emulator/README.md) and records the thing.

It does not keep new certificates from connecting before RegisterThing
(the broker trusts every certificate of the CA), delete unregistered
certificates, run pre-provisioning hooks, create policies or thing groups.
Error codes other than InvalidCertificateOwnershipToken are guesses.
"""

import base64
import hashlib
import json
import os
import re
import secrets
import subprocess
import tempfile
import time

from . import cbor
from .pki import Pki

TOKEN_LIFETIME = 3600
FORMATS = ("json", "cbor")
CERTIFICATE_ID_PARAMETER = "AWS::IoT::Certificate::Id"
CERTIFICATE_SUBJECT = "/CN=AWS IoT Certificate"
CERTIFICATE_STATUSES = ("ACTIVE", "INACTIVE")

_THING_NAME = re.compile(r"^[a-zA-Z0-9:_-]{1,128}$")
_REFERENCE = re.compile(r"\{([A-Za-z0-9:_.-]+)\}")


class TemplateError(ValueError):
    """The templates file is missing, unreadable or malformed."""


class ProvisioningError(Exception):
    """A rejected request, as AWS's {statusCode, errorCode, errorMessage}."""

    def __init__(self, status, code, message):
        super().__init__("%d %s: %s" % (status, code, message))
        self.status = status
        self.code = code
        self.message = message

    def payload(self):
        return {"statusCode": self.status, "errorCode": self.code, "errorMessage": self.message}


class OpensslError(RuntimeError):
    """The openssl command failed."""


# ---- topics and encodings ---------------------------------------------------

def parse_topic(topic):
    """(api, template name or None, format) for a request topic, else None."""
    parts = topic.split("/")
    if parts[:2] == ["$aws", "certificates"] and len(parts) == 4 and parts[3] in FORMATS:
        api = {"create": "create", "create-from-csr": "create-from-csr"}.get(parts[2])
        return (api, None, parts[3]) if api else None
    if (parts[:2] == ["$aws", "provisioning-templates"] and len(parts) == 5
            and parts[3] == "provision" and parts[4] in FORMATS):
        return "register", parts[2], parts[4]
    return None


def encoding_of(topic):
    """"cbor" for a provisioning reply topic in cbor format, else "json"."""
    parts = topic.split("/")
    if (topic.startswith(("$aws/certificates/", "$aws/provisioning-templates/"))
            and len(parts) >= 2 and parts[-2] == "cbor"):
        return "cbor"
    return "json"


def decode(payload, fmt):
    """The request object from PAYLOAD bytes in FMT; {} for an empty payload."""
    if not payload:
        return {}
    try:
        value = cbor.loads(payload) if fmt == "cbor" else json.loads(bytes(payload).decode("utf-8"))
    except ValueError:  # CborError, JSONDecodeError and UnicodeDecodeError all are
        raise ProvisioningError(400, "InvalidPayload", "The payload is not valid %s." % fmt
                                ) from None
    if not isinstance(value, dict):
        raise ProvisioningError(400, "InvalidPayload", "The payload must be a map.")
    return value


def encode(payload, fmt):
    if fmt == "cbor":
        return cbor.dumps(payload)
    return json.dumps(payload, separators=(",", ":")).encode("utf-8")


# ---- templates --------------------------------------------------------------

class Template:
    """One provisioning template: parameters, a thing name pattern, device configuration."""

    def __init__(self, name, spec):
        if not isinstance(spec, dict):
            raise TemplateError("template %s: must be an object" % name)
        self.name = name
        self.parameters = _parameters(name, spec.get("parameters", {}))
        self.thing_name = spec.get("thingName")
        if not isinstance(self.thing_name, str) or not self.thing_name:
            raise TemplateError("template %s: thingName must be a non-empty string" % name)
        self.configuration = spec.get("deviceConfiguration", {})
        if not isinstance(self.configuration, dict):
            raise TemplateError("template %s: deviceConfiguration must be an object" % name)
        self.certificate_status = spec.get("certificateStatus", "ACTIVE")
        if self.certificate_status not in CERTIFICATE_STATUSES:
            raise TemplateError("template %s: certificateStatus must be ACTIVE or INACTIVE" % name)
        self._check_references()

    def _check_references(self):
        known = set(self.parameters) | {CERTIFICATE_ID_PARAMETER}
        for text in [self.thing_name] + _strings(self.configuration):
            for ref in _REFERENCE.findall(text):
                if ref not in known:
                    raise TemplateError("template %s: {%s} is not a declared parameter"
                                        % (self.name, ref))

    def resolve(self, given, certificate_id):
        """The parameter values for a request; ProvisioningError if one is missing."""
        if not isinstance(given, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in given.items()):
            raise ProvisioningError(400, "InvalidParameters",
                                    "parameters must be a map of strings.")
        values = {CERTIFICATE_ID_PARAMETER: certificate_id}
        for name, default in self.parameters.items():
            if name in given:
                values[name] = given[name]
            elif default is not None:
                values[name] = default
            else:
                raise ProvisioningError(400, "InvalidParameters",
                                        "Missing required parameter: %s" % name)
        return values

    def render(self, values):
        """(thing name, device configuration) with {Parameter} references filled in."""
        thing = _substitute(self.thing_name, values)
        if not _THING_NAME.match(thing):
            raise ProvisioningError(400, "InvalidParameters", "Invalid thing name: %s" % thing)
        return thing, _render(self.configuration, values)


def load_templates(path):
    """{name: Template} from the JSON file at PATH (see emulator/README.md)."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError) as e:
        raise TemplateError("cannot read templates file %s: %s" % (path, e)) from None
    return templates_from(data)


def templates_from(data):
    """{name: Template} from the templates file's parsed content."""
    if not isinstance(data, dict):
        raise TemplateError("the templates file must hold a JSON object of templates")
    return {name: Template(name, spec) for name, spec in data.items()}


def _parameters(template, spec):
    """{name: default or None (required)} from the template's "parameters" object."""
    if not isinstance(spec, dict):
        raise TemplateError("template %s: parameters must be an object" % template)
    result = {}
    for name, options in spec.items():
        if not isinstance(options, dict):
            raise TemplateError("template %s: parameter %s must be an object" % (template, name))
        default = options.get("default")
        if default is not None and not isinstance(default, str):
            raise TemplateError("template %s: default of %s must be a string" % (template, name))
        result[name] = default
    return result


def _strings(value):
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return []


def _substitute(text, values):
    return _REFERENCE.sub(lambda m: values[m.group(1)], text)


def _render(value, values):
    if isinstance(value, str):
        return _substitute(value, values)
    if isinstance(value, dict):
        return {k: _render(v, values) for k, v in value.items()}
    if isinstance(value, list):
        return [_render(v, values) for v in value]
    return value


# ---- the service ------------------------------------------------------------

class ProvisioningService:
    """Certificates, ownership tokens and provisioned things; requests in, replies out."""

    def __init__(self, ca=None, templates=None, clock=time.time, workdir=None):
        self.ca = Pki(ca) if isinstance(ca, str) else ca
        self.templates = templates or {}
        self.clock = clock
        self.workdir = workdir
        self.certificates = {}   # certificateId -> record
        self.things = {}         # thingName -> record
        self._tokens = {}        # token -> {"certificateId", "expires"}

    def handle(self, topic, payload):
        """Answer an MQTT request on TOPIC; [] if TOPIC is not a provisioning request."""
        parsed = parse_topic(topic)
        if parsed is None:
            return []
        api, template, fmt = parsed
        try:
            request = {} if api == "create" else decode(payload, fmt)
            if api == "create":
                reply = self.create_keys_and_certificate()
            elif api == "create-from-csr":
                reply = self.create_certificate_from_csr(request.get("certificateSigningRequest"))
            else:
                reply = self.register_thing(template, request)
        except ProvisioningError as e:
            return [(topic + "/rejected", e.payload())]
        return [(topic + "/accepted", reply)]

    def create_keys_and_certificate(self):
        """A new RSA key and certificate: {certificateId, certificatePem, privateKey, token}."""
        with self._scratch() as scratch:
            key = os.path.join(scratch, "key.pem")
            csr = os.path.join(scratch, "csr.pem")
            _generate_rsa_key(key)
            _openssl("req", "-new", "-key", key, "-subj", CERTIFICATE_SUBJECT, "-out", csr)
            reply = self._issue(scratch, csr)
            reply["privateKey"] = _read(key)
        return reply

    def create_certificate_from_csr(self, csr_pem):
        """A certificate for the CSR's key: {certificateId, certificatePem, token}."""
        if not isinstance(csr_pem, str) or "BEGIN CERTIFICATE REQUEST" not in csr_pem:
            raise ProvisioningError(400, "InvalidCsr",
                                    "certificateSigningRequest must be a PEM certificate request.")
        with self._scratch() as scratch:
            csr = os.path.join(scratch, "request.csr")
            with open(csr, "w") as f:
                f.write(csr_pem)
            try:
                _openssl("req", "-in", csr, "-noout", "-verify")
            except OpensslError:
                raise ProvisioningError(400, "InvalidCsr",
                                        "The certificate signing request is not valid.") from None
            return self._issue(scratch, csr)

    def register_thing(self, template_name, request):
        """Check the token and parameters against the template; {thingName, deviceConfiguration}."""
        template = self.templates.get(template_name)
        if template is None:
            raise ProvisioningError(404, "ResourceNotFound",
                                    "Template %s does not exist." % template_name)
        token = request.get("certificateOwnershipToken")
        certificate_id = self._check_token(token)
        values = template.resolve(request.get("parameters", {}), certificate_id)
        thing, configuration = template.render(values)
        del self._tokens[token]  # single use, and only when registration succeeds
        certificate = self.certificates[certificate_id]
        certificate.update(status=template.certificate_status, thingName=thing)
        self.things[thing] = {"thingName": thing, "certificateId": certificate_id,
                              "template": template_name, "parameters": dict(values),
                              "deviceConfiguration": configuration,
                              "registeredAt": int(self.clock())}
        return {"thingName": thing, "deviceConfiguration": configuration}

    # -- internals --

    def _check_token(self, token):
        if not token:
            raise ProvisioningError(400, "InvalidCertificateOwnershipToken",
                                    "Certificate ownership token cannot be empty.")
        entry = self._tokens.get(token) if isinstance(token, str) else None
        if entry is None:
            raise ProvisioningError(400, "InvalidCertificateOwnershipToken",
                                    "Certificate ownership token is invalid.")
        if self.clock() >= entry["expires"]:
            raise ProvisioningError(400, "InvalidCertificateOwnershipToken",
                                    "Certificate ownership token has expired.")
        return entry["certificateId"]

    def _issue(self, scratch, csr):
        """Sign CSR with the CA, record the certificate, make an ownership token."""
        if self.ca is None:
            raise ProvisioningError(500, "InternalFailure", "The emulator has no CA to sign with.")
        # Pki.sign_csr keeps a scratch file named after the certificate in the
        # CA directory, so the name must be unique across emulators.
        cert = os.path.join(scratch, "certificate-%s.pem" % secrets.token_hex(8))
        try:
            self.ca.sign_csr(csr, cert)
        except RuntimeError:
            raise ProvisioningError(400, "InvalidCsr",
                                    "The certificate signing request could not be signed."
                                    ) from None
        pem = _read(cert)
        certificate_id = certificate_fingerprint(pem)
        now = self.clock()
        self.certificates[certificate_id] = {"certificateId": certificate_id,
                                             "certificatePem": pem,
                                             "status": "PENDING_ACTIVATION",
                                             "createdAt": int(now), "thingName": None}
        token = secrets.token_urlsafe(96)
        self._tokens[token] = {"certificateId": certificate_id, "expires": now + TOKEN_LIFETIME}
        return {"certificateId": certificate_id, "certificatePem": pem,
                "certificateOwnershipToken": token}

    def _scratch(self):
        if self.workdir:
            os.makedirs(self.workdir, exist_ok=True)
        return tempfile.TemporaryDirectory(prefix="provisioning-", dir=self.workdir)


def certificate_fingerprint(pem):
    """SHA-256 of the certificate's DER bytes, in hex: the form of AWS certificate ids."""
    body = pem.split("-----BEGIN CERTIFICATE-----", 1)[1].split("-----END CERTIFICATE-----")[0]
    return hashlib.sha256(base64.b64decode("".join(body.split()))).hexdigest()


def _generate_rsa_key(path):
    # AWS hands out "BEGIN RSA PRIVATE KEY" (PKCS#1) keys; OpenSSL 3 needs
    # -traditional for that form, OpenSSL 1.1 writes it by default.
    try:
        _openssl("genrsa", "-traditional", "-out", path, "2048")
    except OpensslError:
        _openssl("genrsa", "-out", path, "2048")


def _openssl(*args):
    proc = subprocess.run(("openssl",) + args, capture_output=True, text=True)
    if proc.returncode != 0:
        raise OpensslError("openssl %s failed: %s" % (args[0], proc.stderr.strip()))


def _read(path):
    with open(path) as f:
        return f.read()
