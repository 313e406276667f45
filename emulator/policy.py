"""An IoT policy in front of mosquitto: the device side's TLS listener,
closing the connection on a publish that AWS IoT Core would refuse.

AWS answers a PUBLISH that the device's policy forbids, or whose payload is
over 128 KiB, by closing the connection (MQTT 3.1.1), and the message goes
nowhere. mosquitto cannot do that (its ACLs drop such a publish silently),
so `PolicyGateway` listens for TLS itself (a client certificate from the CA
required, as the broker's own listener does), relays each connection to
the broker's plain listener, and reads the MQTT packets the device sends: a
complete packet is passed on; a PUBLISH to a topic matching one of the
`forbidden` filters, or with a payload over `max_payload`, is not, and both
sides of the connection are closed. What the broker sends passes untouched.

It records what it refused (`refusals`: (client id, topic, reason)) and
counts CONNECT packets (`connects`), for tests. It does not speak TLS to the
broker, look into any packet but CONNECT and PUBLISH, or start the broker.
"""

import logging
import socket
import ssl
import threading

import paho.mqtt.client as mqtt

log = logging.getLogger("emulator")

MAX_PAYLOAD = 128 * 1024
CONNECT, PUBLISH = 1, 3


class PolicyGateway:
    def __init__(self, broker_port, ca_cert, server_cert, server_key, forbidden=(),
                 max_payload=MAX_PAYLOAD, host="127.0.0.1", port=0):
        self.broker_port = broker_port
        self.forbidden = list(forbidden)
        self.max_payload = max_payload
        self.refusals = []  # (client id, topic, reason)
        self.connects = 0
        self._lock = threading.Lock()
        self._context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=ca_cert)
        self._context.verify_mode = ssl.CERT_REQUIRED
        self._context.load_cert_chain(server_cert, server_key)
        self._listener = socket.create_server((host, port))
        self.port = self._listener.getsockname()[1]
        self._sockets = set()
        self._thread = None

    def start(self):
        self._thread = threading.Thread(target=self._accept, name="policy-gateway", daemon=True)
        self._thread.start()
        return self

    def stop(self):
        self._listener.close()
        with self._lock:
            sockets, self._sockets = list(self._sockets), set()
        for s in sockets:
            _close(s)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def _accept(self):
        while True:
            try:
                raw, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(raw,), daemon=True).start()

    def _serve(self, raw):
        try:
            device = self._context.wrap_socket(raw, server_side=True)
        except (OSError, ssl.SSLError):
            _close(raw)
            return
        try:
            broker = socket.create_connection(("127.0.0.1", self.broker_port))
        except OSError:
            _close(device)
            return
        with self._lock:
            self._sockets.update((device, broker))
        threading.Thread(target=self._downstream, args=(broker, device), daemon=True).start()
        self._upstream(device, broker)

    def _downstream(self, broker, device):
        try:
            while True:
                data = broker.recv(65536)
                if not data:
                    break
                device.sendall(data)
        except (OSError, ValueError):  # ValueError: the other side closed the TLS socket
            pass
        self._hang_up(device, broker)

    def _upstream(self, device, broker):
        buffer = b""
        client_id = None
        try:
            while True:
                data = device.recv(65536)
                if not data:
                    break
                buffer += data
                while True:
                    packet = _next_packet(buffer)
                    if packet is None:
                        break
                    kind, start, end = packet
                    if kind == CONNECT:
                        with self._lock:
                            self.connects += 1
                        client_id = _client_id(buffer[start:end])
                    elif kind == PUBLISH:
                        refusal = self._refusal(buffer[0], buffer[start:end])
                        if refusal:
                            topic, reason = refusal
                            log.info("policy: %s published to %s: %s; disconnecting it",
                                     client_id, topic, reason)
                            with self._lock:
                                self.refusals.append((client_id, topic, reason))
                            self._hang_up(device, broker)
                            return
                    broker.sendall(buffer[:end])
                    buffer = buffer[end:]
        except (OSError, ValueError):  # ValueError: the other side closed the TLS socket
            pass
        self._hang_up(device, broker)

    def _refusal(self, first_byte, body):
        """(topic, reason) if AWS would close the connection for this PUBLISH."""
        size = int.from_bytes(body[:2], "big")
        topic = body[2:2 + size].decode("utf-8", "replace")
        qos = (first_byte >> 1) & 3
        payload = len(body) - 2 - size - (2 if qos else 0)
        for topic_filter in self.forbidden:
            if mqtt.topic_matches_sub(topic_filter, topic):
                return topic, "forbidden by the policy (%s)" % topic_filter
        if payload > self.max_payload:
            return topic, "payload of %d bytes, over the %d byte limit" % (payload,
                                                                        self.max_payload)
        return None

    def _hang_up(self, *sockets):
        with self._lock:
            self._sockets.difference_update(sockets)
        for s in sockets:
            _close(s)


def _next_packet(buffer):
    """(packet type, start of its body, end) of the first complete packet, or None."""
    if len(buffer) < 2:
        return None
    length, multiplier, i = 0, 1, 1
    while True:
        if i >= len(buffer) or i > 4:
            return None
        byte = buffer[i]
        length += (byte & 0x7F) * multiplier
        multiplier *= 128
        i += 1
        if not byte & 0x80:
            break
    if len(buffer) < i + length:
        return None
    return buffer[0] >> 4, i, i + length


def _client_id(body):
    # Protocol name (2 + n bytes), level, flags, keepalive, then the client id.
    name = int.from_bytes(body[:2], "big")
    at = 2 + name + 4
    size = int.from_bytes(body[at:at + 2], "big")
    return body[at + 2:at + 2 + size].decode("utf-8", "replace")


def _close(s):
    try:
        s.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    try:
        s.close()
    except OSError:
        pass
