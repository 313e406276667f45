"""--subscribe-write and --subscribe-exec: messages on chosen topics handed
to files, FIFOs and commands.

subscribe-write opens PATH for each message write-only, non-blocking and
in append mode, creating a missing file (like the shell's `>>`), and writes
the payload exactly as received in one write: a regular file collects the
messages one after another, a FIFO passes each one to its reader, and a FIFO
without a reader (or with a full pipe) costs a warning and that message, never
a blocked daemon. subscribe-exec runs CMD for each message with the payload
on stdin, one at a time per subscription, killed after 5 s; messages that
arrive meanwhile wait in a queue of at most EXEC_QUEUE_LIMIT, and any beyond
that are dropped with a warning, so a flood cannot grow memory.

Subscriptions are renewed after every reconnect by the connection itself.
This module does not parse payloads or publish anything.
"""

import collections
import errno
import logging
import os

from . import awslimits, children

log = logging.getLogger("chariotd")

EXEC_TIMEOUT = 5
# Payloads are at most 128 KiB, so a full queue holds at most ~1.3 MiB.
EXEC_QUEUE_LIMIT = 10
WRITE_FLAGS = os.O_WRONLY | os.O_NONBLOCK | os.O_APPEND | os.O_CREAT | os.O_NOCTTY | os.O_CLOEXEC


def start(daemon):
    opts = daemon.options
    for option, pairs in (("--subscribe-write", opts.subscribe_write),
                          ("--subscribe-exec", opts.subscribe_exec)):
        for topic_filter, _ in pairs:
            problem = awslimits.filter_problem(topic_filter)
            if problem:
                # The broker would refuse it on every connect; better to stop now.
                log.error("%s: %r is not a valid MQTT topic filter (%s)", option, topic_filter,
                          problem)
                daemon.exit(2)
                return None
    for topic_filter, path in opts.subscribe_write:
        daemon.connection.subscribe(topic_filter,
                                    lambda topic, payload, path=path:
                                    write_message(path, topic, payload))
    runners = [ExecSubscription(daemon.loop, topic_filter, command)
               for topic_filter, command in opts.subscribe_exec]
    for runner in runners:
        daemon.connection.subscribe(runner.topic_filter, runner.received)
    return runners


def write_message(path, topic, payload):
    """Append payload to path in one non-blocking write; warn and drop on failure."""
    try:
        fd = os.open(path, WRITE_FLAGS, 0o644)
    except OSError as e:
        reason = "FIFO has no reader" if e.errno == errno.ENXIO else e.strerror
        log.warning("%s: message on %s dropped: %s", path, topic, reason)
        return
    try:
        written = os.write(fd, payload)
    except OSError as e:
        reason = "FIFO is full" if e.errno == errno.EAGAIN else e.strerror
        log.warning("%s: message on %s dropped: %s", path, topic, reason)
        return
    finally:
        os.close(fd)
    if written < len(payload):
        log.warning("%s: message on %s cut short: %d of %d bytes written", path, topic,
                    written, len(payload))


class ExecSubscription:
    """One --subscribe-exec: CMD per message, one at a time, bounded backlog."""

    def __init__(self, loop, topic_filter, command):
        self._loop = loop
        self.topic_filter = topic_filter
        self._command = command
        self._waiting = collections.deque()
        self._running = False

    def received(self, topic, payload):
        if not self._running:
            self._run(topic, payload)
        elif len(self._waiting) < EXEC_QUEUE_LIMIT:
            self._waiting.append((topic, payload))
        else:
            log.warning("subscribe-exec for %s: %d messages already waiting; message on %s "
                        "dropped", self.topic_filter, EXEC_QUEUE_LIMIT, topic)

    def _run(self, topic, payload):
        self._running = True
        children.run(self._loop, self._command, lambda result: self._finished(topic, result),
                     stdin=payload, timeout=EXEC_TIMEOUT)

    def _finished(self, topic, result):
        if not result.ok:
            log.warning("subscribe-exec command for message on %s %s", topic, result.describe())
        self._running = False
        if self._waiting:
            self._run(*self._waiting.popleft())
