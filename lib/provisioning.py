"""Fleet provisioning by claim (docs/interface.md#fleet-provisioning and
docs/aws-facts.md#fleet-provisioning).

With no usable device certificate the daemon runs only this part. It
connects with the claim certificate of the config's `claimstore` under
--clientid (the device connection is not running, so the id is free), asks
for a new certificate (CreateKeysAndCertificate; with `"csr": true`,
CreateCertificateFromCsr for a key made on the device by the `openssl`
command line, so the key never crosses the network), registers the thing
(RegisterThing), writes the outfile, then commits: stores the certificate as
a new certstore entry and makes it preferred. It then runs notifycmd and
exits 0 so that the supervisor restarts the daemon on the new certificate.
Any failure before the commit waits FAILURE_PAUSE and exits non-zero; an
unusable config file is one error line and exit status 2, like a malformed
option, since waiting will not mend it.

The `reprovision` command (certificate rotation) runs the same flow beside
the working device connection, under the client id CID-reprovision (two
connections with one client id evict each other), and exits 0 for a restart
only once the new certificate is preferred; a failed rotation leaves the
device as it was. The claim connection counts its failures and rotates the
claimstore's `preferred` like the device connection does. This module does
not touch the device connection.
"""

import json
import logging
import re

from . import awslimits, children, formats, outfile
from .certstore import PREFERRED, CertStore, CertStoreError
from .connection import Connection
from .publisher import Publisher

log = logging.getLogger("chariotd")

FAILURE_PAUSE = 30.0
# Covers a claim connection that keeps dropping and a service that never
# answers; repeated failures to connect end the flow sooner.
FLOW_TIMEOUT = 120.0
ROTATION_SUFFIX = "-reprovision"
TEMPLATE_NAME = re.compile(r"[0-9A-Za-z_-]{1,36}")
CERTIFICATE_ID = re.compile(r"[0-9A-Za-z_-]{1,128}")
PEM_BLOCK = re.compile(r"-----BEGIN ([A-Z ]+)-----\n.+?\n-----END \1-----\n", re.S)
OPENSSL_TIMEOUT = 60


class ConfigError(Exception):
    """The --fleetprov file is unusable; the message names it and says why."""


def start(daemon):
    """No usable certificate: provision one, then exit for a restart."""
    try:
        config = load_config(daemon.options.fleetprov)
    except ConfigError as e:
        log.error("%s", e)
        daemon.exit(2)
        return None

    def finished(ok):
        if ok:
            daemon.exit(0)
        else:
            log.error("exiting in %ds", FAILURE_PAUSE)
            daemon.exit(1, FAILURE_PAUSE)

    return ClaimFlow(daemon, config, daemon.options.clientid, finished)


def rotate(daemon):
    """The reprovision command; returns the running flow, or raises ConfigError."""
    config = load_config(daemon.options.fleetprov)

    def finished(ok):
        if ok:
            log.info("restarting with the new certificate")
            daemon.exit(0)
        else:
            log.error("certificate rotation failed; keeping the current certificate")

    return ClaimFlow(daemon, config, rotation_clientid(daemon.options.clientid), finished)


def rotation_clientid(clientid):
    """CID-reprovision, CID cut short (at a character) if the whole would be
    over AWS's limit: AWS refuses the CONNECT of a longer one."""
    room = awslimits.CLIENTID_LIMIT - len(ROTATION_SUFFIX)
    return clientid.encode()[:room].decode("utf-8", "ignore") + ROTATION_SUFFIX


def load_config(path):
    """The --fleetprov file as a checked dict; ConfigError if it is unusable."""
    try:
        with open(path, "rb") as f:
            config = json.loads(f.read())
    except OSError as e:
        raise ConfigError("--fleetprov: cannot read %s: %s" % (path, e.strerror)) from None
    except (ValueError, RecursionError) as e:
        raise ConfigError("--fleetprov: %s is not valid JSON: %s" % (path, e)) from None
    problem = _config_problem(config)
    if problem:
        raise ConfigError("--fleetprov: %s: %s" % (path, problem))
    return config


