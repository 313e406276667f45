"""The daemon's one MQTT connection, driven from the event loop.

Owns the paho client: TLS with the broker verified against the root CA
(hostname included; there is no switch to turn that off), the client
certificate from the certstore, ALPN on port 443, keepalive and last will,
MQTT 3.1.1. It reconnects with exponential backoff and full jitter and
tells the failures that point at the certificate (they count for the
supervisor policy of interface.md section 2: rotate `preferred`, exit) from
the network's (waited out for as long as they last: offline is normal). It
routes incoming messages to subscribers and tells publishers when their
message is done; it does not queue, pace or retry publishes (the
publisher does) and knows nothing of shadows or files.

paho's own network thread wakes every second; instead the event loop
selects on paho's socket and calls loop_read/loop_write/loop_misc, with
the next keepalive deadline as its timeout.
"""

import logging
import os
import random
import ssl
import threading
import time

from .certstore import CertStoreError
from .mqttlib import mqtt

log = logging.getLogger("chariotd")

MAX_FAILURES = 5
BACKOFF_BASE = 0.5
BACKOFF_CAP = 300.0
# AWS IoT Core accepts one CONNECT per second per client id.
BACKOFF_FLOOR = 1.0
CONNACK_TIMEOUT = 30.0
SUBSCRIBE_BATCH = 8  # AWS: at most 8 topic filters per SUBSCRIBE
JOIN_LIMIT = 16384  # bytes of queued packets joined into one write: one TLS record


# TLS alerts about the certificate we presented (OpenSSL's reason names): a
# broker refusing it sends one of these, in the handshake (TLS 1.2) or as
# the first thing after it (TLS 1.3, where the client finishes first).
CERTIFICATE_ALERTS = frozenset((
    "SSLV3_ALERT_BAD_CERTIFICATE", "SSLV3_ALERT_UNSUPPORTED_CERTIFICATE",
    "SSLV3_ALERT_CERTIFICATE_REVOKED", "SSLV3_ALERT_CERTIFICATE_EXPIRED",
    "SSLV3_ALERT_CERTIFICATE_UNKNOWN", "TLSV1_ALERT_UNKNOWN_CA",
    "TLSV1_ALERT_ACCESS_DENIED", "TLSV13_ALERT_CERTIFICATE_REQUIRED",
))
# CONNACK refusals that point at our credentials: MQTT 3.1.1's "bad user name
# or password" and "not authorised", and paho 2's MQTT 5 forms of them.
CERTIFICATE_CONNACKS = frozenset((4, 5, 0x86, 0x87))


class ConnectionFailed(Exception):
    """Too many connection failures in a row; the supervisor should restart us."""


def certificate_alert(error):
    """Whether error is the peer's TLS alert about our certificate."""
    return isinstance(error, ssl.SSLError) and error.reason in CERTIFICATE_ALERTS


def endpoint_hung_up(error, code):
    """Whether a connection lost after the TLS handshake and before CONNACK
    was the endpoint's doing: a TLS alert on our certificate, or a close or
    reset (AWS IoT Core's answer to an inactive or unknown certificate, or one
    whose policy denies iot:Connect). error is the exception that ended it
    (None when the peer simply closed), code paho's reason. A time-out or a
    network error on the way is the network's."""
    if error is None:
        return _code(code) not in (mqtt.MQTT_ERR_KEEPALIVE, 0x8D)  # 0x8D: keepalive timeout
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


def backoff_delay(failures, rng=random, cap=BACKOFF_CAP):
    """Seconds to wait before attempt number failures+1: full jitter, floored."""
    ceiling = min(cap, BACKOFF_BASE * (2 ** min(failures, 30)))  # offline for days: no overflow
    return max(BACKOFF_FLOOR, rng.uniform(0, ceiling))


def tls_context(cacert, certfile, keyfile, alpn=None):
    """Client TLS context: broker verified against cacert, hostname checked."""
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=cacert)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(certfile, keyfile)
    if alpn:
        ctx.set_alpn_protocols(alpn)
    return ctx


def new_paho_client(client_id):
    """A paho client for paho-mqtt 1.6 or 2.x; callbacks take *args either way."""
    if hasattr(mqtt, "CallbackAPIVersion"):
        return mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                           clean_session=True, protocol=mqtt.MQTTv311)
    return mqtt.Client(client_id=client_id, clean_session=True, protocol=mqtt.MQTTv311)


