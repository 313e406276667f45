"""Requests to one thing's Jobs service and their replies, for lib/jobs.py.

`Requests.send()` publishes a request with a clientToken of its own and
keeps what to call with the reply; `reply()` hands an `accepted` or
`rejected` document to it by that token (a reply to someone else's request,
or a repeat, is ignored), and a request left unanswered for REPLY_TIMEOUT
is given up with a log line and its `lost` callback. `forget()` drops every
request in flight (the connection went down; the caller settles them
afresh). What the requests mean is lib/jobs.py's business.
"""

import json
import logging
import os
import secrets

log = logging.getLogger("chariotd")

REPLY_TIMEOUT = 30.0

# Marks what this process sent: its clientTokens and the executions it started.
RUN_TOKEN = "%d-%s" % (os.getpid(), secrets.token_hex(6))


class Requests:
    def __init__(self, loop, publisher, thing):
        self._loop = loop
        self._publisher = publisher
        self.thing = thing
        self.prefix = "$aws/things/%s/jobs" % thing
        self._waiting = {}  # clientToken -> (on_accepted, on_rejected, timer)
        self._seq = 0

    def send(self, suffix, body, accepted, rejected, lost=None):
        """Publish BODY to the API at PREFIX/SUFFIX; accepted(doc) or rejected(doc)
        with its reply, or lost() if none comes within REPLY_TIMEOUT."""
        self._seq += 1
        token = "chariotd-%s-%d" % (RUN_TOKEN, self._seq)
        body = dict(body, clientToken=token)
        timer = self._loop.call_later(REPLY_TIMEOUT, self._no_reply, token, lost)
        self._waiting[token] = (accepted, rejected, timer)
        self._publisher.publish(self.prefix + "/" + suffix,
                                json.dumps(body, separators=(",", ":")).encode(), 1,
                                lambda ok: None)

    def reply(self, topic_rest, doc):
        """A document on PREFIX/TOPIC_REST, an .../accepted or .../rejected topic."""
        waiting = self._waiting.pop(doc.get("clientToken"), None)
        if waiting is None:
            return  # someone else's reply, or a repeat
        accepted, rejected, timer = waiting
        timer.cancel()
        (accepted if topic_rest.endswith("/accepted") else rejected)(doc)

    def forget(self):
        for _accepted, _rejected, timer in self._waiting.values():
            timer.cancel()
        self._waiting.clear()

    def _no_reply(self, token, lost):
        if self._waiting.pop(token, None) is not None:
            log.warning("jobs for %s: no reply to a request within %ds", self.thing, REPLY_TIMEOUT)
            if lost:
                lost()
