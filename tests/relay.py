#!/usr/bin/env python3
"""A userspace TCP relay that makes a bad link: latency, throughput throttling
and stalls, for kernels without `tc netem`.

    relay.py LISTEN_HOST:PORT TARGET_HOST:PORT [--latency=SEC] [--rate=BYTES_PER_S]

Every byte is delivered after LATENCY seconds and no faster than RATE in
each direction. SIGUSR1 stalls the link (bytes are held, nothing is closed,
as when a route black-holes), SIGUSR2 lets it flow again. It prints
`listening` once it accepts connections. Usable as a module (`Relay`),
which can also stall one direction only (what the target sends: its
acknowledgements) and cut every connection.
"""

import argparse
import collections
import signal
import socket
import sys
import threading
import time

CHUNK = 512


class Relay:
    def __init__(self, listen, target, latency=0.0, rate=0):
        self.target = target
        self.latency = latency
        self.rate = rate
        # bytes to the target, and back from it
        self.flowing = {"up": threading.Event(), "down": threading.Event()}
        self.flow()
        self.listener = socket.create_server(listen)
        self.address = self.listener.getsockname()[:2]
        self.connections = 0
        self.sockets = []

    def serve(self):
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def stall(self, directions=("up", "down")):
        for d in directions:
            self.flowing[d].clear()

    def flow(self):
        for event in self.flowing.values():
            event.set()

    def cut(self):
        """Close every connection (the listener stays)."""
        sockets, self.sockets = self.sockets, []
        for s in sockets:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    def close(self):
        self.listener.close()
        self.flow()
        self.cut()

    def _accept(self):
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=10)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            self.connections += 1
            self.sockets += [client, upstream]
            for src, dst, d in ((client, upstream, "up"), (upstream, client, "down")):
                Direction(self, src, dst, self.flowing[d]).start()


class Direction:
    """One direction of one connection: a reader stamps chunks, a writer
    delivers them after the latency, at the rate, unless stalled."""

    def __init__(self, relay, src, dst, flowing):
        self.relay, self.src, self.dst, self.flowing = relay, src, dst, flowing
        self.queue = collections.deque()
        self.ready = threading.Condition()
        self.closed = False

    def start(self):
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(target=self._write, daemon=True).start()

    def _read(self):
        try:
            while True:
                data = self.src.recv(CHUNK if self.relay.rate else 65536)
                if not data:
                    break
                with self.ready:
                    self.queue.append((time.monotonic() + self.relay.latency, data))
                    self.ready.notify()
        except OSError:
            pass
        with self.ready:
            self.closed = True
            self.ready.notify()

    def _write(self):
        try:
            while True:
                with self.ready:
                    while not self.queue and not self.closed:
                        self.ready.wait()
                    if not self.queue:
                        break
                    due, data = self.queue.popleft()
                delay = due - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                self.flowing.wait()
                self.dst.sendall(data)
                if self.relay.rate:
                    time.sleep(len(data) / self.relay.rate)
        except OSError:
            pass
        for s in (self.src, self.dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def _address(text):
    host, _, port = text.rpartition(":")
    return host, int(port)


def main(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("listen", type=_address)
    p.add_argument("target", type=_address)
    p.add_argument("--latency", type=float, default=0.0)
    p.add_argument("--rate", type=float, default=0, help="bytes per second; 0 = unlimited")
    args = p.parse_args(argv)
    relay = Relay(args.listen, args.target, args.latency, args.rate).serve()
    signal.signal(signal.SIGUSR1, lambda *_: relay.stall())
    signal.signal(signal.SIGUSR2, lambda *_: relay.flow())
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print("listening", flush=True)
    while True:
        signal.pause()


if __name__ == "__main__":
    main(sys.argv[1:])
