"""Which message of a spool goes next, in a few bytes per waiting message.

The message spool (lib/messages.py) reads each file once when it is found,
to learn its priority, priority slot and mtime, and tells this index. The
index answers "what next" by docs/interface.md#send-order: the prioritised
messages (lowest priority first, equal priorities oldest first; of each
priority slot only the newest message) before the unprioritised backlog,
which goes in the directory's order.

Memory per waiting message:
- every message: an 8-byte digest of its name (`NameSet`), so that a
  directory rescan can tell the files it has already classified from new
  ones without reading them again;
- prioritised messages: 24 more bytes, the digest with its priority and
  mtime (`PriorityTable`), since their place in the order is in the file;
- the next `WINDOW` messages in send order of each kind, prioritised and
  unprioritised (`Window`, ~150 bytes each). When a window runs dry while
  more wait, the spool lists the directory again and the index keeps the
  next `WINDOW` of them (one listing per WINDOW messages sent).

This module does no I/O; the spool reads the files and lists the directory.
"""

import bisect
import hashlib
import heapq
import sys
from array import array

from . import messageorder

WINDOW = 4096  # messages of each kind held in memory, in send order
FOLD_AT = 4096  # pending changes before they are folded into the arrays


def _blake2b_digest(name):
    raw = name.encode("utf-8", "surrogateescape")
    return int.from_bytes(hashlib.blake2b(raw, digest_size=8).digest(), "little", signed=True)


# 64 bits: among 100,000 names a collision is a one-in-a-billion event, and
# would only put a file out of its place in the order (or make a new file look
# already classified). A str caches its hash(), but it has only 32 bits on armv7.
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


class PriorityTable:
    """name -> (priority, mtime_ns) by 8-byte name digest: three sorted arrays,
    plus a dict of recent changes (None for a removal) folded in now and then.
    Priorities are kept as floats."""

    def __init__(self):
        self._digests = array("q")
        self._priorities = array("d")
        self._mtimes = array("q")
        self._changes = {}  # digest -> (priority, mtime_ns), or None once removed

    def get(self, name):
        digest = _digest(name)
        if digest in self._changes:
            return self._changes[digest]
        i = self._position(digest)
        return None if i is None else (self._priorities[i], self._mtimes[i])

    def set(self, name, priority, mtime_ns):
        self._changes[_digest(name)] = (priority, mtime_ns)
        self._fold_if_due()

    def discard(self, name):
        self._changes[_digest(name)] = None
        self._fold_if_due()

    def _fold_if_due(self):
        if len(self._changes) < FOLD_AT:
            return
        changes, digests = self._changes, self._digests
        changed = sorted((digest,) + value for digest, value in changes.items()
                         if value is not None)
        size = len(digests) + len(changed) - sum(1 for digest in changes
                                                 if self._position(digest) is not None)
        kept = (row for row in zip(digests, self._priorities, self._mtimes)
                if row[0] not in changes)
        # Allocated once at their final size: arrays grown an item at a time,
        # and again at each fold, would leave the heap fragmented.
        self._digests, self._priorities, self._mtimes = (
            array(code, bytes(8 * size)) for code in "qdq")
        for i, (digest, priority, mtime_ns) in enumerate(heapq.merge(kept, changed)):
            self._digests[i] = digest
            self._priorities[i] = priority
            self._mtimes[i] = mtime_ns
        self._changes = {}

    def _position(self, digest):
        i = bisect.bisect_left(self._digests, digest)
        return i if i < len(self._digests) and self._digests[i] == digest else None


class Window:
    """The first `size` of a set of messages in key order, as (key, name) in a
    sorted list; when more of the set wait, only the fact (`complete` is False).
    `reverse` takes them from the far end of the key order instead.

    Invariant: when not complete, every message of the set whose key is on
    the near side of the window's far end is in the window.
    """

    def __init__(self, size, reverse=False):
        self._size = size
        self._reverse = reverse
        self._items = []  # (key, name), ascending by key
        self.complete = True
        self._horizon = None  # during a refill, once trimmed: the window's far end

    def __len__(self):
        return len(self._items)

    @property
    def needs_refill(self):
        return not self._items and not self.complete

    def add(self, key, name):
        item = (key, name)
        if not self.complete and (not self._items or self._beyond(item)):
            return  # on disk; a refill finds it in its turn
        bisect.insort(self._items, item)
        if len(self._items) > self._size:
            self._drop_far_end()

    def pop(self):
        """The name of the next message, or None."""
        if not self._items:
            return None
        return (self._items.pop() if self._reverse else self._items.pop(0))[1]

    def remove(self, name):
        for i, (_key, held) in enumerate(self._items):
            if held == name:
                del self._items[i]
                return

    def start_refill(self):
        self._items = []
        self.complete = True

    def offer(self, key, name):
        """During a refill: a message of the set, found on disk."""
        item = (key, name)
        # Beyond the far end of an earlier trim of this refill first: the
        # cheaper test, and most fail it. (Not _beyond: what was offered since
        # that trim is unsorted, so _items' ends are not the far end.)
        if not self.complete and (item < self._horizon if self._reverse
                                  else item > self._horizon):
            return
        self._items.append(item)
        if len(self._items) >= 2 * self._size:
            self.end_refill()

    def end_refill(self):
        self._items.sort()
        while len(self._items) > self._size:
            self._drop_far_end()
        if not self.complete:
            self._horizon = self._items[0] if self._reverse else self._items[-1]

    def _beyond(self, item):
        return item < self._items[0] if self._reverse else item > self._items[-1]

    def _drop_far_end(self):
        if self._reverse:
            del self._items[0]
        else:
            self._items.pop()
        self.complete = False


