"""Properties of the parsers, the shadow-document helpers, the topic
checks and the message-file parser, fuzzed.

`make test` runs each property for a few hundred inputs; `make fuzz` sets
CHARIOTD_FUZZ_EXAMPLES=100000 and runs the same properties for that many.
Each says which errors may escape (only the documented ones) and which
round trips hold.
"""

import json
import math
import os
import zlib

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lib import awslimits, formats, jsliteral, messagedoc, shadowdoc
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


# --- the message-file parser (lib/messagedoc.py) ---------------------------

# Values a writer may put in a message file, NaN, Infinity and 1e400 included.
odd_numbers = st.sampled_from([float("nan"), float("inf"), float("-inf"), 10**400, 2**64,
                               -0.0, 1e308, 0.5])
message_values = st.recursive(scalars | odd_numbers,
                              lambda inner: st.lists(inner, max_size=4) | objects(inner, 4),
                              max_leaves=12)
# A payload near AWS's 128 KiB limit now and then, as text or inside an array.
big_payloads = st.integers(130000, 132000).map(lambda n: "x" * n) | \
    st.integers(130000, 132000).map(lambda n: ["\u00e9" * (n // 2)])
# Mostly well-typed members, so that many documents get as far as building.
message_members = {
    "topic": topic_texts | topic_texts | st.sampled_from(["a/b", "$aws/rules/r/x",
                                                          "$aws/things/t/shadow/get"])
    | message_values,
    "payload": message_values | message_values | big_payloads,
    "qos": st.sampled_from([0, 1, 0, 1, 2, -1, True, False, 1.0, 0.0, "1", None]) | message_values,
    "compress": st.sampled_from(["gzip", "deflate", "lzma", "GZIP", None, 1, [], {}]),
    "priority": st.integers(-9, 9) | st.floats() | st.integers() | message_values,
    "priority_slot": st.text(max_size=6) | st.text(max_size=6) | message_values,
}


@st.composite
def message_docs(draw):
    doc = {}
    for key, values in message_members.items():
        # topic and payload are there nine times in ten, the others half the time
        if draw(st.integers(0, 9)) < (9 if key in ("topic", "payload") else 5):
            doc[key] = draw(values)
    if draw(st.booleans()):
        doc.update(draw(objects(message_values, 2)))  # members of a letterhead's or a typo
    return doc


# The bytes of a message file: a document's JSON as written (perhaps with a
# BOM, cut short, with a byte changed or a key given twice), or anything.
EDITS = ["none"] * 5 + ["bom", "cut", "byte", "duplicate"]


@st.composite
def message_files(draw):
    doc = draw(message_docs())
    data = json.dumps(doc, ensure_ascii=draw(st.booleans())).encode("utf-8", "surrogatepass")
    edit = draw(st.sampled_from(EDITS))
    if edit == "bom":
        data = b"\xef\xbb\xbf" + data
    elif edit == "cut" and data:
        data = data[:draw(st.integers(0, len(data) - 1))]
    elif edit == "byte" and data:
        at = draw(st.integers(0, len(data) - 1))
        data = data[:at] + bytes([draw(st.integers(0, 255))]) + data[at + 1:]
    elif edit == "duplicate" and data.startswith(b"{") and len(data) > 2:
        data = b'{"topic": "dup/first", ' + data[1:]
    return data


def _parse_and_build(data, prefix="", suffix="", head=None):
    """What the spool does with a file's bytes: only BadMessage may escape."""
    try:
        doc = messagedoc.parse(data)
        messagedoc.priority_of(doc)
        if head is not None:
            doc = messagedoc.over_letterhead(head, doc)
        return doc, messagedoc.build(doc, prefix, suffix)
    except messagedoc.BadMessage as e:
        assert str(e)
        return None, None


def _not_json_constant(name):
    raise AssertionError("published payload holds %s" % name)


def _assert_publishable(doc, message, prefix, suffix):
    """What parses is publishable within AWS's limits, and is what the file said."""
    assert isinstance(message, messagedoc.Message)
    assert message.topic == prefix + doc["topic"] + suffix
    assert awslimits.topic_problem(message.topic) is None
    message.topic.encode("utf-8")  # no lone surrogates
    assert isinstance(message.payload, bytes)
    assert len(message.payload) <= awslimits.PAYLOAD_LIMIT
    assert type(message.qos) is int and message.qos in (0, 1)
    data = message.payload
    if doc.get("compress") in ("gzip", "deflate"):
        data = zlib.decompress(data, 31 if doc["compress"] == "gzip" else 15)
    if isinstance(doc["payload"], str):
        assert data == doc["payload"].encode("utf-8")
    else:
        sent = json.loads(data, parse_constant=_not_json_constant)
        assert shadowdoc.equal(sent, doc["payload"])


@fuzz
@given(st.binary(max_size=200) | message_files())
def test_a_message_file_is_refused_with_a_reason_or_publishable(data):
    doc, message = _parse_and_build(data)
    if message is not None:
        _assert_publishable(doc, message, "", "")


@fuzz
@given(message_docs(), topic_texts, topic_texts)
def test_a_message_with_prefix_and_suffix_is_refused_or_publishable(doc, prefix, suffix):
    data = json.dumps(doc).encode("utf-8", "surrogatepass")
    doc, message = _parse_and_build(data, prefix, suffix)
    if message is not None:
        _assert_publishable(doc, message, prefix, suffix)


@fuzz
@given(st.binary(max_size=100) | message_files(), message_files())
def test_a_message_over_any_letterhead_is_refused_or_publishable(head_data, data):
    try:
        head = messagedoc.letterhead(head_data, "letterhead")
    except messagedoc.BadMessage:
        return
    doc, message = _parse_and_build(data, head=head)
    if message is not None:
        _assert_publishable(doc, message, "", "")


@fuzz
@given(message_docs(), st.integers(0, 2**63), st.booleans())
def test_the_generator_variables_are_strings(doc, mtime_ns, was_prioritised):
    try:
        messagedoc.priority_of(doc)
    except messagedoc.BadMessage:
        return
    env = messagedoc.generator_env(doc, "p/", "/s", "/spool/new/m", mtime_ns, was_prioritised)
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in env.items())
    assert env["MESSAGE_TIMESTAMP_S"] == str(mtime_ns // 10**9)
