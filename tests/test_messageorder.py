"""The spool sends in messageorder's order: the windowed index (lib/spoolindex.py)
against messageorder.send_order, the pure reference whose vectors
(tests/vectors/messageorder.json) also run under MicroPython."""

from hypothesis import given, settings
from hypothesis import strategies as st

from lib import messageorder
from lib.spoolindex import SpoolIndex

messages = st.lists(
    st.tuples(st.integers(-3, 6), st.sampled_from([None, None, None, 0, 1, 2.5, -1]),
              st.sampled_from([None, None, None, "s1", "s2", ""])),
    max_size=40)


def drain(index, waiting):
    """Take every message, refilling from a listing of what still waits, as the spool does."""
    sent = []
    while True:
        if index.needs_refill:
            index.refill([(name, waiting[name]) for name in sorted(waiting)])
        taken = index.take()
        if taken is None:
            return sent
        sent.append(taken[0])
        del waiting[taken[0]]
        index.finished(taken[0])


@settings(max_examples=300, deadline=None)
@given(order=st.sampled_from(messageorder.ORDERS), window=st.integers(1, 4), found=messages,
       arrival=st.randoms(use_true_random=False))
def test_the_spool_sends_in_send_order(order, window, found, arrival):
    batch = [["m%02d" % i, mtime, priority, slot]
             for i, (mtime, priority, slot) in enumerate(found)]
    index = SpoolIndex(order, window=window)
    shuffled = list(batch)
    arrival.shuffle(shuffled)
    for name, mtime, priority, slot in shuffled:
        index.add(name, mtime, priority, slot)
    waiting = {name: mtime for name, mtime, _p, _s in batch}
    assert drain(index, waiting) == messageorder.send_order(order, batch)


def test_a_refill_trimmed_twice_keeps_the_order():
    """A listing of twice the window or more is trimmed while it is read; what
    comes after a trim is kept against that trim's far end (it once was kept
    against the last name offered, and newer messages lost their turn)."""
    batch = [["m%02d" % i, 0 if i < 4 else 1, None, None] for i in range(8)]
    index = SpoolIndex("newest-first", window=2)
    for name in ("m04", "m01", "m05", "m02", "m00", "m03", "m07", "m06"):
        index.add(name, 0 if name < "m04" else 1)
    waiting = {name: mtime for name, mtime, _p, _s in batch}
    assert drain(index, waiting) == ["m04", "m05", "m06", "m07", "m00", "m01", "m02", "m03"]
    assert drain(index, waiting) == []


def test_the_index_refuses_an_unknown_order():
    try:
        SpoolIndex("by-size")
    except ValueError as e:
        assert "unknown order 'by-size'" in str(e)
    else:
        raise AssertionError("SpoolIndex took an unknown order")
