"""Everything the daemon publishes goes through here, paced for AWS.

AWS IoT Core silently discards publishes beyond 100 per second on a
connection (shadow traffic included) and delays traffic beyond 512 KiB/s,
so one pacer holds every outgoing message to `--publish-rate` and
`--publish-bytes-rate` (a generic cell rate algorithm: each send moves a
"next allowed" time forward). Queued messages wait while the connection is
down and go out in order once it is up, led by any QoS 0 message paho had
not written yet when it went down. Callers bound how much they queue
(the message spool keeps at most its concurrency here); this module does
not retry, reorder or read files. As a last line of defence it refuses
what AWS is known to refuse (lib/awslimits.py) instead of sending it.
"""

import collections
import functools
import itertools
import logging
import time

from . import awslimits

log = logging.getLogger("chariotd")

_topic_problem = functools.lru_cache(maxsize=64)(awslimits.topic_problem)


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
        self._unwritten = {}  # key -> queued message: QoS 0 handed to paho, not yet written
        self._keys = itertools.count()
        connection.on_up(self._pump)
        connection.on_down(self._requeue_unwritten)

    def publish(self, topic, payload, qos, done):
        """Queue one message; done(ok) when acknowledged (QoS 1) or written (QoS 0)."""
        problem = _topic_problem(topic) or awslimits.payload_problem(len(payload))
        if problem:
            log.error("not publishing to %s: %s", topic, problem)
            self._loop.post(done, False)
            return
        self._queue.append((topic, payload, qos, done))
        if len(self._queue) == 1 and self._timer is None:
            self._pump()

    def __len__(self):
        return len(self._queue)

    def _pump(self):
        self._timer = None
        paced = self._interval or self._byte_time  # unpaced: no clock to read per message
        while self._queue and self._conn.connected:
            if paced:
                now = time.monotonic()
                wait = max(self._next_msg, self._next_bytes) - now
                if wait > 0:
                    self._timer = self._loop.call_later(wait, self._pump)
                    return
            message = self._queue.popleft()
            if self._send(message):
                if paced:
                    self._paced(now, len(message[1]))
            elif not self._conn.connected:
                self._queue.appendleft(message)
                return
            else:
                message[3](False)

    def _send(self, message):
        """Hand message to the connection; False if it would not take it."""
        topic, payload, qos, done = message
        if qos == 0:
            key = next(self._keys)
            done = functools.partial(self._written, key)
        if not self._conn.publish(topic, payload, qos, done):
            return False
        if qos == 0:
            self._unwritten[key] = message
        return True

    def _paced(self, now, size):
        # A late timer may catch up one interval, never more, so a backlog
        # drains at the set rate without bursting past it.
        self._next_msg = max(self._next_msg, now - self._interval) + self._interval
        self._next_bytes = max(self._next_bytes, now - self._byte_time * 1024) + \
            self._byte_time * size

    def _written(self, key, ok):
        message = self._unwritten.pop(key, None)
        if message is not None:
            message[3](ok)

    def _requeue_unwritten(self):
        # paho drops the QoS 0 packets it has not written yet when the
        # connection is lost, and says nothing; they go out first once it is back.
        self._queue.extendleft(reversed(list(self._unwritten.values())))
        self._unwritten.clear()