def describe_error(error):
    """A short reason for a failed TCP connect or TLS handshake."""
    if isinstance(error, ssl.SSLCertVerificationError):
        return "TLS: certificate verify failed (%s)" % error.verify_message
    if isinstance(error, ssl.SSLError):
        return "TLS: %s" % (error.reason or error).lower().replace("_", " ")
    return getattr(error, "strerror", None) or str(error) or type(error).__name__


class _LastPahoError(logging.Handler):
    # paho reports why a socket failed (a TLS alert, say) only in its log.
    def __init__(self, connection):
        super().__init__(logging.ERROR)
        self._connection = connection

    def emit(self, record):
        self._connection._last_paho_error = record.getMessage()
        errors = [a for a in (record.args or ()) if isinstance(a, BaseException)]
        if errors:
            self._connection._last_paho_exception = errors[-1]


def _paho_error_logger(connection):
    """A logger of paho's errors for connection, outside the logging tree: its
    level makes paho skip formatting the debug lines."""
    logger = logging.Logger("chariotd.paho", logging.ERROR)
    logger.addHandler(_LastPahoError(connection))
    return logger


def _acted_on_when_written(packet):
    """Whether paho does something once this queued packet is written: reports
    a QoS 0 PUBLISH as published, closes after DISCONNECT."""
    command = packet["command"] & 0xF0
    return command == mqtt.DISCONNECT or (command == mqtt.PUBLISH and packet["qos"] == 0)


def join_packets(queue, keep_head):
    """Join runs of paho's queued packets (its `_out_packet` deque) into one each,
    so that a burst of publishes costs one TLS record and one send() instead of
    one per packet: less CPU, and 22 to 29 fewer bytes on the air per message
    (a TLS record's header and tag).

    A run ends with a packet paho acts on once written; the joined packet
    carries that packet's command, mid and info, so paho still acts on it,
    and only once all of it is written. keep_head leaves the first packet
    as it is: a TLS write that could not finish must be retried unchanged.
    """
    if len(queue) < 2:
        return
    packets = list(queue)
    queue.clear()
    if keep_head:
        queue.append(packets.pop(0))
    run, size = [], 0
    for packet in packets:
        data = packet["packet"][packet["pos"]:]
        if run and size + len(data) > JOIN_LIMIT:
            queue.append(_joined(run))
            run, size = [], 0
        run.append((packet, data))
        size += len(data)
        if _acted_on_when_written(packet):
            queue.append(_joined(run))
            run, size = [], 0
    if run:
        queue.append(_joined(run))


def _joined(run):
    if len(run) == 1:
        return run[0][0]
    data = b"".join(data for _packet, data in run)
    return dict(run[-1][0], packet=data, pos=0, to_process=len(data))


