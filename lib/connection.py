"""The daemon's one MQTT connection, driven from the event loop.

Owns the paho client: TLS with the broker verified against the root CA
(hostname included; there is no switch to turn that off), the client
certificate from the certstore, ALPN on port 443, keepalive and last will,
MQTT 3.1.1. It reconnects with exponential backoff and full jitter and
tells the failures that point at the certificate (counted for the supervisor
policy, docs/interface.md#running-under-a-supervisor: rotate, exit) from
the network's (waited out for as long as they last: offline is normal). It
routes incoming messages to subscribers and tells publishers when their
message is done; it does not queue, pace or retry publishes (the
publisher does) and knows nothing of shadows or files. paho itself, its
1.6/2.x differences and its private state are behind lib/mqttlib.py.
"""

import logging
import os
import ssl
import threading
import types

from .certstore import CertStoreError
from .mqttlib import Link, code, connack_reason, credentials_refused, topic_matches

log = logging.getLogger("chariotd")

MAX_FAILURES = 5
BACKOFF_BASE = 0.5
BACKOFF_SPREAD = 4.0  # first retries anywhere in 1-4 s: a fleet dropped at once returns spread
BACKOFF_CAP = 300.0
BACKOFF_FLOOR = 1.0  # AWS IoT Core accepts one CONNECT per second per client id
CONNACK_TIMEOUT = 30.0
SUBSCRIBE_BATCH = 8  # AWS: at most 8 topic filters per SUBSCRIBE

# TLS alerts about our certificate (OpenSSL's names): a broker refusing it sends
# one in the handshake (TLS 1.2) or right after it (TLS 1.3: the client finishes first).
CERTIFICATE_ALERTS = frozenset((
    "SSLV3_ALERT_BAD_CERTIFICATE", "SSLV3_ALERT_UNSUPPORTED_CERTIFICATE",
    "SSLV3_ALERT_CERTIFICATE_REVOKED", "SSLV3_ALERT_CERTIFICATE_EXPIRED",
    "SSLV3_ALERT_CERTIFICATE_UNKNOWN", "TLSV1_ALERT_UNKNOWN_CA",
    "TLSV1_ALERT_ACCESS_DENIED", "TLSV13_ALERT_CERTIFICATE_REQUIRED",
))


class ConnectionFailed(Exception):
    """Too many connection failures in a row; the supervisor should restart us."""


def certificate_alert(error):
    """Whether error is the peer's TLS alert about our certificate."""
    return isinstance(error, ssl.SSLError) and getattr(error, "reason", None) in CERTIFICATE_ALERTS


def endpoint_hung_up(error, timed_out):
    """Whether a connection lost after the TLS handshake and before CONNACK was
    the endpoint's doing, not the network's: a TLS alert on our certificate, a
    close or reset (AWS's answer to an inactive or unknown certificate, or to a
    policy denying iot:Connect). error: the exception that ended it, if any."""
    if error is None:
        return not timed_out  # the peer closed, or paho's keepalive gave up
    if certificate_alert(error):
        return True
    return isinstance(error, (ConnectionResetError, BrokenPipeError, ssl.SSLEOFError)) or (
        isinstance(error, ssl.SSLError) and "EOF" in str(error).upper())


def backoff_cap():
    """The backoff's cap: BACKOFF_CAP, or less when the environment variable
    CHARIOTD_BACKOFF_CAP says so (a lab, a test that waits out many attempts)."""
    try:
        return min(BACKOFF_CAP, max(BACKOFF_FLOOR, float(os.environ["CHARIOTD_BACKOFF_CAP"])))
    except (KeyError, ValueError):
        return BACKOFF_CAP


def backoff_delay(failures, rng=None, cap=BACKOFF_CAP):
    """Seconds to wait before attempt number failures+1: full jitter above the floor.
    rng: tests' random.Random; else os.urandom (the random module costs 0.2 MB)."""
    ceiling = min(cap, max(BACKOFF_SPREAD, BACKOFF_BASE * 2 ** min(failures, 30)))  # no overflow
    share = rng.random() if rng else int.from_bytes(os.urandom(7), "big") / 2 ** 56
    return BACKOFF_FLOOR + share * max(0.0, ceiling - BACKOFF_FLOOR)


def tls_context(cacert, certfile, keyfile, alpn=None):
    """Client TLS context: broker verified against cacert, hostname checked."""
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=cacert)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(certfile, keyfile)
    if alpn:
        ctx.set_alpn_protocols(alpn)
    return ctx


def describe_error(error):
    """A short reason for a failed TCP connect or TLS handshake."""
    if isinstance(error, ssl.SSLCertVerificationError):
        return "TLS: certificate verify failed (%s)" % error.verify_message
    if isinstance(error, ssl.SSLError):
        reason = getattr(error, "reason", None)  # None: SSLZeroReturnError on Python 3.9
        return "TLS: %s" % (reason.lower().replace("_", " ") if reason
                            else "connection closed during the handshake")
    return getattr(error, "strerror", None) or str(error) or type(error).__name__


