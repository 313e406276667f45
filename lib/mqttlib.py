"""paho-mqtt behind one wall: a paho client driven by chariotd's event loop.

This is the only module that knows paho's insides. It hides what differs
between paho-mqtt 1.6 and 2.x (the client's constructor, the callbacks'
arguments, reason objects against plain codes), reads the private state
paho offers no API for (the keepalive clocks, the queue of packets to
write, the in-flight messages, the exception behind a lost socket, which
paho only logs) and drives the socket from the event loop instead of
paho's own network thread, which wakes every second: the loop selects on
paho's socket and calls loop_read/loop_write/loop_misc, with the next
keepalive deadline as its timeout. What to do about a failure (backoff,
counting, rotation) is lib/connection.py's.

paho imports modules at load time that chariotd's use of it never needs:
`urllib.request` (with http.client and the email package: about 1 MB on
armv7) and `urllib.parse` (with ipaddress), read only for proxy settings
when PySocks is installed, and `uuid`, for a random client id (chariotd
always gives one) and WebSocket keys. A stand-in takes the place of each
until something touches it, at which point the real module is imported
(FOOTPRINT.md: what they cost).
"""

import importlib
import logging
import ssl
import sys
import time
import types

_DEFERRED = ("urllib.request", "urllib.parse", "uuid")


class _Deferred(types.ModuleType):
    def __getattr__(self, attr):
        del sys.modules[self.__name__]
        real = importlib.import_module(self.__name__)
        self.__dict__.update(real.__dict__)
        return getattr(real, attr)


def _defer(name):
    """Put a stand-in for module NAME in sys.modules (and on its package)."""
    if name in sys.modules:
        return
    stand_in = sys.modules[name] = _Deferred(name)
    package, _, attr = name.rpartition(".")
    if package:
        setattr(importlib.import_module(package), attr, stand_in)


for _name in _DEFERRED:
    _defer(_name)

import paho.mqtt.client as mqtt  # noqa: E402

__all__ = ["mqtt", "code", "connack_reason", "credentials_refused", "join_packets", "Link",
           "JOIN_LIMIT", "topic_matches"]

JOIN_LIMIT = 16384  # bytes of queued packets joined into one write: one TLS record


def code(rc):
    """paho's result as a number: 2.x gives reason objects, 1.6 ints."""
    return getattr(rc, "value", rc)


def connack_reason(rc):
    """A CONNACK refusal in words, for either paho."""
    return str(rc) if hasattr(rc, "value") else mqtt.connack_string(rc)


def credentials_refused(rc):
    """Whether a CONNACK refusal points at our credentials: MQTT 3.1.1's "bad
    user name or password" (4) and "not authorised" (5), in paho 1.6's codes
    or 2.x's MQTT 5 reasons."""
    return code(rc) in (4, 5, 0x86, 0x87)


def topic_matches(topic_filter, topic):
    """Whether topic matches topic_filter. Most filters (shadow and jobs answers)
    have no wildcard, and paho's topic_matches_sub builds a tree per call."""
    if "+" not in topic_filter and "#" not in topic_filter:
        return topic_filter == topic
    return mqtt.topic_matches_sub(topic_filter, topic)


def new_paho_client(client_id):
    """A paho client for paho-mqtt 1.6 or 2.x, MQTT 3.1.1, clean session."""
    if hasattr(mqtt, "CallbackAPIVersion"):
        return mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                           clean_session=True, protocol=mqtt.MQTTv311)
    return mqtt.Client(client_id=client_id, clean_session=True, protocol=mqtt.MQTTv311)


class _LastError(logging.Handler):
    # paho reports why a socket failed (a TLS alert, say) only in its log.
    def __init__(self, link):
        super().__init__(logging.ERROR)
        self._link = link

    def emit(self, record):
        self._link.last_error = record.getMessage()
        errors = [a for a in (record.args or ()) if isinstance(a, BaseException)]
        if errors:
            self._link.last_exception = errors[-1]


def _error_logger(link):
    """A logger of paho's errors for link, outside the logging tree: its
    level makes paho skip formatting the debug lines."""
    logger = logging.Logger("chariotd.paho", logging.ERROR)
    logger.addHandler(_LastError(link))
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


