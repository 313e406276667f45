"""The spool's ordering index on its own: the order of docs/interface.md#send-order,
bounded windows refilled from directory listings, compact name and priority tables."""

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lib.spoolindex import NameSet, PriorityTable, SpoolIndex, Window

H = 3600 * 10**9  # one hour in ns
EXAMPLE = [  # docs/interface.md#send-order: name, mtime, priority, slot
    ("A", 23 * H + 12, None, None),
    ("B", 11 * H + 51, 2, None),
    ("C", 3 * H + 22, 1, "xyz"),
    ("D", 11 * H + 51, 1, "xyz"),
    ("E", 16 * H + 20, 3, None),
    ("F", 11 * H + 45, None, None),
]


def drain(index, listing=()):
    order = []
    while True:
        if index.needs_refill:
            index.refill(listing)
        taken = index.take()
        if taken is None:
            return order
        order.append(taken[0])
        index.finished(taken[0])


@pytest.mark.parametrize("order, expected", [
    ("lexical", "DBEACF"),
    ("oldest-first", "DBECFA"),
    ("newest-first", "DBEAFC"),
    ("reverse-lexical", "DBEFCA"),
])
@pytest.mark.parametrize("arrival", [EXAMPLE, EXAMPLE[::-1]])
def test_interface_example(order, expected, arrival):
    index = SpoolIndex(order)
    for name, mtime, priority, slot in arrival:
        index.add(name, mtime, priority, slot)
    assert "".join(drain(index)) == expected


def test_newer_slot_message_demotes_the_waiting_one():
    index = SpoolIndex("lexical")
    index.add("z-old", 1, None, "status")
    index.add("a-plain", 5)
    index.add("m-new", 2, None, "status")
    assert index.take() == ("m-new", True)
    assert drain(index) == ["a-plain", "z-old"]


def test_slot_message_older_than_the_one_being_sent_goes_to_the_backlog():
    index = SpoolIndex("lexical")
    index.add("b", 10, None, "s")
    assert index.take() == ("b", True)
    index.add("a", 5, None, "s")
    assert index.take() == ("a", False)


def test_window_refills_from_listing_in_order():
    index = SpoolIndex("lexical", window=4)
    names = ["m%03d" % i for i in range(20)]
    for name in reversed(names):
        index.add(name, 0)
    assert len(index.backlog) == 4
    assert drain(index, [(n, 0) for n in names]) == names


def test_refill_skips_unknown_taken_and_prioritised_names():
    index = SpoolIndex("lexical", window=2)
    for name in "abcde":
        index.add(name, 0)
    index.add("p", 0, priority=5)
    listing = [(n, 0) for n in "abcdepx"]  # x: on disk, not classified yet
    assert drain(index, listing) == ["p", "a", "b", "c", "d", "e"]


def test_forget_removes_a_waiting_message():
    index = SpoolIndex("lexical")
    index.add("a", 0)
    index.add("b", 0, priority=1)
    index.forget("a")
    index.forget("b")
    assert index.take() is None
    assert "a" not in index.known and len(index) == 0


def test_a_rewritten_slot_keeps_one_prioritised_message():
    index = SpoolIndex("lexical")
    for i in range(10000):  # a status slot rewritten while offline
        index.add("s%05d" % i, i, None, "status")
    assert len(index.urgent) == 1
    assert index.take() == ("s09999", True)
    assert index.take() == ("s00000", False)


def test_prioritised_window_refills_in_priority_order():
    index = SpoolIndex("lexical", window=3)
    messages = [("p%02d" % i, 1000 - i, i % 4) for i in range(20)]  # name, mtime, priority
    for name, mtime, priority in messages:
        index.add(name, mtime, priority)
    index.add("plain", 0)
    assert len(index.urgent) == 3
    expected = [name for _p, _m, name in sorted((p, m, n) for n, m, p in messages)]
    listing = [(name, 0) for name, _m, _p in messages] + [("plain", 0)]
    assert drain(index, listing) == expected + ["plain"]


def test_priority_table():
    table = PriorityTable()
    for i in range(10000):
        table.set("file-%d" % i, i % 3, i)
    assert table.get("file-9999") == (0, 9999) and table.get("file-10000") is None
    for i in range(0, 10000, 2):
        table.discard("file-%d" % i)
    assert table.get("file-2") is None and table.get("file-3") == (0, 3)
    table.set("file-2", 7.5, 1)
    assert table.get("file-2") == (7.5, 1)
    assert all((table.get("file-%d" % i) is None) == (i % 2 == 0 and i != 2)
               for i in range(10000))