def _config_problem(config):
    if not isinstance(config, dict):
        return "not a JSON object"
    for key in ("claimstore", "template"):
        if not isinstance(config.get(key), str) or not config[key]:
            return "%r is missing or not a string" % key
    if not TEMPLATE_NAME.fullmatch(config["template"]):
        return "%r is not a valid template name" % config["template"]
    if not isinstance(config.get("parameters"), dict):
        return "'parameters' is missing or not an object"
    for key in ("outfile", "notifycmd"):
        if key in config and (not isinstance(config[key], str) or not config[key]):
            return "%r is not a string" % key
    if "outfile" in config:
        if "outformat" not in config:
            return "'outfile' needs 'outformat'"
        try:
            formats.get(config["outformat"])
        except formats.FormatError as e:
            return "'outformat': %s" % e
    if not isinstance(config.get("csr", False), bool):
        return "'csr' must be true or false"
    return None


def key_and_csr_command(common_name):
    """argv for openssl printing a new EC P-256 key and a CSR for it to stdout."""
    # In -subj, `/` separates attributes and `\` escapes; a CN holds 64 characters.
    subject = "/CN=" + common_name[:64].replace("\\", "\\\\").replace("/", "\\/")
    return ["openssl", "req", "-new", "-newkey", "ec", "-pkeyopt",
            "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", "-", "-out", "-",
            "-subj", subject]