class Link:
    """One paho client on the event loop. Its callbacks reach events (an object
    with connack(rc), disconnected(text, timed_out), published(mid),
    subacked(mid, granted), message(topic, payload) and lost(error), the last
    for an exception out of paho's socket calls) as posts to the loop, so
    they run on its thread."""

    def __init__(self, loop, client_id, events):
        self._loop = loop
        self._events = events
        self.last_error = self.last_exception = None  # from paho's log
        self._sock = self._fd = None
        self._flush_posted = False
        self._write_blocked = False  # the last write left data behind
        self._connack_seen = False  # on this socket
        c = self.paho = new_paho_client(client_id)
        post = loop.post
        c.on_connect = lambda *a: self._connack(a[3])
        c.on_disconnect = lambda *a: post(self._disconnected, a[-2] if len(a) > 3 else a[2])
        c.on_publish = lambda *a: post(events.published, a[2])
        c.on_subscribe = lambda *a: post(events.subacked, a[2], a[3])
        c.on_message = lambda _c, _u, msg: post(events.message, msg.topic, msg.payload)
        c.on_socket_register_write = lambda *a: self._write_soon()
        c.on_socket_unregister_write = lambda *a: self._want_write(False)
        # Not on_log: paho would format a debug line for every packet for it.
        c.enable_logger(_error_logger(self))

    def configure(self, host, port, keepalive, tls, will=None):
        """TLS context, AWS's limits, the will (topic, payload) and where to connect."""
        c = self.paho
        c.tls_set_context(tls)
        c.max_inflight_messages_set(100)  # AWS: at most 100 unacknowledged QoS 1
        c.max_queued_messages_set(0)
        if will:
            c.will_set(will[0], will[1], qos=1)
        c.connect_async(host, port, keepalive)

    def publish(self, topic, payload, qos):
        """Queue a PUBLISH and return its mid; ValueError when paho refuses it."""
        info = self.paho.publish(topic, payload, qos=qos)
        if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
            raise ValueError(mqtt.error_string(info.rc))
        return info.mid

    def subscribe(self, filters):
        """SUBSCRIBE to filters at QoS 1; its mid, or None when not sent."""
        rc, mid = self.paho.subscribe([(f, 1) for f in filters])
        return mid if rc == mqtt.MQTT_ERR_SUCCESS else None

    def disconnect(self):
        """Queue a DISCONNECT and write it at once (paho would leave it for
        the loop), so the broker sees a clean disconnect and keeps the will."""
        self.paho.disconnect()
        self.paho.loop_write()

    @property
    def attached(self):
        """Whether a socket is open and watched by the loop."""
        return self._sock is not None

    def take_error(self):
        """(text, exception) paho last logged as an error, and forget them."""
        found = self.last_error, self.last_exception
        self.last_error = self.last_exception = None
        return found

    def open(self):
        """TCP connect, TLS handshake and CONNECT queued: blocks, so it is
        called off the loop thread, before the socket is attached."""
        self.paho.reconnect()

    def attach(self):
        self._connack_seen = False
        self._sock = self.paho.socket()
        self._fd = self._sock.fileno()
        self._loop.add_reader(self._fd, self._readable)
        self._want_write(self.paho.want_write())

    def detach(self):
        if self._sock is not None:
            self._loop.remove_reader(self._fd)
            self._loop.set_writer(self._fd, None)
            self._sock = self._fd = None
        self._write_blocked = False

    def forget_in_flight(self):
        """Drop the publishes not answered yet, so paho does not send them again
        by itself after a reconnect."""
        c = self.paho
        with c._out_message_mutex:
            c._out_messages.clear()
            c._inflight_messages = 0

    def keepalive_due(self):
        """When loop_misc has something to do (a PINGREQ, a keepalive timeout);
        None while no socket is open or before CONNACK: paho's clocks start
        before the TCP connect, so on a link whose handshake and CONNECT
        round trip outlast the keepalive its check would close every attempt
        as timed out (lib/connection.py's CONNACK timeout watches that wait)."""
        if self._sock is None or not self._connack_seen:
            return None
        # paho exposes no "next keepalive action" time; these are its own
        # clocks (named _last_msg_in in 1.6, _last_bytes_received in 2.x).
        c = self.paho
        last_in = getattr(c, "_last_bytes_received", None) or getattr(c, "_last_msg_in", None)
        if last_in is None:
            return time.monotonic() + 1.0
        due = min(c._last_msg_out, last_in) + c._keepalive
        if c._ping_t:
            due = min(due, c._ping_t + c._keepalive)
        return due

    def _connack(self, rc):
        self._connack_seen = True  # (paho calls this in loop_read, on the loop thread)
        self._loop.post(self._events.connack, rc)

    def _disconnected(self, rc):
        text = mqtt.error_string(rc) if isinstance(rc, int) else str(rc)
        # A keepalive timeout: 1.6's error code, 2.x's reason 0x8D.
        self._events.disconnected(text, code(rc) in (mqtt.MQTT_ERR_KEEPALIVE, 0x8D))

    def misc(self):
        if self._sock is not None:
            try:
                self.paho.loop_misc()
            except (OSError, ssl.SSLError) as e:
                self._events.lost(e)
                return
            self._want_write(self.paho.want_write())

    def _readable(self):
        client = self.paho
        try:
            rc = client.loop_read(100)
            while rc == mqtt.MQTT_ERR_SUCCESS and self._sock is not None and \
                    getattr(self._sock, "pending", lambda: 0)():
                rc = client.loop_read(100)
        except (OSError, ssl.SSLError) as e:
            # paho 1.6 lets a TLS alert (our certificate refused) escape loop_read.
            self._events.lost(e)
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
        if self._sock is not None and self.paho.want_write():
            self._writable()

    def _writable(self):
        client = self.paho
        join_packets(client._out_packet, self._write_blocked)
        try:
            client.loop_write()
        except (OSError, ssl.SSLError) as e:
            self._events.lost(e)
            return
        self._write_blocked = client.want_write()
        self._want_write(self._write_blocked)