class SpoolIndex:
    """Every message of one directory from discovery until it is finished.

    `add` a classified file, `take` the next one to send, `finished` once it
    is deleted or failed, `forget` a waiting one that vanished or changed.
    """

    def __init__(self, order, window=WINDOW):
        self.known = NameSet()  # every name added and not finished or forgotten
        if order not in messageorder.ORDERS:
            raise ValueError("unknown order %r" % (order,))
        self.by_mtime = messageorder.uses_mtime(order)
        self._order = order
        self.backlog = Window(window, reverse=messageorder.from_far_end(order))
        self._prioritised = PriorityTable()  # the waiting prioritised messages
        self.urgent = Window(window)  # the first of them, keyed (priority, mtime_ns, name)
        self._slots = {}  # slot -> (mtime_ns, name) of its newest message, waiting or taken
        self._slot_of = {}  # name -> slot, of those newest messages
        self._taken = set()  # the messages being sent

    def __len__(self):
        """Messages waiting or being sent."""
        return len(self.known)

    @property
    def needs_refill(self):
        return self.urgent.needs_refill or (not self.urgent and self.backlog.needs_refill)

    def add(self, name, mtime_ns, priority=None, slot=None):
        """A file found in new/: priority is a number or None, slot a string or None."""
        self.known.add(name)
        if slot is not None:
            holder = self._slots.get(slot)
            if holder is not None and holder > messageorder.slot_key(mtime_ns, name):
                priority = slot = None  # an older message of the slot: backlog
            else:
                if holder is not None:
                    self._demote(holder[1])
                self._slots[slot] = messageorder.slot_key(mtime_ns, name)
                self._slot_of[name] = slot
                if priority is None:
                    priority = messageorder.SLOT_PRIORITY
        if priority is None:
            self.backlog.add(self._key(name, mtime_ns), name)
            return
        self._prioritised.set(name, priority, mtime_ns)
        self.urgent.add(messageorder.priority_key(priority, mtime_ns, name), name)

    def take(self):
        """(name, was_prioritised) of the next message to send, or None."""
        name = self.urgent.pop()
        if name is not None:
            self._prioritised.discard(name)
            self._taken.add(name)
            return name, True
        name = self.backlog.pop()
        if name is None:
            return None
        self._taken.add(name)
        return name, False

    def finished(self, name):
        """A taken message is done with (deleted, failed, or gone)."""
        self._taken.discard(name)
        self._release_slot(name)
        self.known.discard(name)

    def forget(self, name):
        """A waiting message vanished or was replaced: drop every trace of it."""
        if self._prioritised.get(name) is not None:
            self._prioritised.discard(name)
            self.urgent.remove(name)
            self._release_slot(name)
        else:
            self.backlog.remove(name)
        self.known.discard(name)

    def refill(self, listing):
        """Refill the windows that ran dry from listing: (name, mtime_ns) of every
        file in new/ (mtime_ns only when the backlog's order needs it)."""
        urgent, backlog = self.urgent.needs_refill, self.backlog.needs_refill
        windows = [w for w, due in ((self.urgent, urgent), (self.backlog, backlog)) if due]
        for window in windows:
            window.start_refill()
        for name, mtime_ns in listing:
            if name in self._taken:
                continue
            entry = self._prioritised.get(name)
            if entry is not None:
                if urgent:
                    self.urgent.offer(messageorder.priority_key(entry[0], entry[1], name), name)
            elif backlog and name in self.known:
                self.backlog.offer(self._key(name, mtime_ns), name)
        for window in windows:
            window.end_refill()

    def _key(self, name, mtime_ns):
        return messageorder.backlog_key(self._order, name, mtime_ns)

    def _release_slot(self, name):
        """name is done with: if it holds a slot (still its newest), free the slot."""
        slot = self._slot_of.pop(name, None)
        if slot is not None:
            del self._slots[slot]

    def _demote(self, name):
        entry = self._prioritised.get(name)
        if entry is not None:  # still waiting (a taken one is already on its way)
            self._prioritised.discard(name)
            self.urgent.remove(name)
            self.backlog.add(self._key(name, entry[1]), name)
        self._slot_of.pop(name, None)
