"""Everything the daemon publishes goes through here, paced for AWS, and a
message the endpoint refuses by disconnecting is found and given up.

AWS IoT Core silently discards publishes beyond 100 per second on a
connection (shadow traffic included) and delays traffic beyond 512 KiB/s,
so one pacer holds every outgoing message to `--publish-rate` and
`--publish-bytes-rate` (a generic cell rate algorithm: each send moves a
"next allowed" time forward). Queued messages wait while the connection is
down and go out in order once it is up.

AWS answers a publish it will not take (a topic its policy forbids, say)
by closing the connection. So when the connection is lost, whatever was in
flight (QoS 1 not acknowledged, QoS 0 not written) goes back to the head of
the queue, paho's own copies are dropped, and the QoS 1 ones among them are
suspects: after the reconnect they are sent one at a time, each only once
the one before was acknowledged. A disconnect with one QoS 1 message alone
in flight is a strike against it; at REFUSAL_STRIKES strikes it is given
up (its sender's refused(), else done(False)). Once no suspect is left,
the pipeline fills again. So a refused message costs REFUSAL_STRIKES + 1
CONNECTs and the rest goes on; a lost connection costs one acknowledgement
round trip per suspect.

As a last line of defence, what AWS is known to refuse (lib/awslimits.py)
is refused here instead of sent. Callers bound how much they queue (the
message spool keeps at most its concurrency here); this module does not
retry, reorder beyond the above, or read files.
"""

import collections
import functools
import itertools
import logging
import time

from . import awslimits

log = logging.getLogger("chariotd")

# Disconnects, each with the same message alone in flight, before it is
# taken as refused. (A network that drops three times in a row, each time
# while one message waits for its PUBACK, looks the same.)
REFUSAL_STRIKES = 3

_topic_problem = functools.lru_cache(maxsize=64)(awslimits.topic_problem)


class _Outgoing:
    __slots__ = ("topic", "payload", "qos", "done", "refused", "strikes", "suspect")

    def __init__(self, topic, payload, qos, done, refused):
        self.topic = topic
        self.payload = payload
        self.qos = qos
        self.done = done
        self.refused = refused
        self.strikes = 0  # disconnects while it was alone in flight
        self.suspect = False  # in flight at a disconnect, not acknowledged since


class Publisher:
    def __init__(self, loop, connection, rate, bytes_rate):
        self._loop = loop
        self._conn = connection
        self._interval = 1.0 / rate if rate else 0.0
        self._byte_time = 1.0 / bytes_rate if bytes_rate else 0.0
        self._queue = collections.deque()
        self._next_msg = 0.0
        self._next_bytes = 0.0
        self._timer = None
        self._in_flight = {}  # key -> _Outgoing handed to the connection, not answered
        self._suspects = 0  # suspects waiting or in flight: while any, one at a time
        self._keys = itertools.count()
        connection.on_up(self._pump)
        connection.on_down(self._lost)

    def publish(self, topic, payload, qos, done, refused=None):
        """Queue one message; done(ok) when acknowledged (QoS 1) or written (QoS 0).
        refused() instead when the endpoint closed the connection each of
        REFUSAL_STRIKES times it was sent alone (without it, done(False))."""
        problem = _topic_problem(topic) or awslimits.payload_problem(len(payload))
        if problem:
            log.error("not publishing to %s: %s", topic, problem)
            self._loop.post(done, False)
            return
        self._queue.append(_Outgoing(topic, payload, qos, done, refused))
        if len(self._queue) == 1 and self._timer is None:
            self._pump()

    def __len__(self):
        return len(self._queue)

    def _pump(self):
        self._timer = None
        paced = self._interval or self._byte_time  # unpaced: no clock to read per message
        while self._queue and self._conn.connected:
            if self._suspects and self._in_flight:
                return  # finding a refused message: one at a time
            if paced:
                now = time.monotonic()
                wait = max(self._next_msg, self._next_bytes) - now
                if wait > 0:
                    self._timer = self._loop.call_later(wait, self._pump)
                    return
            message = self._queue.popleft()
            if self._send(message):
                if paced:
                    self._paced(now, len(message.payload))
            elif not self._conn.connected:
                self._queue.appendleft(message)
                return
            else:
                self._settle(message)
                message.done(False)

    def _send(self, message):
        """Hand message to the connection; False if it would not take it."""
        key = next(self._keys)
        self._in_flight[key] = message
        if self._conn.publish(message.topic, message.payload, message.qos,
                              functools.partial(self._answered, key)):
            return True
        del self._in_flight[key]
        return False

    def _paced(self, now, size):
        # A late timer may catch up one interval, never more, so a backlog
        # drains at the set rate without bursting past it.
        self._next_msg = max(self._next_msg, now - self._interval) + self._interval
        self._next_bytes = max(self._next_bytes, now - self._byte_time * 1024) + \
            self._byte_time * size

    def _answered(self, key, ok):
        message = self._in_flight.pop(key, None)
        if message is None:
            return  # the answer for a copy lost with its connection
        probing = self._suspects
        self._settle(message)
        message.done(ok)
        if probing and self._timer is None:
            self._pump()  # the next suspect, or the full pipeline again

    def _settle(self, message):
        if message.suspect:
            message.suspect = False
            self._suspects -= 1

    def _lost(self):
        """The connection is down: what was in flight goes back to the head of
        the queue (paho would send it again by itself, all at once)."""
        self._conn.forget_in_flight()
        lost = list(self._in_flight.values())
        self._in_flight.clear()
        sent = [m for m in lost if m.qos]  # an unanswered QoS 0 one was never written
        if len(sent) == 1:
            alone = sent[0]
            alone.strikes += 1
            if alone.strikes >= REFUSAL_STRIKES:
                lost.remove(alone)
                sent = []
                self._refused(alone)
        for message in sent:
            if not message.suspect:
                message.suspect = True
                self._suspects += 1
        if len(sent) > 1:
            log.warning("connection lost with %d messages unacknowledged; sending them "
                        "again one at a time, to find one the endpoint refuses", len(sent))
        self._queue.extendleft(reversed(lost))

    def _refused(self, message):
        self._settle(message)
        if message.refused is not None:
            message.refused()  # the sender logs it
            return
        log.error("publish to %s: the connection was lost each of the %d times it was "
                  "sent alone; given up", message.topic, REFUSAL_STRIKES)
        message.done(False)
