"""Which message of a spool goes next, in a few bytes per waiting message.

The message spool (lib/messages.py) reads each file once when it is found,
to learn its priority, priority slot and mtime, and tells this index. The
index answers "what next" by interface.md section 6: the prioritised
messages (lowest priority first, equal priorities oldest first; of each
priority slot only the newest message) before the unprioritised backlog,
which goes in the directory's order.

Memory per waiting message:
- every message: an 8-byte digest of its name (`NameSet`), so that a
  directory rescan can tell the files it has already classified from new
  ones without reading them again;
- prioritised messages: a heap entry and a dict entry (~250 bytes), since
  they are expected to be few (a slot keeps only its newest prioritised);
- unprioritised backlog: nothing beyond the digest, except for the next
  `WINDOW` names in send order (`Backlog`, ~150 bytes each). When the window
  runs dry the spool lists the directory again and the index keeps the
  next `WINDOW` of them (one listing per WINDOW messages sent).

This module does no I/O; the spool reads the files and lists the directory.
"""

import bisect
import hashlib
import heapq
import sys
from array import array

WINDOW = 4096  # backlog names held in memory, in send order
FOLD_AT = 4096  # pending additions and removals before they are folded into the array


def _blake2b_digest(name):
    raw = name.encode("utf-8", "surrogateescape")
    return int.from_bytes(hashlib.blake2b(raw, digest_size=8).digest(), "little", signed=True)


# 64 bits: among 100,000 names a collision is a one-in-a-billion event, and
# would only make a new file look already classified (sent without its
# priority). A str caches its hash(), but it has only 32 bits on armv7.
_digest = hash if sys.hash_info.width >= 64 else _blake2b_digest


class NameSet:
    """A set of names stored as 8-byte digests: a sorted array, plus small sets
    of recent additions and removals that are folded into it now and then."""

    def __init__(self):
        self._sorted = array("q")
        self._added = set()  # in the set, not in _sorted yet
        self._removed = set()  # still in _sorted, no longer in the set

    def __len__(self):
        return len(self._sorted) + len(self._added) - len(self._removed)

    def __contains__(self, name):
        digest = _digest(name)
        return digest in self._added or (digest not in self._removed and self._held(digest))

    def add(self, name):
        digest = _digest(name)
        if digest in self._removed:
            self._removed.remove(digest)
        elif not self._held(digest):
            self._added.add(digest)
            self._fold_if_due()

    def discard(self, name):
        digest = _digest(name)
        if digest in self._added:
            self._added.remove(digest)
        elif digest not in self._removed and self._held(digest):
            self._removed.add(digest)
            self._fold_if_due()

    def _held(self, digest):
        i = bisect.bisect_left(self._sorted, digest)
        return i < len(self._sorted) and self._sorted[i] == digest

    def _fold_if_due(self):
        if len(self._added) + len(self._removed) < FOLD_AT:
            return
        removed = self._removed
        kept = (digest for digest in self._sorted if digest not in removed)
        # A merge of two sorted streams: no temporary list of every digest.
        self._sorted = array("q", heapq.merge(kept, sorted(self._added)))
        self._added, self._removed = set(), set()


# Sort keys of the unprioritised backlog; reverse-lexical is lexical taken from the far end.
_ORDER_KEYS = {
    "lexical": lambda name, mtime_ns: name,
    "reverse-lexical": lambda name, mtime_ns: name,
    "oldest-first": lambda name, mtime_ns: (mtime_ns, name),
    "newest-first": lambda name, mtime_ns: (-mtime_ns, name),
}