def _code(rc):
    return getattr(rc, "value", rc)


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
        self._sock = None
        self._fd = None
        self._last_paho_error = self._last_paho_exception = None
        self._paho_errors = _paho_error_logger(self)
        self._flush_posted = False
        self._write_blocked = False  # the last write left data behind
        self._stopping = False
        self._connack_timer = None
        self._subscriptions = {}  # filter -> list of handler(topic, payload)
        self._pending_subacks = {}  # mid -> callback once acknowledged
        self._publishes = {}  # mid -> done(ok)
        self._up, self._down, self._fatal, self._errors = [], [], [], []
        self._endpoint = self._cert_id = None
        self._client = None

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
            info = self._client.publish(topic, payload, qos=qos)
        except ValueError as e:
            log.error("cannot publish to %s: %s", topic, e)
            return False
        if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
            log.error("cannot publish to %s: %s", topic, mqtt.error_string(info.rc))
            return False
        self._publishes[info.mid] = done
        return True

    def forget_in_flight(self):
        """Forget the publishes not answered yet (their done is never called):
        paho would send them all again after the reconnect by itself, and the
        publisher sends them in an order of its own (lib/publisher.py)."""
        if self._client is not None:
            with self._client._out_message_mutex:
                self._client._out_messages.clear()
                self._client._inflight_messages = 0
        self._publishes.clear()

    def start(self):
        self._loop.add_deadline(self._keepalive_due, self._misc)
        try:
            self._setup_client()
        except (CertStoreError, OSError, ssl.SSLError) as e:
            self._give_up(e)
            return
        self._attempt()

    def stop(self, done):
        """Disconnect cleanly (publishing the will payload first); done() after."""
        self._stopping = True
        self._loop.remove_deadline(self._misc)
        if self._connack_timer:
            self._connack_timer.cancel()
        if not self.connected:
            self._close()
            done()
            return
        finished = []

        def disconnect(_ok=True):
            if not finished:
                finished.append(True)
                self._client.disconnect()
                # paho leaves the DISCONNECT for our loop to write; flush it now
                # so the broker sees a clean disconnect and keeps the will.
                self._client.loop_write()
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
        c = self._client = new_paho_client(self._clientid)
        c.tls_set_context(tls_context(self._cacert, certfile, keyfile, endpoint.alpn))
        c.max_inflight_messages_set(100)  # AWS: at most 100 unacknowledged QoS 1
        c.max_queued_messages_set(0)
        if self._will:
            c.will_set(self._will[0], self._will[1], qos=1)
        post = self._loop.post
        c.on_connect = lambda *a: post(self._connack, a[3])
        c.on_disconnect = lambda *a: post(self._disconnected, a[-2] if len(a) > 3 else a[2])
        # Not on_log: paho would format a debug line for every packet for it.
        c.enable_logger(self._paho_errors)
        c.on_publish = lambda *a: post(self._published, a[2])
        c.on_subscribe = lambda *a: post(self._subacked, a[2], a[3])
        c.on_message = lambda _c, _u, msg: post(self._dispatch, msg.topic, msg.payload)
        c.on_socket_register_write = lambda *a: self._write_soon()
        c.on_socket_unregister_write = lambda *a: self._want_write(False)
        c.connect_async(endpoint.host, endpoint.port, self._keepalive)
        log.info("connecting to %s as %s with certificate %s", endpoint, self._clientid, cert_id)

    def _attempt(self):
        if self._stopping:
            return
        self._last_paho_error = self._last_paho_exception = None
        # The TCP connect and TLS handshake block, so they run off the loop
        # thread; nothing else touches the client until they are done.
        threading.Thread(target=self._open_socket, daemon=True).start()

    def _open_socket(self):
        try:
            self._client.reconnect()
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
        self._sock = self._client.socket()
        self._fd = self._sock.fileno()
        self._loop.add_reader(self._fd, self._readable)
        self._want_write(self._client.want_write())
        self._connack_timer = self._loop.call_later(CONNACK_TIMEOUT, self._connack_timeout)

    def _connack_timeout(self):
        self._connack_timer = None
        log.error("no CONNACK from %s within %ds", self._endpoint, CONNACK_TIMEOUT)
        self._close()
        self._offline("no CONNACK")

    def _connack(self, rc):
        if self._connack_timer:
            self._connack_timer.cancel()
            self._connack_timer = None
        if _code(rc) != 0:
            reason = str(rc) if hasattr(rc, "value") else mqtt.connack_string(rc)
            self._close()
            if _code(rc) in CERTIFICATE_CONNACKS:
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
        for fn in self._up:
            fn()

    def _send_subscribe(self, filters, when_acked):
        batches = [filters[i:i + SUBSCRIBE_BATCH] for i in range(0, len(filters), SUBSCRIBE_BATCH)]
        remaining = [len(batches)]

        def acked():
            remaining[0] -= 1
            if remaining[0] == 0 and when_acked:
                when_acked()

        for batch in batches:
            rc, mid = self._client.subscribe([(f, 1) for f in batch])
            if rc == mqtt.MQTT_ERR_SUCCESS:
                self._pending_subacks[mid] = (batch, acked)

    def _subacked(self, mid, granted):
        batch, acked = self._pending_subacks.pop(mid, (None, None))
        if batch is None:
            return
        for topic_filter, g in zip(batch, granted):
            if _code(g) >= 0x80:
                log.error("subscription to %s refused by the broker", topic_filter)
        acked()

    # -- running ------------------------------------------------------------

    def _readable(self):
        client = self._client
        try:
            rc = client.loop_read(100)
            while rc == mqtt.MQTT_ERR_SUCCESS and self._sock is not None and \
                    getattr(self._sock, "pending", lambda: 0)():
                rc = client.loop_read(100)
        except (OSError, ssl.SSLError) as e:
            # paho 1.6 lets a TLS alert (our certificate refused) escape loop_read.
            self._disconnected(describe_error(e), e)
            return
        if rc == mqtt.MQTT_ERR_SUCCESS:
            self._want_write(client.want_write())

    def _want_write(self, wanted):
        if self._sock is None:
            return
        self._loop.set_writer(self._fd, self._writable if wanted else None)

    def _write_soon(self):
        """paho has a packet to write: write it once the current events are
        handled (they may add more) instead of one more trip through select;
        the socket nearly always has room. If not, select reports when it has."""
        if self._sock is None:
            return
        self._want_write(True)
        if not self._flush_posted:
            self._flush_posted = True
            self._loop.post(self._flush)

    def _flush(self):
        self._flush_posted = False
        if self._sock is not None and self._client.want_write():
            self._writable()

    def _writable(self):
        client = self._client
        join_packets(client._out_packet, self._write_blocked)
        try:
            client.loop_write()
        except (OSError, ssl.SSLError) as e:
            self._disconnected(describe_error(e), e)
            return
        self._write_blocked = client.want_write()
        self._want_write(self._write_blocked)

    def _keepalive_due(self):
        if self._sock is None:
            return None
        # paho exposes no "next keepalive action" time; these are its own
        # clocks (named _last_msg_in in 1.6, _last_bytes_received in 2.x).
        c = self._client
        last_in = getattr(c, "_last_bytes_received", None) or getattr(c, "_last_msg_in", None)
        if last_in is None:
            return time.monotonic() + 1.0
        due = min(c._last_msg_out, last_in) + c._keepalive
        if c._ping_t:
            due = min(due, c._ping_t + c._keepalive)
        return due

    def _misc(self):
        if self._sock is not None:
            try:
                self._client.loop_misc()
            except (OSError, ssl.SSLError) as e:
                self._disconnected(describe_error(e), e)
                return
            self._want_write(self._client.want_write())

    def _published(self, mid):
        done = self._publishes.pop(mid, None)
        if done:
            done(True)

    def _dispatch(self, topic, payload):
        for topic_filter, handlers in self._subscriptions.items():
            if mqtt.topic_matches_sub(topic_filter, topic):
                for handler in handlers:
                    handler(topic, payload)

    # -- losing the connection ---------------------------------------------

    def _disconnected(self, reason, error=None):
        """The socket is gone; reason is paho's code or reason object, or our own
        text; error the exception that ended it, when one did."""
        code = reason
        if isinstance(reason, int):
            reason = mqtt.error_string(reason)
        elif not isinstance(reason, str):
            reason = str(reason)
        if self._last_paho_error:
            reason = "%s: %s" % (reason, self._last_paho_error)
        error = error or self._last_paho_exception
        self._last_paho_error = self._last_paho_exception = None
        was_up = self.connected
        had_socket = self._sock is not None
        self._close()
        if self._stopping or not had_socket:
            return
        if self._connack_timer:
            self._connack_timer.cancel()
            self._connack_timer = None
        if was_up:
            log.warning("connection to %s lost (%s); reconnecting", self._endpoint, reason)
            for fn in self._errors:
                fn("connection lost (%s)" % reason)
            self._loop.call_later(backoff_delay(0), self._attempt)
            return
        reason = "disconnected before the connection was accepted (%s)" % reason
        if endpoint_hung_up(error, code):
            self._failure(reason)
        else:
            self._offline(reason)

    def _close(self):
        was_up = self.connected
        self.connected = False
        self._pending_subacks.clear()
        if self._sock is not None:
            self._loop.remove_reader(self._fd)
            self._loop.set_writer(self._fd, None)
            self._sock = self._fd = None
        self._write_blocked = False
        if was_up:
            for fn in self._down:
                fn()

    def _failure(self, reason):
        """A failure pointing at the certificate: counted for interface.md
        section 2 (rotate `preferred` and exit after MAX_FAILURES in a row)."""
        self.failures += 1
        log.error("%s (failure %d in a row)", reason, self.failures)
        for fn in self._errors:
            fn(reason)
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
        for fn in self._errors:
            fn(reason)
        self._retry()

    def _retry(self):
        self.attempts += 1
        delay = backoff_delay(self.attempts, cap=self._backoff_cap)
        log.info("reconnecting in %.1fs", delay)
        self._loop.call_later(delay, self._attempt)

    def _give_up(self, error):
        self._stopping = True
        self._loop.remove_deadline(self._misc)
        for fn in self._fatal:
            fn(error)
