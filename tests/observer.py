"""A test's own MQTT client on the broker's plain listener: records what it sees."""

import itertools
import json
import threading
import time

import paho.mqtt.client as mqtt

_ids = itertools.count()


def new_client(client_id):
    """A paho client for either paho-mqtt 1.6 or 2.x, MQTT 3.1.1."""
    if hasattr(mqtt, "CallbackAPIVersion"):
        return mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                           protocol=mqtt.MQTTv311)
    return mqtt.Client(client_id=client_id, protocol=mqtt.MQTTv311)


class Message:
    __slots__ = ("topic", "payload", "qos", "retain", "time")

    def __init__(self, msg):
        self.topic = msg.topic
        self.payload = msg.payload
        self.qos = msg.qos
        self.retain = msg.retain
        self.time = time.monotonic()

    def json(self):
        return json.loads(self.payload)

    def __repr__(self):
        return "Message(%r, %r)" % (self.topic, self.payload[:200])


class Observer:
    """Subscribes to topics and lets a test wait for messages with a deadline."""

    def __init__(self, port, topics=("#",), client_id=None, host="127.0.0.1"):
        self.messages = []
        self._cond = threading.Condition()
        self.client = new_client(client_id or "observer-%d" % next(_ids))
        self.client.on_message = self._on_message
        connected = threading.Event()
        subscribed = threading.Event()
        self.client.on_connect = lambda *a: connected.set()
        self.client.on_subscribe = lambda *a: subscribed.set()
        self.client.connect(host, port, keepalive=60)
        self.client.loop_start()
        if not connected.wait(10):
            raise TimeoutError("observer could not connect to port %d" % port)
        if topics:
            self.client.subscribe([(t, 1) for t in topics])
            if not subscribed.wait(10):
                raise TimeoutError("observer subscription not acknowledged")

    def _on_message(self, client, userdata, msg):
        with self._cond:
            self.messages.append(Message(msg))
            self._cond.notify_all()

    def on(self, topic):
        return [m for m in self.messages if m.topic == topic]

    def wait_for(self, predicate, timeout=10, what="condition"):
        """Wait until predicate(messages) is truthy; return its value."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                result = predicate(self.messages)
                if result:
                    return result
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError("timed out waiting for %s; saw %d messages: %r"
                                         % (what, len(self.messages), self.messages[-10:]))
                self._cond.wait(min(left, 0.5))

    def wait_topic(self, topic, count=1, timeout=10):
        return self.wait_for(lambda ms: len([m for m in ms if m.topic == topic]) >= count
                             and [m for m in ms if m.topic == topic], timeout,
                             "%d message(s) on %s" % (count, topic))

    def publish(self, topic, payload, qos=1, retain=False):
        if not isinstance(payload, (str, bytes)):
            payload = json.dumps(payload)
        info = self.client.publish(topic, payload, qos=qos, retain=retain)
        info.wait_for_publish(10)

    def close(self):
        self.client.disconnect()
        self.client.loop_stop()
