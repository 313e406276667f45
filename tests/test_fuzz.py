"""Properties of the parsers, the shadow-document helpers and the topic
checks, fuzzed.

`make test` runs each property for a few hundred inputs; `make fuzz` sets
CHARIOTD_FUZZ_EXAMPLES=100000 and runs the same properties for that many.
Each says which errors may escape (only the documented ones) and which
round trips hold.
"""

import json
import math
import os

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lib import awslimits, formats, jsliteral, shadowdoc
from lib.formats import FormatError, shellnames
from lib.jsliteral import LiteralError

EXAMPLES = int(os.environ.get("CHARIOTD_FUZZ_EXAMPLES", "300"))
fuzz = settings(max_examples=EXAMPLES, deadline=None, database=None,
                suppress_health_check=list(HealthCheck))

# Few distinct keys, so that old and new documents share members to compare.
# (Objects are built from lists of pairs: hypothesis draws those much faster
# than dictionaries with unique keys.)
KEYS = ["a", "b", "a_b", "B", "PATH", "x1", "_", "", "\u00e9", "a.b"]
keys = st.sampled_from(KEYS) | st.text(max_size=4)
scalars = (st.none() | st.booleans() | st.integers(-2**70, 2**70)
           | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=12))


def objects(values, size):
    return st.lists(st.tuples(keys, values), max_size=size).map(dict)


json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4) | objects(inner, 4),
                           max_leaves=12)
configs = objects(json_values, 6)
# Text that looks like what the parsers read, so the fuzzer gets past the first byte.
SHELL_BITS = ["a=", "B_1=", "export ", "'", '"', "\\", "$", "$(", "`", "(", ")", " ", "\n",
              "\r\n", "#", ";", "x", "1", "=", "'\\''", "${a}", "\t"]
JS_BITS = ["module.exports", " = ", "{", "}", "[", "]", ":", ",", "'", '"', "\\", "a", "1",
           "0x1f", "1e5", "-", "true", "null", "//", "/*", "*/", "\n", ";", "=>",
           "'use strict';", "(", ")", "`", "."]
shell_texts = st.lists(st.sampled_from(SHELL_BITS) | st.text(max_size=3), max_size=30).map("".join)
js_texts = st.lists(st.sampled_from(JS_BITS) | st.text(max_size=3), max_size=40).map("".join)


# --- formats ---------------------------------------------------------------


@fuzz
@given(st.sampled_from(formats.names()), st.text() | st.binary() | shell_texts)
def test_format_load_raises_only_format_error(fmt, text):
    try:
        formats.load(fmt, text)
    except FormatError:
        pass


@fuzz
@given(st.sampled_from(formats.names()), json_values)
def test_format_dump_then_load_round_trips(fmt, cfg):
    try:
        text = formats.dump(fmt, cfg)
    except FormatError:
        return
    assert isinstance(text, str)
    text.encode("utf-8")
    loaded = formats.load(fmt, text)
    # Loading and dumping again gives the same text: nothing is lost or altered.
    assert formats.dump(fmt, loaded) == text
    if fmt == "JSON":  # members that are null are not written
        expected = {} if cfg is None else shadowdoc.strip_nulls(cfg)
        assert shadowdoc.equal(loaded, expected)
    elif fmt == "PLAINTEXT":
        assert loaded == (cfg or "")


@fuzz
@given(shell_texts)
def test_shell_load_then_dump_is_stable(text):
    try:
        flat = formats.load("SHELL", text)
    except FormatError:
        return
    try:
        again = formats.dump("SHELL", flat)
    except FormatError:
        # Reading is not writing: a name SHELL never writes (PATH, _) may be read.
        assert any(shellnames.acted_on(name) for name in flat)
        return
    assert formats.load("SHELL", again) == flat


# --- the .js literal reader ------------------------------------------------


@fuzz
@given(js_texts | st.text())
def test_jsliteral_raises_only_literal_error(text):
    try:
        value = jsliteral.parse(text)
    except LiteralError:
        return
    assert isinstance(value, dict)


def _finite_json(value):
    """Whether JSON text of value reads back the same in JavaScript terms."""
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return abs(value) < 2**53
    if isinstance(value, list):
        return all(_finite_json(v) for v in value)
    if isinstance(value, dict):
        return all(_finite_json(v) for v in value.values())
    return True


@fuzz
@given(configs, st.booleans())
def test_jsliteral_reads_json_objects_as_themselves(obj, strict):
    if not _finite_json(obj):
        return
    text = ("'use strict';\n" if strict else "") + "module.exports = " + json.dumps(obj) + ";\n"
    assert shadowdoc.equal(jsliteral.parse(text), obj)


# --- shadow documents ------------------------------------------------------


@fuzz
@given(configs, configs)
def test_diff_then_apply_gives_the_new_document(old, new):
    update = shadowdoc.diff(old, new)
    assert shadowdoc.equal(shadowdoc.strip_nulls(shadowdoc.apply(old, update)),
                           shadowdoc.strip_nulls(new))
    assert shadowdoc.diff(new, new) == {}


@fuzz
@given(json_values, json_values, st.booleans())
def test_merge_never_mutates_and_never_keeps_a_deleting_value(config, change, empty_deletes):
    before = (json.dumps(config, sort_keys=True), json.dumps(change, sort_keys=True))
    merged = shadowdoc.merge(config, change, empty_deletes)
    assert (json.dumps(config, sort_keys=True), json.dumps(change, sort_keys=True)) == before
    if isinstance(change, dict):
        for key, value in change.items():
            if shadowdoc.is_delete(value, empty_deletes):
                assert key not in merged
            elif not isinstance(value, dict):
                assert shadowdoc.equal(merged[key], value)


@fuzz
@given(configs, configs)
def test_changed_keys_are_exactly_the_keys_that_differ(old, new):
    changed = shadowdoc.changed_keys(old, new)
    for key in set(old) | set(new):
        differs = key not in old or key not in new or not shadowdoc.equal(old[key], new[key])
        assert (key in changed) == differs


# --- AWS's limits on topics ------------------------------------------------

TOPIC_BITS = ["a", "/", "+", "#", "$aws/", "$aws/rules/r/", "$aws/things/t/shadow/update",
              "$share/g/", "\n", "\x00", "\x7f", "\u0085", "\ud800", "\ufffe", "\u00e9", "x" * 40]
topic_texts = st.lists(st.sampled_from(TOPIC_BITS) | st.text(max_size=3), max_size=20).map("".join)


@fuzz
@given(topic_texts)
def test_a_topic_found_fit_is_one_aws_takes(topic):
    for check in (awslimits.topic_problem, awslimits.filter_problem):
        problem = check(topic)
        assert problem is None or isinstance(problem, str)
        if problem is None:
            assert topic and awslimits.character_problem(topic) is None
            assert len(topic.encode("utf-8")) <= awslimits.TOPIC_BYTES_LIMIT
    if awslimits.topic_problem(topic) is None:
        assert "+" not in topic and "#" not in topic
