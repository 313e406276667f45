"""The order a spool's messages are sent in, as sort keys (docs/interface.md#send-order).

Prioritised messages go first, lowest priority first, equal priorities
oldest first; of each priority slot only the newest message is prioritised
(with priority 1 when it has none), the older ones drop to the backlog. The
backlog goes in the directory's order: lexical, reverse-lexical (lexical
taken from the far end), oldest-first or newest-first (by mtime; equal
mtimes by name). lib/spoolindex.py keeps its windows in these keys;
`send_order` is the whole order of a set of messages at once, the reference
the spool is tested against. Pure (MicroPython-safe): no imports, no I/O, no
reliance on dict order.
"""

ORDERS = ("lexical", "reverse-lexical", "newest-first", "oldest-first")
SLOT_PRIORITY = 1  # the priority of a slot's newest message that names none


def backlog_key(order, name, mtime_ns):
    """The sort key of an unprioritised message in a directory of that order;
    with reverse-lexical the largest key goes first (`from_far_end`)."""
    if order == "lexical" or order == "reverse-lexical":
        return name
    if order == "oldest-first":
        return (mtime_ns, name)
    if order == "newest-first":
        return (-mtime_ns, name)
    raise ValueError("unknown order %r" % (order,))


def from_far_end(order):
    """True when the backlog is taken largest key first."""
    return order == "reverse-lexical"


def uses_mtime(order):
    """True when the backlog's keys need each message's mtime."""
    return order == "oldest-first" or order == "newest-first"


def priority_key(priority, mtime_ns, name):
    """The sort key of a prioritised message: smallest first."""
    return (priority, mtime_ns, name)


def slot_key(mtime_ns, name):
    """Of two messages of one priority slot, the one with the larger key is the
    newer and holds the slot (equal mtimes: the larger name)."""
    return (mtime_ns, name)


def send_order(order, messages):
    """The names of messages in the order they are sent. Each message is a list
    [name, mtime_ns, priority or None, slot or None]; names are distinct."""
    holders = {}  # slot -> slot_key of its newest message
    for name, mtime_ns, _priority, slot in messages:
        if slot is not None:
            key = slot_key(mtime_ns, name)
            if slot not in holders or holders[slot] < key:
                holders[slot] = key
    urgent, backlog = [], []
    for name, mtime_ns, priority, slot in messages:
        if slot is not None:
            if holders[slot] != slot_key(mtime_ns, name):
                priority = None  # an older message of the slot
            elif priority is None:
                priority = SLOT_PRIORITY
        if priority is None:
            backlog.append((backlog_key(order, name, mtime_ns), name))
        else:
            urgent.append((priority_key(priority, mtime_ns, name), name))
    urgent.sort()
    backlog.sort(reverse=from_far_end(order))
    return [name for _key, name in urgent] + [name for _key, name in backlog]
