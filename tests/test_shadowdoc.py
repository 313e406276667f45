"""Tests for lib.shadowdoc: merge, apply, diff, equal and the selectors."""

import copy as stdcopy

from hypothesis import given, settings
from hypothesis import strategies as st

from lib import shadowdoc
from lib.shadowdoc import apply, changed_keys, diff, equal, is_delete, merge, select, strip_nulls

# --- merge -----------------------------------------------------------------


def test_merge_deep():
    config = {"a": 1, "b": {"c": 2, "d": 3}, "e": [1, 2]}
    change = {"b": {"c": 20, "x": {"y": 1}}, "e": [3], "f": "new"}
    assert merge(config, change) == {
        "a": 1,
        "b": {"c": 20, "d": 3, "x": {"y": 1}},
        "e": [3],
        "f": "new",
    }


def test_merge_deletes():
    config = {"a": 1, "b": {"c": 2, "d": 3}, "e": [1], "f": 5}
    assert merge(config, {"a": None, "b": {"c": "DELETE"}, "e": []}) == {
        "b": {"d": 3},
        "e": [],
        "f": 5,
    }
    assert merge(config, {"e": [], "b": "DELETE"}, empty_array_deletes=True) == {"a": 1, "f": 5}
    # deleting what is not there is fine; emptied objects stay
    assert merge(config, {"zz": None, "b": {"c": None, "d": None}}) == {
        "a": 1,
        "b": {},
        "e": [1],
        "f": 5,
    }


def test_merge_non_object_change_replaces():
    assert merge({"a": 1}, "text") == "text"
    assert merge({"a": 1}, [1, 2]) == [1, 2]
    assert merge({"a": 1}, 0) == 0
    assert merge({"a": 1}, False) is False
    assert merge({"a": 1}, None) is None
    assert merge({"a": 1}, "DELETE") is None
    assert merge({"a": 1}, []) == []
    assert merge({"a": 1}, [], empty_array_deletes=True) is None


def test_merge_object_into_non_object_starts_empty():
    assert merge(None, {"a": 1, "b": None}) == {"a": 1}
    assert merge("text", {"a": {"b": 1}}) == {"a": {"b": 1}}
    assert merge({"a": 5}, {"a": {"b": 1}}) == {"a": {"b": 1}}
    assert merge(None, {}) == {}


def test_merge_does_not_mutate_or_share():
    config = {"a": {"b": [1, {"c": 2}]}, "x": 1}
    change = {"a": {"d": {"e": [3]}}, "x": None}
    config_before, change_before = stdcopy.deepcopy(config), stdcopy.deepcopy(change)
    result = merge(config, change)
    assert config == config_before and change == change_before
    result["a"]["b"][1]["c"] = 99
    result["a"]["d"]["e"].append(4)
    assert config == config_before and change == change_before


def test_is_delete():
    assert is_delete(None) and is_delete("DELETE")
    assert not is_delete("delete") and not is_delete([]) and not is_delete({})
    assert is_delete([], empty_array_deletes=True)
    assert not is_delete([None], empty_array_deletes=True)
    assert not is_delete(0) and not is_delete(False) and not is_delete("")


# --- apply (AWS semantics) ---------------------------------------------------


def test_apply_only_null_deletes():
    doc = {"a": 1, "b": {"c": 2}}
    assert apply(doc, {"a": "DELETE", "b": {"c": None, "d": 1}}) == {"a": "DELETE", "b": {"d": 1}}
    assert apply(doc, {"b": None}) == {"a": 1}
    assert apply(None, {"a": 1}) == {"a": 1}
    assert apply(doc, 5) == 5


# --- diff ------------------------------------------------------------------


def test_diff_examples():
    old = {"a": 1, "b": {"c": 2, "d": 3}, "e": [1], "gone": "x", "n": None}
    new = {"a": 1.0, "b": {"c": 2, "d": 4}, "e": [1, 2], "added": {"x": 1}}
    assert diff(old, new) == {"b": {"d": 4}, "e": [1, 2], "gone": None, "added": {"x": 1}}


def test_diff_equal_is_empty():
    assert diff({}, {}) == {}
    assert diff({"a": {"b": [1, {"c": 1}]}}, {"a": {"b": [1, {"c": 1.0}]}}) == {}
    assert diff(5, 5) == {}
    assert diff(None, None) == {}
    assert diff({"a": None}, {}) == {}


