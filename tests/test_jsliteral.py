"""Tests for lib.jsliteral: NodeJS service definitions read as literals."""

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lib.jsliteral import CodeError, LiteralError, parse


def test_typical_nodejs_definition():
    text = """'use strict';
// Network settings for the gateway.
module.exports = {
  key: 'network',
  outfile: '/etc/network.conf',   // written on change
  outformat: "SHELL",
  notifycmd: '/etc/init.d/network reload',
  /* only these subkeys
     go to the file */
  outkeys: [ 'ip', 'mask', ],
  initialnotify: true,
  timeout: 30,
};
"""
    assert parse(text) == {
        "key": "network",
        "outfile": "/etc/network.conf",
        "outformat": "SHELL",
        "notifycmd": "/etc/init.d/network reload",
        "outkeys": ["ip", "mask"],
        "initialnotify": True,
        "timeout": 30,
    }


def test_minimal_forms():
    assert parse("module.exports={}") == {}
    assert parse('"use strict"\nmodule.exports = {a: 1}') == {"a": 1}
    assert parse("module.exports = {a: 1};   \n// end\n") == {"a": 1}
    assert parse("\ufeffmodule . exports = {a: 1}") == {"a": 1}


def test_values():
    text = (
        "module.exports = {n: null, t: true, f: false, i: 42, neg: -7, pos: +3, fl: 1.5,"
        " nf: -0.25, e: 1e3, ne: 2.5E-2, dot: .5, trail: 5., hex: 0x1F, nhex: -0xff,"
        " oct: 0o17, bin: 0b101, big: 12345678901234567890,"
        " arr: [1, 'two', [3], {four: 4}], obj: {deep: {deeper: {}}}, empty: [],}"
    )
    assert parse(text) == {
        "n": None,
        "t": True,
        "f": False,
        "i": 42,
        "neg": -7,
        "pos": 3,
        "fl": 1.5,
        "nf": -0.25,
        "e": 1000.0,
        "ne": 0.025,
        "dot": 0.5,
        "trail": 5.0,
        "hex": 31,
        "nhex": -255,
        "oct": 15,
        "bin": 5,
        "big": 12345678901234567890,
        "arr": [1, "two", [3], {"four": 4}],
        "obj": {"deep": {"deeper": {}}},
        "empty": [],
    }
    assert isinstance(parse("module.exports = {a: 1}")["a"], int)
    assert isinstance(parse("module.exports = {a: 1.0}")["a"], float)


def test_keys():
    text = """module.exports = {
      plain: 1, _under: 2, $dollar: 3, camelCase9: 4, 'single q': 5, "double-q": 6,
      function: 7, null: 8, 'a\\'b': 9, ключ: 10,
    }"""
    assert parse(text) == {
        "plain": 1,
        "_under": 2,
        "$dollar": 3,
        "camelCase9": 4,
        "single q": 5,
        "double-q": 6,
        "function": 7,
        "null": 8,
        "a'b": 9,
        "ключ": 10,
    }


def test_duplicate_keys_last_wins():
    assert parse("module.exports = {a: 1, a: 2}") == {"a": 2}


@pytest.mark.parametrize(
    ("literal", "value"),
    [
        (r"'a\nb'", "a\nb"),
        (r"'a\tb\rc'", "a\tb\rc"),
        (r"'\b\f\v\0'", "\b\f\v\0"),
        (r"'it\'s'", "it's"),
        (r'"say \"hi\""', 'say "hi"'),
        (r"'back\\slash'", "back\\slash"),
        (r"'\u00e9\u00E9'", "éé"),
        (r"'\x41\x7e'", "A~"),
        (r"'\u{1F600}'", "😀"),
        (r"'\uD83D\uDE00'", "😀"),
        (r"'\q\$'", "q$"),
        ("'line\\\ncontinued'", "linecontinued"),
        ("'crlf\\\r\ncontinued'", "crlfcontinued"),
        ("'é 日本 😀'", "é 日本 😀"),
        ('"single \' inside"', "single ' inside"),
        ("'double \" inside'", 'double " inside'),
        ("'// not a comment /* */'", "// not a comment /* */"),
        ("''", ""),
    ],
)
def test_string_escapes(literal, value):
    assert parse("module.exports = {s: %s}" % literal) == {"s": value}