def test_nameset():
    names = NameSet()
    for i in range(10000):
        names.add("file-%d" % i)
    names.add("file-5")
    assert len(names) == 10000
    assert "file-9999" in names and "file-10000" not in names
    for i in range(0, 10000, 2):
        names.discard("file-%d" % i)
    assert len(names) == 5000
    assert "file-2" not in names and "file-3" in names
    names.discard("never-there")
    assert len(names) == 5000
    for i in range(0, 10000, 4):  # back again, some folded away, some pending removal
        names.add("file-%d" % i)
    assert len(names) == 7500
    assert all(("file-%d" % i in names) == (i % 4 != 2) for i in range(10000))


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.integers(0, 3000)), max_size=12000))
def test_nameset_matches_a_set(operations):
    names, model = NameSet(), set()
    for adding, n in operations:
        if adding:
            names.add("n%d" % n)
            model.add("n%d" % n)
        else:
            names.discard("n%d" % n)
            model.discard("n%d" % n)
    assert len(names) == len(model)
    assert all(("n%d" % n in names) == ("n%d" % n in model) for n in range(3001))


def test_reverse_window():
    window = Window(3, reverse=True)
    for name in "abcdefg":
        window.add(name, name)
    assert not window.complete
    assert [window.pop() for _ in range(3)] == ["g", "f", "e"]
    assert window.needs_refill


ORDER_KEYS = {
    "lexical": lambda n, m: n,
    "reverse-lexical": None,
    "oldest-first": lambda n, m: (m, n),
    "newest-first": lambda n, m: (-m, n),
}

ops = st.lists(st.one_of(
    st.tuples(st.just("add"), st.integers(0, 5), st.sampled_from([None, None, None, 0, 1, 2]),
              st.sampled_from([None, None, None, "s1", "s2"])),
    st.tuples(st.just("take")),
    st.tuples(st.just("finish")),
    st.tuples(st.just("forget"), st.integers(0, 50)),
), min_size=10, max_size=80)


@settings(max_examples=500, deadline=None)
@given(order=st.sampled_from(sorted(ORDER_KEYS)), window=st.integers(1, 3), script=ops)
def test_index_matches_a_full_sort(order, window, script):
    """A model that sorts everything each time agrees with the windowed index."""
    index = SpoolIndex(order, window=window)
    waiting = {}  # name -> (mtime, priority or None once demoted/unprioritised)
    taken = []
    slots = {}  # slot -> (mtime, name): the model's holder, same rule as the contract
    counter = itertools.count()

    def backlog_key(item):
        name, mtime = item
        if order == "reverse-lexical":
            return tuple(-ord(c) for c in name) + (1,)
        return ORDER_KEYS[order](name, mtime)

    for op in script:
        if op[0] == "add":
            _, mtime, priority, slot = op
            name = "f%02d" % next(counter)
            index.add(name, mtime, priority, slot)
            if slot is not None:
                holder = slots.get(slot)
                if holder is not None and holder > (mtime, name):
                    priority = None
                else:
                    if holder is not None and holder[1] in waiting:
                        waiting[holder[1]] = (waiting[holder[1]][0], None, None)
                    slots[slot] = (mtime, name)
                    priority = 1 if priority is None else priority
            waiting[name] = (mtime, priority, slot if priority is not None else None)
        elif op[0] == "take":
            if index.needs_refill:
                index.refill([(n, m) for n, (m, _p, _s) in waiting.items()] +
                             [(n, 0) for n, _slot in taken])
            got = index.take()
            prioritised = [(p, m, n) for n, (m, p, _s) in waiting.items() if p is not None]
            if prioritised:
                expected = (min(prioritised)[2], True)
            elif waiting:
                expected = (min(((n, m) for n, (m, _p, _s) in waiting.items()),
                                key=backlog_key)[0], False)
            else:
                expected = None
            assert got == expected
            if got:
                slot = waiting.pop(got[0])[2]
                taken.append((got[0], slot))
        elif op[0] == "finish" and taken:
            name, slot = taken.pop(0)
            index.finished(name)
            if slot is not None and slots.get(slot, (0, None))[1] == name:
                del slots[slot]
        elif op[0] == "forget" and waiting:
            name = sorted(waiting)[op[1] % len(waiting)]
            index.forget(name)
            slot = waiting.pop(name)[2]
            if slot is not None and slots.get(slot, (0, None))[1] == name:
                del slots[slot]