class Connection:
    def __init__(self, loop, clientid, cacert, certstore, keepalive=1200, will=None):
        self._loop = loop
        self._clientid = clientid
        self._cacert = cacert
        self._certstore = certstore
        self._keepalive = keepalive
        self._will = will
        self.failures = 0  # failures pointing at the certificate, in a row
        self.attempts = 0  # failed attempts in a row, whatever the cause: the backoff's
        self._backoff_cap = backoff_cap()
        self.connected = False  # CONNACK accepted and subscriptions acknowledged
        self._stopping = False
        self._subscriptions = {}  # filter -> list of handler(topic, payload)
        self._pending_subacks = {}  # mid -> callback once acknowledged
        self._publishes = {}  # mid -> done(ok)
        self._up, self._down, self._fatal, self._errors = [], [], [], []
        self._endpoint = self._cert_id = self._link = self._connack_timer = None

    # -- interface for the daemon's parts ---------------------------------

    def on_up(self, fn):
        """fn() each time the connection is up and every subscription acknowledged."""
        self._up.append(fn)

    def on_down(self, fn):
        self._down.append(fn)

    def on_fatal(self, fn):
        """fn(exception): the connection gave up (certstore unusable, too many failures)."""
        self._fatal.append(fn)

    def on_error(self, fn):
        """fn(text) for each failed attempt or lost connection, with the reason."""
        self._errors.append(fn)

    @property
    def endpoint(self):
        return self._endpoint

    @property
    def certificate_id(self):
        return self._cert_id

    def subscribe(self, topic_filter, handler):
        """Route messages matching topic_filter to handler(topic, payload), for good."""
        first = topic_filter not in self._subscriptions
        self._subscriptions.setdefault(topic_filter, []).append(handler)
        if first and self.connected:
            self._send_subscribe([topic_filter], None)

    def publish(self, topic, payload, qos, done):
        """Hand one message to paho; done(ok) once acknowledged (QoS 1) or written (QoS 0).
        Returns False when it could not even be queued (done is then not called)."""
        if not self.connected:
            return False
        try:
            mid = self._link.publish(topic, payload, qos)
        except ValueError as e:
            log.error("cannot publish to %s: %s", topic, e)
            return False
        self._publishes[mid] = done
        return True

    def forget_in_flight(self):
        """Forget the publishes not answered yet (their done is never called):
        paho would send them all again after the reconnect by itself, and the
        publisher sends them in an order of its own (lib/publisher.py)."""
        if self._link is not None:
            self._link.forget_in_flight()
        self._publishes.clear()

    def start(self):
        try:
            self._setup_client()
        except (CertStoreError, OSError, ssl.SSLError) as e:
            self._give_up(e)
            return
        self._attempt()

    def stop(self, done):
        """Disconnect cleanly (publishing the will payload first); done() after."""
        self._stopping = True
        if self._link is not None:
            self._loop.remove_deadline(self._link.misc)
        self._cancel_connack_timer()
        if not self.connected:
            self._close()
            done()
            return
        finished = []

        def disconnect(_ok=True):
            if not finished:
                finished.append(True)
                self._link.disconnect()
                self._close()
                done()

        if self._will:
            topic, payload = self._will
            if self.publish(topic, payload, 1, disconnect):
                self._loop.call_later(2.0, disconnect)  # the broker may never answer
                return
        disconnect()

    # -- connecting -------------------------------------------------------

    def _setup_client(self):
        endpoint = self._certstore.endpoint()
        cert_id = self._certstore.preferred()
        certfile, keyfile = self._certstore.paths(cert_id)
        self._endpoint = endpoint
        self._cert_id = cert_id
        link = self._link = Link(self._loop, self._clientid, types.SimpleNamespace(
            connack=self._connack, disconnected=self._disconnected, published=self._published,
            subacked=self._subacked, message=self._dispatch,
            lost=lambda e: self._disconnected(describe_error(e), error=e)))
        self._loop.add_deadline(link.keepalive_due, link.misc)
        link.configure(endpoint.host, endpoint.port, self._keepalive,
                       tls_context(self._cacert, certfile, keyfile, endpoint.alpn), self._will)
        log.info("connecting to %s as %s with certificate %s", endpoint, self._clientid, cert_id)

    def _attempt(self):
        if self._stopping:
            return
        self._link.take_error()
        # The TCP connect and TLS handshake block, so they run off the loop
        # thread; nothing else touches the client until they are done.
        threading.Thread(target=self._open_socket, daemon=True).start()

    def _open_socket(self):
        try:
            self._link.open()
        except (OSError, ssl.SSLError, ValueError) as e:
            self._loop.post(self._socket_failed, e)
            return
        self._loop.post(self._socket_opened)

    def _socket_failed(self, error):
        reason = "cannot connect to %s: %s" % (self._endpoint, describe_error(error))
        if certificate_alert(error):
            self._failure(reason)
        else:
            # Refused, unreachable, timed out, not resolved, reset before TLS
            # completed, or a broker we cannot trust: not the certificate's fault.
            self._offline(reason)

    def _socket_opened(self):
        if self._stopping:
            self._close()
            return
        self._link.attach()
        self._connack_timer = self._loop.call_later(CONNACK_TIMEOUT, self._connack_timeout)

    def _connack_timeout(self):
        self._connack_timer = None
        log.error("no CONNACK from %s within %ds", self._endpoint, CONNACK_TIMEOUT)
        self._close()
        self._offline("no CONNACK")

    def _cancel_connack_timer(self):
        if self._connack_timer:
            self._connack_timer.cancel()
            self._connack_timer = None

    def _connack(self, rc):
        self._cancel_connack_timer()
        if code(rc) != 0:
            reason = connack_reason(rc)
            self._close()
            if credentials_refused(rc):
                self._failure("connection refused: %s" % reason)
            else:
                self._offline("connection refused: %s" % reason)
            return
        self.failures = self.attempts = 0
        log.info("connected to %s", self._endpoint)
        filters = list(self._subscriptions)
        if filters:
            self._send_subscribe(filters, self._ready)
        else:
            self._ready()

    def _ready(self):
        self.connected = True
        self._tell(self._up)

    def _send_subscribe(self, filters, when_acked):
        batches = [filters[i:i + SUBSCRIBE_BATCH] for i in range(0, len(filters), SUBSCRIBE_BATCH)]
        remaining = [len(batches)]

        def acked():
            remaining[0] -= 1
            if remaining[0] == 0 and when_acked:
                when_acked()

        for batch in batches:
            mid = self._link.subscribe(batch)
            if mid is not None:
                self._pending_subacks[mid] = (batch, acked)

    def _subacked(self, mid, granted):
        batch, acked = self._pending_subacks.pop(mid, (None, None))
        if batch is None:
            return
        for topic_filter, g in zip(batch, granted):
            if code(g) >= 0x80:
                log.error("subscription to %s refused by the broker", topic_filter)
        acked()

    # -- running ------------------------------------------------------------

    def _published(self, mid):
        done = self._publishes.pop(mid, None)
        if done:
            done(True)

    def _dispatch(self, topic, payload):
        for topic_filter, handlers in self._subscriptions.items():
            if topic_matches(topic_filter, topic):
                for handler in handlers:
                    handler(topic, payload)

    # -- losing the connection ---------------------------------------------

    def _disconnected(self, reason, timed_out=False, error=None):
        """The socket is gone, for reason (text); error is the exception that
        ended it, when one did; timed_out says paho's keepalive gave up."""
        paho_error, paho_exception = self._link.take_error()
        if paho_error:
            reason = "%s: %s" % (reason, paho_error)
        error = error or paho_exception
        was_up = self.connected
        had_socket = self._link.attached
        self._close()
        if self._stopping or not had_socket:
            return
        self._cancel_connack_timer()
        if was_up:
            log.warning("connection to %s lost (%s); reconnecting", self._endpoint, reason)
            self._tell(self._errors, "connection lost (%s)" % reason)
            self._loop.call_later(backoff_delay(0), self._attempt)
            return
        reason = "disconnected before the connection was accepted (%s)" % reason
        if endpoint_hung_up(error, timed_out):
            self._failure(reason)
        else:
            self._offline(reason)

    def _close(self):
        was_up = self.connected
        self.connected = False
        self._pending_subacks.clear()
        if self._link is not None:
            self._link.detach()
        if was_up:
            self._tell(self._down)

    def _failure(self, reason):
        """A failure pointing at the certificate: counted for the supervisor policy
        (rotate `preferred` and exit after MAX_FAILURES in a row)."""
        self.failures += 1
        log.error("%s (failure %d in a row)", reason, self.failures)
        self._tell(self._errors, reason)
        if self.failures > MAX_FAILURES:
            rotated = self._certstore.rotate()
            if rotated:
                log.error("rotated preferred certificate from %s to %s", self._cert_id, rotated)
            self._give_up(ConnectionFailed("%d connection failures in a row" % self.failures))
            return
        self._retry()

    def _offline(self, reason):
        """A failure of the network's (or the broker's) making: waited out for
        as long as it lasts; nothing is counted, rotated or given up."""
        log.warning("%s (offline; attempt %d in a row)", reason, self.attempts + 1)
        self._tell(self._errors, reason)
        self._retry()

    def _retry(self):
        self.attempts += 1
        delay = backoff_delay(self.attempts, cap=self._backoff_cap)
        log.info("reconnecting in %.1fs", delay)
        self._loop.call_later(delay, self._attempt)

    def _give_up(self, error):
        self._stopping = True
        if self._link is not None:
            self._loop.remove_deadline(self._link.misc)
        self._tell(self._fatal, error)

    @staticmethod
    def _tell(listeners, *args):
        for fn in listeners:
            fn(*args)