class Backlog:
    """The unprioritised messages in send order: the first `size` of them in
    a sorted list; when more wait, only the fact (`complete` is False).

    Invariant: when not complete, every backlog file whose key is on the near
    side of the window's far end is in the window.
    """

    def __init__(self, order, size=WINDOW):
        self._key = _ORDER_KEYS[order]
        self._reverse = order == "reverse-lexical"
        self.by_mtime = order in ("oldest-first", "newest-first")
        self._size = size
        self._window = []  # (key, name), ascending by key
        self.complete = True

    def __len__(self):
        return len(self._window)

    @property
    def needs_refill(self):
        return not self._window and not self.complete

    def add(self, name, mtime_ns):
        item = (self._key(name, mtime_ns), name)
        if not self.complete and (not self._window or self._beyond(item)):
            return  # on disk; a refill finds it in its turn
        bisect.insort(self._window, item)
        if len(self._window) > self._size:
            self._drop_far_end()

    def pop(self):
        """The next name to send, or None."""
        if not self._window:
            return None
        return (self._window.pop() if self._reverse else self._window.pop(0))[1]

    def remove(self, name):
        for i, (_key, held) in enumerate(self._window):
            if held == name:
                del self._window[i]
                return

    def refill(self, listing, admit):
        """Keep the first `size` of the files in listing ((name, mtime_ns) pairs) that
        admit(name) says belong to the backlog."""
        self._window = []
        self.complete = True
        for name, mtime_ns in listing:
            item = (self._key(name, mtime_ns), name)
            # Beyond the horizon first: it is the cheaper test, and most fail it.
            if not self.complete and self._beyond(item) or not admit(name):
                continue
            self._window.append(item)
            if len(self._window) >= 2 * self._size:
                self._trim()
        self._trim()

    def _trim(self):
        self._window.sort()
        while len(self._window) > self._size:
            self._drop_far_end()

    def _beyond(self, item):
        return item < self._window[0] if self._reverse else item > self._window[-1]

    def _drop_far_end(self):
        if self._reverse:
            del self._window[0]
        else:
            self._window.pop()
        self.complete = False


class SpoolIndex:
    """Every message of one directory from discovery until it is finished.

    `add` a classified file, `take` the next one to send, `finished` once it
    is deleted or failed, `forget` a waiting one that vanished or changed.
    """

    def __init__(self, order, window=WINDOW):
        self.known = NameSet()  # every name added and not finished or forgotten
        self.backlog = Backlog(order, window)
        self._prioritised = {}  # name -> (priority, mtime_ns, slot)
        self._heap = []  # (priority, mtime_ns, name); entries not in _prioritised are stale
        self._slots = {}  # slot -> (mtime_ns, name) of its newest message, waiting or taken
        self._taken = {}  # name -> slot (or None) of the messages being sent

    def __len__(self):
        """Messages waiting or being sent."""
        return len(self.known)

    @property
    def needs_refill(self):
        return self.backlog.needs_refill

    def add(self, name, mtime_ns, priority=None, slot=None):
        """A file found in new/: priority is a number or None, slot a string or None."""
        self.known.add(name)
        if slot is not None:
            holder = self._slots.get(slot)
            if holder is not None and holder > (mtime_ns, name):
                priority = slot = None  # an older message of the slot: backlog
            else:
                if holder is not None:
                    self._demote(holder[1])
                self._slots[slot] = (mtime_ns, name)
                if priority is None:
                    priority = 1
        if priority is None:
            self.backlog.add(name, mtime_ns)
            return
        self._prioritised[name] = (priority, mtime_ns, slot)
        heapq.heappush(self._heap, (priority, mtime_ns, name))
        if len(self._heap) > 2 * len(self._prioritised) + 64:
            self._rebuild_heap()

    def take(self):
        """(name, was_prioritised) of the next message to send, or None."""
        while self._heap:
            priority, mtime_ns, name = heapq.heappop(self._heap)
            entry = self._prioritised.get(name)
            if entry is not None and entry[:2] == (priority, mtime_ns):
                del self._prioritised[name]
                self._taken[name] = entry[2]
                return name, True
        name = self.backlog.pop()
        if name is None:
            return None
        self._taken[name] = None
        return name, False

    def finished(self, name):
        """A taken message is done with (deleted, failed, or gone)."""
        slot = self._taken.pop(name, None)
        if slot is not None and self._slots.get(slot, (None, None))[1] == name:
            del self._slots[slot]
        self.known.discard(name)

    def forget(self, name):
        """A waiting message vanished or was replaced: drop every trace of it."""
        entry = self._prioritised.pop(name, None)
        if entry is not None:
            slot = entry[2]
            if slot is not None and self._slots.get(slot, (None, None))[1] == name:
                del self._slots[slot]
        else:
            self.backlog.remove(name)
        self.known.discard(name)

    def refill(self, listing):
        """Refill the backlog window from listing: (name, mtime_ns) of every file in new/."""
        self.backlog.refill(listing, self._in_backlog)

    def _in_backlog(self, name):
        return name not in self._taken and name not in self._prioritised and name in self.known

    def _demote(self, name):
        entry = self._prioritised.pop(name, None)
        if entry is not None:  # still waiting (a taken one is already on its way)
            self.backlog.add(name, entry[1])

    def _rebuild_heap(self):
        self._heap = [(p, m, name) for name, (p, m, _slot) in self._prioritised.items()]
        heapq.heapify(self._heap)