class ClaimFlow:
    """One claim connection working its way to a new certificate; finished(ok) once."""

    def __init__(self, daemon, config, clientid, finished):
        self._daemon = daemon
        self._config = config
        self._finished = finished
        opts = daemon.options
        loop = daemon.loop
        claimstore = CertStore(config["claimstore"])
        self._conn = Connection(loop, clientid, opts.cacert, claimstore, opts.keepalive)
        self._publisher = Publisher(loop, self._conn, opts.publish_rate, opts.publish_bytes_rate)
        if config.get("csr"):
            self._create = ("$aws/certificates/create-from-csr/json", "CreateCertificateFromCsr")
        else:
            self._create = ("$aws/certificates/create/json", "CreateKeysAndCertificate")
        self._register = ("$aws/provisioning-templates/%s/provision/json" % config["template"],
                          "RegisterThing")
        for (topic, _), handler in ((self._create, self._created),
                                    (self._register, self._registered)):
            self._conn.subscribe(topic + "/accepted", handler)
            self._conn.subscribe(topic + "/rejected", self._rejected)
        self._conn.on_up(self._request_certificate)
        self._conn.on_fatal(lambda error: self._fail(str(error)))
        self._awaiting = None  # (topic, operation) of the request in flight
        self._key = self._csr = None  # PEM, when the key is made here
        self._certificate = None  # (id, certificate PEM, key PEM)
        self.running = True
        self._deadline = loop.call_later(FLOW_TIMEOUT, self._fail,
                                         "not done within %ds" % FLOW_TIMEOUT)
        log.info("fleet provisioning with template %s and the claim certificate in %s",
                 config["template"], config["claimstore"])
        if config.get("csr"):
            children.run(loop, key_and_csr_command(opts.clientid), self._key_made,
                         timeout=OPENSSL_TIMEOUT, shell=False)
        else:
            self._conn.start()

    def stop(self):
        """Daemon exit: drop the claim connection without finishing."""
        if self.running:
            self._end()

    def _key_made(self, result):
        if not self.running:
            return
        if not result.ok:
            self._fail("openssl could not make a key and CSR: %s" % result.describe())
            return
        blocks = {m.group(1): m.group(0)
                  for m in PEM_BLOCK.finditer(result.stdout.decode("ascii", "replace"))}
        self._key = blocks.get("PRIVATE KEY")
        self._csr = blocks.get("CERTIFICATE REQUEST")
        if not (self._key and self._csr):
            self._fail("openssl printed no key or no CSR")
            return
        self._conn.start()

    def _request_certificate(self):
        # Every (re)connect starts over: a reply may have been lost with the connection.
        request = {"certificateSigningRequest": self._csr} if self._csr else {}
        self._send(self._create, request)

    def _send(self, step, request):
        topic, operation = step
        log.info("fleet provisioning: %s", operation)
        self._awaiting = step

        def sent(ok):
            if not ok:
                self._fail("could not send the %s request" % operation)

        self._publisher.publish(topic, json.dumps(request).encode(), 1, sent)

    def _created(self, _topic, payload):
        if self._awaiting != self._create:
            return
        needed = ("certificateId", "certificatePem", "certificateOwnershipToken")
        reply = self._reply(payload, needed if self._key else needed + ("privateKey",))
        if reply is None:
            return
        cert_id = reply["certificateId"]
        if not CERTIFICATE_ID.fullmatch(cert_id) or cert_id == PREFERRED:
            self._fail("certificate id %r cannot name a certstore entry" % cert_id[:80])
            return
        self._certificate = (cert_id, reply["certificatePem"], self._key or reply["privateKey"])
        self._send(self._register, {"certificateOwnershipToken":
                                    reply["certificateOwnershipToken"],
                                    "parameters": self._config["parameters"]})

    def _registered(self, _topic, payload):
        if self._awaiting != self._register:
            return
        reply = self._reply(payload, ("thingName",))
        if reply is not None:
            self._commit(reply["thingName"], reply.get("deviceConfiguration") or {})

    def _reply(self, payload, keys):
        """The accepted reply as a dict with strings at keys; None (flow failed) if not."""
        try:
            reply = json.loads(payload)
        except (ValueError, RecursionError):
            reply = None
        if not isinstance(reply, dict) or \
                not all(isinstance(reply.get(k), str) and reply[k] for k in keys):
            self._fail("%s: malformed reply" % self._awaiting[1])
            return None
        return reply

    def _rejected(self, topic, payload):
        if self._awaiting is None or topic != self._awaiting[0] + "/rejected":
            return
        try:
            error = json.loads(payload)
        except (ValueError, RecursionError):
            error = None
        if not isinstance(error, dict):
            error = {}
        code = " ".join(str(error[k]) for k in ("statusCode", "errorCode") if k in error)
        self._fail("%s rejected: %s: %s" % (self._awaiting[1], code or "no code",
                                            error.get("errorMessage", "no message")))

    def _commit(self, thing, configuration):
        cert_id, cert_pem, key_pem = self._certificate
        path = self._config.get("outfile")
        if path and path != outfile.DEV_NULL:
            try:
                text = formats.dump(self._config["outformat"],
                                    {"thing": thing, "configuration": configuration})
                outfile.replace(path, text.encode())
            except formats.FormatError as e:
                self._fail("cannot write %s: %s" % (path, e))
                return
            except OSError as e:
                self._fail("cannot write %s: %s" % (path, e.strerror))
                return
        store = self._daemon.certstore
        try:
            store.add(cert_id, cert_pem, key_pem)
            store.make_preferred(cert_id)
        except (OSError, CertStoreError) as e:
            self._fail("cannot store certificate %s in %s: %s" % (
                cert_id, store.path, getattr(e, "strerror", None) or e))
            return
        log.info("provisioned thing %s; certificate %s is now preferred in %s", thing, cert_id,
                 store.path)
        self._end()
        command = self._config.get("notifycmd")
        if command:
            children.run(self._daemon.loop, command, self._notified)
        else:
            self._finished(True)

    def _notified(self, result):
        if not result.ok:
            log.warning("fleet provisioning notifycmd %s", result.describe())
        self._finished(True)

    def _fail(self, reason):
        if not self.running:
            return
        log.error("fleet provisioning failed: %s", reason)
        self._end()
        self._finished(False)

    def _end(self):
        self.running = False
        self._awaiting = None
        self._certificate = None
        self._deadline.cancel()
        self._conn.stop(lambda: None)