def test_diff_non_objects():
    assert diff(5, 6) == 6
    assert diff({"a": 1}, None) is None
    assert diff(None, {"a": 1}) == {"a": 1}
    assert diff("x", [1]) == [1]
    assert diff({"a": 1}, "x") == "x"
    assert diff(1, True) is True


def test_diff_type_changes_inside_objects():
    assert diff({"a": 1}, {"a": {"b": 1}}) == {"a": {"b": 1}}
    assert diff({"a": {"b": 1}}, {"a": 1}) == {"a": 1}
    assert diff({"a": 1}, {"a": True}) == {"a": True}
    assert diff({"a": {"b": 1}}, {"a": {}}) == {"a": {"b": None}}


def test_diff_for_one_service_section():
    assert diff({"svc": {"a": 1}}, {"svc": None}) == {"svc": None}
    assert diff({}, {"svc": {"a": 1}}) == {"svc": {"a": 1}}
    assert diff({"svc": {"a": 1}}, {"svc": {"a": 1}}) == {}


json_leaves = st.none() | st.booleans() | st.integers(-5, 5) | st.sampled_from([0.5, 1.0, "x", "y"])
json_docs = st.recursive(
    json_leaves,
    lambda children: (
        st.lists(children.filter(lambda v: v is not None), max_size=3)
        | st.dictionaries(st.sampled_from("abcd"), children, max_size=4)
    ),
    max_leaves=15,
)
object_docs = st.dictionaries(st.sampled_from("abcd"), json_docs, max_size=4)


@settings(max_examples=200, deadline=None)
@given(object_docs, object_docs)
def test_diff_applied_gives_new(old, new):
    old = strip_nulls(old)  # a stored shadow never holds null
    update = diff(old, new)
    assert equal(apply(old, update), strip_nulls(new))
    assert (update == {}) == equal(old, strip_nulls(new))


@settings(max_examples=200, deadline=None)
@given(object_docs, object_docs)
def test_merge_of_diff_matches_apply(old, new):
    # A diff contains no "DELETE" strings unless the value itself is one, so
    # merge (chariotd semantics) and apply (AWS semantics) agree on it.
    update = diff(old, new)
    if "DELETE" not in repr(update):
        assert equal(merge(old, update), apply(old, update))


# --- equal -----------------------------------------------------------------


def test_equal_json_semantics():
    assert equal(1, 1.0)
    assert equal({"a": [1, 2.0]}, {"a": [1.0, 2]})
    assert not equal(True, 1)
    assert not equal(False, 0)
    assert not equal({"a": True}, {"a": 1})
    assert not equal([0], [False])
    assert equal(True, True)
    assert not equal("1", 1)
    assert not equal(None, {})
    assert not equal({"a": 1}, {"a": 1, "b": 2})
    assert not equal({"a": 1}, {"b": 1})
    assert not equal([1], [1, 2])
    assert equal((1, 2), [1, 2])
    assert not equal({}, [])


# --- strip_nulls, select, changed_keys ---------------------------------------


def test_strip_nulls():
    assert strip_nulls({"a": None, "b": {"c": None, "d": [None, {"e": None}]}}) == {
        "b": {"d": [None, {}]},
    }
    assert strip_nulls(None) is None
    assert strip_nulls(5) == 5


def test_select():
    cfg = {"a": 1, "b": {"c": 2}, "d": 3}
    assert select(cfg, ["a", "b", "missing"]) == {"a": 1, "b": {"c": 2}}
    assert select(cfg, []) == {}
    assert select(cfg, None) == cfg
    assert select("text", ["a"]) == "text"
    assert select(None, ["a"]) is None
    picked = select(cfg, ["b"])
    picked["b"]["c"] = 9
    assert cfg["b"]["c"] == 2


def test_changed_keys():
    old = {"a": 1, "b": {"c": 2}, "d": 3, "e": 1}
    new = {"a": 1.0, "b": {"c": 3}, "e": True, "f": 0}
    assert changed_keys(old, new) == ["b", "d", "e", "f"]
    assert changed_keys(None, {"x": 1}) == ["x"]
    assert changed_keys({"x": 1}, None) == ["x"]
    assert changed_keys("a", "b") == []
    assert changed_keys(old, old) == []


def test_copy_is_deep():
    value = {"a": [{"b": 1}], "t": (1, 2)}
    copied = shadowdoc.copy(value)
    assert copied == {"a": [{"b": 1}], "t": [1, 2]}
    copied["a"][0]["b"] = 2
    assert value["a"][0]["b"] == 1