@pytest.mark.parametrize(
    ("text", "line", "what"),
    [
        ("module.exports = {\n  validate: function (cfg) { return cfg; },\n}", 2, "function"),
        ("module.exports = {\n  validate: (cfg) => cfg,\n}", 2, "parentheses"),
        ("module.exports = {\n  validate: cfg => cfg,\n}", 2, "identifier 'cfg'"),
        ("module.exports = {\n  validate(cfg) { return cfg; },\n}", 2, "method 'validate'"),
        ("module.exports = {\n  async validate(cfg) {},\n}", 2, "async"),
        ("module.exports = {\n  get x() { return 1; },\n}", 2, "getter"),
        ("module.exports = {\n  key: require('os').hostname(),\n}", 2, "identifier 'require'"),
        ("module.exports = {\n  key: process.env.KEY,\n}", 2, "identifier 'process'"),
        ("module.exports = {\n  key: `tmpl`,\n}", 2, "template string"),
        ("module.exports = {\n  timeout: 60 * 1000,\n}", 2, "expression ('*'"),
        ("module.exports = {\n  key: 'a' + 'b',\n}", 2, "expression ('+'"),
        ("module.exports = {\n  key: x ? 1 : 2,\n}", 2, "identifier 'x'"),
        ("module.exports = {\n  key,\n}", 2, "shorthand property 'key'"),
        ("module.exports = {\n  ...base,\n}", 2, "spread"),
        ("module.exports = {\n  [k]: 1,\n}", 2, "computed key"),
        ("module.exports = {\n  a: [...xs],\n}", 2, "spread"),
        ("module.exports = {\n  a: new Date(),\n}", 2, "identifier 'new'"),
        ("module.exports = {\n  a: undefined,\n}", 2, "identifier 'undefined'"),
        ("module.exports = {\n  a: NaN,\n}", 2, "identifier 'NaN'"),
        ("module.exports = {\n  a: -Infinity,\n}", 2, "signed identifier"),
        ("const os = require('os');\nmodule.exports = {};", 1, "statement"),
        ("function f() {}\nmodule.exports = {};", 1, "statement"),
        ("module.exports = {};\nmodule.exports.validate = function () {};", 2, "after"),
        ("module.exports = {}\nconsole.log('hi')", 2, "after"),
        ("module.exports = {a: 1}.a", 1, "after"),
        ("module.exports = require('./base');", 1, "identifier 'require'"),
        ("module.exports = { a: 1, b: 2 } || {};", 1, "after"),
        ("module.fooexports = {}", 1, "statement"),
    ],
)
def test_code_is_refused(text, line, what):
    with pytest.raises(CodeError) as info:
        parse(text)
    message = str(info.value)
    assert message.startswith("line %d: " % line), message
    assert "code" in message
    assert what in message


@pytest.mark.parametrize(
    ("text", "line", "what"),
    [
        ("module.exports = {\n  a: 'unterminated,\n}", 2, "unterminated string"),
        ('module.exports = {\n\n  a: "x\n"}', 3, "unterminated string"),
        ("module.exports = {\n  a: 1,\n", 3, "end of text"),
        ("module.exports = {a: 1", 1, "end of text"),
        ("module.exports = {\n  a 1,\n}", 2, "expected ':'"),
        ("module.exports = {\n  a: [1,,2],\n}", 2, "empty array element"),
        ("module.exports = {\n  a: [1 2],\n}", 2, "unexpected '2'"),
        ("module.exports = {\n  a: 'x' 'y',\n}", 2, "unexpected"),
        ("module.exports = {a: 1,, b: 2}", 1, "expected a key"),
        ("module.exports = {\n  /* open comment\n}", 2, "unterminated /* comment"),
        ("module.exports = {a: 1}}", 1, "after"),
        ("module.exports = [1, 2]", 1, "must be an object"),
        ("module.exports = 'x'", 1, "must be an object"),
        ("module.exports = ", 1, "end of text"),
        ("module.exports {}", 1, "expected '='"),
        ("{a: 1}", 1, "expected module.exports"),
        ("", 1, "expected module.exports"),
        ("module.exports = {a: 1.2.3}", 1, "bad number"),
        ("module.exports = {a: 1e}", 1, "bad number"),
        ("module.exports = {a: 0x}", 1, "base-16"),
        ("module.exports = {a: 0xZZ}", 1, "base-16"),
        ("module.exports = {a: 10px}", 1, "bad number"),
        ("module.exports = {a: 07}", 1, "legacy octal"),
        ("module.exports = {a: 1_000}", 1, "bad number"),
        ("module.exports = {a: -}", 1, "bad number"),
        ("module.exports = {\n a: '\\x4'}", 2, "hex digits"),
        ("module.exports = {a: '\\u12'}", 1, "hex digits"),
        ("module.exports = {a: '\\u{110000}'}", 1, "\\u{...}"),
        ("module.exports = {a: '\\uD800'}", 1, "lone surrogate"),
        ("module.exports = {a: '\\uDE00\\uD83D'}", 1, "lone surrogate"),
        ("module.exports = {a: '\\1'}", 1, "octal escape"),
        ("module.exports = {a: @}", 1, "unexpected '@'"),
        ("module.exports = {1: 'a'}", 1, "expected a key"),
        ("module.exports = {a: 1}" + "\n" * 4 + "  }", 5, "unexpected '}' after"),
    ],
)
def test_malformed_is_a_literal_error(text, line, what):
    with pytest.raises(LiteralError) as info:
        parse(text)
    message = str(info.value)
    assert message.startswith("line %d: " % line), message
    assert what in message, message


def test_malformed_that_is_not_code_is_not_a_code_error():
    with pytest.raises(LiteralError) as info:
        parse("module.exports = {a: 'x")
    assert not isinstance(info.value, CodeError)
    assert "code" not in str(info.value)


def test_literal_error_is_a_value_error():
    assert issubclass(LiteralError, ValueError)
    assert issubclass(CodeError, LiteralError)


def test_deep_nesting_is_an_error_not_a_crash():
    with pytest.raises(LiteralError, match="nested"):
        parse("module.exports = {a: " + "[" * 1000 + "]" * 1000 + "}")
    assert parse("module.exports = {a: " + "[" * 20 + "]" * 20 + "}")["a"]


# Any JSON object is also a valid definition literal; JSON text is a subset
# of what the parser takes (modulo surrogate pairs, which it combines).
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(), children, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.text(), json_values, max_size=5), st.booleans())
def test_json_objects_parse_to_themselves(obj, ascii_only):
    text = "module.exports = %s;" % json.dumps(obj, ensure_ascii=ascii_only, indent=1)
    assert parse(text) == obj
