"""The daemon's core: the parts every feature shares, and its life cycle.

A `Daemon` holds the event loop, the directory watcher, the certstore, the
one connection and the publisher, starts the optional features whose
options are given (each imported only then, so a device that uses no
tunnelling never loads tunnelling code), handles signals and decides the
exit status. Features live in their own modules; each exposes
`start(daemon)` and talks to the others only through this object.
"""

import importlib
import logging
import signal

from . import children
from .certstore import CertStore, CertStoreError
from .connection import Connection
from .dirwatch import DirWatcher
from .eventloop import EventLoop
from .publisher import Publisher

log = logging.getLogger("chariotd")

# (module, whether the options ask for it), in start order.
FEATURES = (
    (".status", lambda o: o.status_file),
    (".shadowsync", lambda o: o.services or o.updates or o.defaultshadow),
    (".messages", lambda o: o.messages),
    (".subscriptions", lambda o: o.subscribe_write or o.subscribe_exec),
    (".tunnels", lambda o: o.tunnelmappings),
    (".commands", lambda o: o.commands),
    (".defender", lambda o: o.defender),
    (".jobs", lambda o: o.jobs),
)

NO_CERTIFICATE_PAUSE = 10.0  # so a supervisor restarting us does not spin


class Daemon:
    def __init__(self, options):
        self.options = options
        self.loop = EventLoop()
        self.watcher = DirWatcher(self.loop, options.poll_interval)
        self.certstore = CertStore(options.certstore)
        will = None
        if options.last_will_topic:
            will = (options.last_will_topic, options.last_will_payload)
        self.connection = Connection(self.loop, options.clientid, options.cacert,
                                     self.certstore, options.keepalive, will)
        self.publisher = Publisher(self.loop, self.connection, options.publish_rate,
                                   options.publish_bytes_rate)
        self.parts = {}
        self.status = None  # the --status-file part, once started
        self.exit_status = 0
        self._refetchers = []
        self._exiting = False

    def status_changed(self):
        """Something --status-file shows has changed (nothing happens without it)."""
        if self.status is not None:
            self.status.changed()

    def on_refetch(self, fn):
        self._refetchers.append(fn)

    def refetch(self):
        """SIGHUP and the `refetch` command: fetch every shadow again."""
        for fn in self._refetchers:
            fn()

    def exit(self, status, delay=0.0):
        """Disconnect cleanly and end the loop with status, after delay seconds."""
        if self._exiting:
            return
        self._exiting = True
        self.exit_status = status
        for part in self.parts.values():
            stop = getattr(part, "stop", None)
            if stop:
                stop()
        self.connection.stop(lambda: self.loop.call_later(delay, self.loop.stop))

    def run(self):
        """Start everything, run until told to stop, return the exit status."""
        self.loop.add_signal_handler(signal.SIGTERM, self._terminate)
        self.loop.add_signal_handler(signal.SIGINT, self._terminate)
        self.loop.add_signal_handler(signal.SIGHUP, self.refetch)
        self.connection.on_fatal(self._connection_gave_up)
        if self.options.fleetprov and self._needs_certificate():
            self._start_part(".provisioning")
        else:
            for module, wanted in FEATURES:
                if wanted(self.options):
                    self._start_part(module)
            self.connection.start()
        try:
            self.loop.run()
        finally:
            children.stop_all()  # none of our children outlives us
        return self.exit_status

    def _start_part(self, module):
        part = importlib.import_module(module, __package__)
        try:
            self.parts[module.rpartition(".")[2]] = part.start(self)
        except OSError as e:  # a directory it needs cannot be made (a full disk, say)
            log.error("cannot start %s: %s%s", module.rpartition(".")[2], e.strerror or e,
                      ": " + e.filename if getattr(e, "filename", None) else "")
            self.exit(1, NO_CERTIFICATE_PAUSE)

    def _needs_certificate(self):
        try:
            self.certstore.preferred()
        except CertStoreError:
            return True
        return False

    def _terminate(self):
        if self._exiting:
            # Already on the way out (perhaps pausing so the supervisor does
            # not spin); a signal means now, with the status already chosen.
            self.loop.stop()
            return
        log.info("terminating")
        self.exit(0)

    def _connection_gave_up(self, error):
        log.error("%s", error)
        if isinstance(error, CertStoreError):
            log.error("no usable certificate and no --fleetprov; exiting in %ds",
                      NO_CERTIFICATE_PAUSE)
            self.exit(1, NO_CERTIFICATE_PAUSE)
        else:
            self.exit(1)
