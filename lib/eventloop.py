"""The one thread that owns the daemon's state.

Other threads (child-process waiters, signal handlers) never touch state:
they `post` a callable, which runs here. The loop sleeps in one `select`
until a file descriptor is ready, an event is posted or the nearest
deadline (a timer, the MQTT keepalive) is due, so an idle daemon does not
wake up on a fixed tick. It knows nothing about MQTT or files.
"""

import collections
import heapq
import itertools
import os
import select
import signal
import threading
import time


class Timer:
    """A pending call; `cancel()` stops it from running."""

    __slots__ = ("when", "callback", "args", "cancelled")

    def __init__(self, when, callback, args):
        self.when = when
        self.callback = callback
        self.args = args
        self.cancelled = False

    def cancel(self):
        self.cancelled = True


class EventLoop:
    def __init__(self):
        self._events = collections.deque()  # append and popleft are thread-safe
        self._thread = None  # the loop thread's ident, once running
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._timers = []
        self._seq = itertools.count()
        self._readers = {self._wake_r: self._drain_wake}
        self._writers = {}
        self._deadlines = []
        # The soonest deadline _timeout saw, for _run_deadlines: a deadline only
        # moves later as traffic flows (0: not looked at, so look).
        self._deadline_due = 0
        self._signals = []
        self._signal_handlers = {}
        self._running = False

    def post(self, callback, *args):
        """Run callback(*args) on the loop thread; safe from any thread."""
        self._events.append((callback, args))
        if threading.get_ident() == self._thread:
            return  # the loop runs its events before it sleeps again
        try:
            os.write(self._wake_w, b"\0")
        except BlockingIOError:
            pass  # the pipe is full, so the loop is awake anyway

    def call_later(self, delay, callback, *args):
        timer = Timer(time.monotonic() + max(delay, 0), callback, args)
        heapq.heappush(self._timers, (timer.when, next(self._seq), timer))
        return timer

    def add_reader(self, fd, callback):
        self._readers[fd] = callback

    def remove_reader(self, fd):
        self._readers.pop(fd, None)

    def set_writer(self, fd, callback):
        """Call callback when fd is writable; None stops watching."""
        if callback is None:
            self._writers.pop(fd, None)
        else:
            self._writers[fd] = callback

    def add_deadline(self, next_due, on_due):
        """next_due() gives a monotonic time or None; on_due() runs once it passes."""
        self._deadlines.append((next_due, on_due))

    def remove_deadline(self, on_due):
        self._deadlines = [d for d in self._deadlines if d[1] != on_due]

    def add_signal_handler(self, signum, callback):
        """Run callback() on the loop thread when signum arrives."""
        self._signal_handlers[signum] = callback
        # The kernel may deliver the signal to any of our threads, and Python
        # runs its handler only when this thread next executes bytecode: the
        # wakeup fd lets the C-level handler end the select from any thread.
        signal.set_wakeup_fd(self._wake_w, warn_on_full_buffer=False)
        # The handler runs between any two bytecodes of this thread, perhaps
        # in the middle of a callback, so it only records the signal.
        signal.signal(signum, self._on_signal)

    def _on_signal(self, signum, _frame):
        self._signals.append(signum)

    def stop(self):
        self._running = False
        self.post(lambda: None)

    def run(self):
        self._running = True
        self._thread = threading.get_ident()
        while self._running:
            self._wait(self._timeout())
            self._run_signals()
            self._run_events()
            self._run_timers()
            self._run_deadlines()
            # What the timers posted (a publish's write, say) runs in this
            # turn, rather than after one more trip through select.
            self._run_events()

    def _run_signals(self):
        while self._signals:
            self._signal_handlers[self._signals.pop(0)]()

    def _timeout(self):
        if self._events or self._signals:
            self._deadline_due = 0
            return 0
        soonest = None
        for next_due, _ in self._deadlines:
            due = next_due()
            if due is not None and (soonest is None or due < soonest):
                soonest = due
        self._deadline_due = soonest
        timers = self._timers
        while timers and timers[0][2].cancelled:
            heapq.heappop(timers)
        if timers and (soonest is None or timers[0][0] < soonest):
            soonest = timers[0][0]
        if soonest is None:
            return None
        return max(0.0, soonest - time.monotonic())

    def _wait(self, timeout):
        readers = self._readers
        writers = self._writers
        try:
            readable, writable, _ = select.select(list(readers), list(writers), [], timeout)
        except (OSError, ValueError):
            # A descriptor closed under us; the owner is told through its own path.
            return
        for fd in readable:
            callback = readers.get(fd)
            if callback is not None:
                callback()
        for fd in writable:
            callback = writers.get(fd)
            if callback is not None:
                callback()

    def _drain_wake(self):
        try:
            while os.read(self._wake_r, 4096):
                pass
        except BlockingIOError:
            pass

    def _run_events(self):
        events = self._events
        # Only this thread pops, so a deque that is not empty stays so until
        # it does (and an IndexError per turn would cost more than the test).
        while events:
            callback, args = events.popleft()
            callback(*args)

    def _run_timers(self):
        now = time.monotonic()
        while self._timers and self._timers[0][0] <= now:
            _, _, timer = heapq.heappop(self._timers)
            if not timer.cancelled:
                timer.callback(*timer.args)

    def _run_deadlines(self):
        now = time.monotonic()
        if self._deadline_due is None or self._deadline_due > now:
            return
        for next_due, on_due in self._deadlines:
            due = next_due()
            if due is not None and due <= now:
                on_due()
