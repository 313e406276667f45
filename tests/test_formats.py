"""Tests for lib.formats: the registry, JSON, PLAINTEXT and SHELL.

The SHELL tests source the written file in every shell the contract names
and compare the variables byte for byte; that is the safety guarantee.
"""

import json
import os
import shutil
import subprocess

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lib import formats
from lib.formats import FormatError, shell

# --- registry --------------------------------------------------------------


def test_names():
    assert formats.names() == ["JSON", "PLAINTEXT", "SHELL"]


@pytest.mark.parametrize("fmt", ["json", "YAML", "", None])
def test_unknown_format_is_a_format_error(fmt):
    with pytest.raises(FormatError, match="unknown format"):
        formats.dump(fmt, {})
    with pytest.raises(FormatError, match="unknown format"):
        formats.load(fmt, "{}")


@pytest.mark.parametrize("fmt", ["SHELL", "PLAINTEXT"])
def test_dump_refuses_text_that_is_not_utf8(fmt):
    lone = json.loads('"x\\ud800"')  # JSON can carry a lone surrogate
    cfg = {"a": lone} if fmt == "SHELL" else lone
    with pytest.raises(FormatError, match="lone surrogate"):
        formats.dump(fmt, cfg)
    # JSON escapes it, so the JSON outfile stays ASCII and loads back.
    assert formats.load("JSON", formats.dump("JSON", {"a": lone})) == {"a": lone}


def test_format_error_is_a_value_error():
    assert issubclass(FormatError, ValueError)


def test_load_accepts_utf8_bytes_and_refuses_other_bytes():
    assert formats.load("JSON", '{"a": "é"}'.encode()) == {"a": "é"}
    assert formats.load("PLAINTEXT", b"hi\n") == "hi\n"
    with pytest.raises(FormatError, match="UTF-8"):
        formats.load("PLAINTEXT", b"\xff\xfe")
    with pytest.raises(FormatError, match="str or bytes"):
        formats.load("JSON", 5)


# --- JSON ------------------------------------------------------------------


def test_json_layout_is_sorted_indented_and_ends_in_newline():
    text = formats.dump("JSON", {"b": 1, "a": {"d": [1, {"z": None, "y": True}], "c": None}})
    assert text == (
        '{\n  "a": {\n    "d": [\n      1,\n      {\n        "y": true\n      }\n'
        '    ]\n  },\n  "b": 1\n}\n'
    )


def test_json_none():
    assert formats.dump("JSON", None) == "{}\n"
    assert formats.dump("JSON", {"a": None}) == "{}\n"
    # null in an array keeps its position
    assert json.loads(formats.dump("JSON", {"a": [None, 1]})) == {"a": [None, 1]}


def test_json_scalars_and_empty_containers():
    assert formats.dump("JSON", "x") == '"x"\n'
    assert formats.dump("JSON", 1.5) == "1.5\n"
    assert formats.dump("JSON", {"a": {}, "b": []}) == '{\n  "a": {},\n  "b": []\n}\n'
    assert formats.dump("JSON", ("a",)) == '[\n  "a"\n]\n'


@pytest.mark.parametrize(
    "bad", [{"a": float("nan")}, [float("inf")], {1: "x"}, {"a": {1, 2}}, {"a": b"x"}]
)
def test_json_dump_refuses_what_json_cannot_hold(bad):
    with pytest.raises(FormatError):
        formats.dump("JSON", bad)


def test_json_load():
    assert formats.load("JSON", '{"a": null, "b": [1, 2.5]}') == {"a": None, "b": [1, 2.5]}
    with pytest.raises(FormatError, match="not valid JSON"):
        formats.load("JSON", "{a: 1}")
    with pytest.raises(FormatError):
        formats.load("JSON", "")
    with pytest.raises(FormatError):
        formats.load("JSON", "[" * 100000)


def _strip(value):
    if isinstance(value, dict):
        return {k: _strip(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_strip(v) for v in value]
    return value


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
@given(json_values)
def test_json_round_trip(value):
    text = formats.dump("JSON", value)
    expected = _strip(value)
    if expected is None:
        expected = {}
    assert formats.load("JSON", text) == expected
    # Same bytes as the standard library's sorted, indented rendering.
    assert text == json.dumps(expected, sort_keys=True, indent=2) + "\n"


# --- PLAINTEXT -------------------------------------------------------------


def test_plaintext():
    assert formats.dump("PLAINTEXT", "a\nb 'c' $x\n") == "a\nb 'c' $x\n"
    assert formats.dump("PLAINTEXT", None) == ""
    assert formats.load("PLAINTEXT", "  x\n") == "  x\n"


@pytest.mark.parametrize("bad", [{"a": 1}, ["a"], 1, 1.5, True])
def test_plaintext_refuses_non_strings(bad):
    with pytest.raises(FormatError, match="must be a string"):
        formats.dump("PLAINTEXT", bad)


@given(st.text())
def test_plaintext_round_trip(text):
    assert formats.load("PLAINTEXT", formats.dump("PLAINTEXT", text)) == text


# --- SHELL: writing --------------------------------------------------------


def test_shell_layout():
    cfg = {"b": "x", "a": {"y": 1, "x": True, "n": None}, "c": [1, "two", False], "e": ""}
    assert formats.dump("SHELL", cfg) == (
        "a_x='true'\na_y='1'\nb='x'\nc=('1' 'two' 'false')\ne=''\n"
    )


def test_shell_quoting():
    assert formats.dump("SHELL", {"a": "it's"}) == "a='it'\\''s'\n"
    assert formats.dump("SHELL", {"a": "l1\nl2"}) == "a='l1\nl2'\n"
    assert formats.dump("SHELL", {"a": 1.5, "b": -3, "c": 1e16}) == "a='1.5'\nb='-3'\nc='1e+16'\n"


def test_shell_none_and_empty():
    assert formats.dump("SHELL", None) == ""
    assert formats.dump("SHELL", {}) == ""
    assert formats.dump("SHELL", {"a": None, "b": {}}) == ""
    assert formats.dump("SHELL", {"a": []}) == "a=()\n"


@pytest.mark.parametrize(
    ("cfg", "message"),
    [
        ({"a-b": "x"}, "key 'a-b' is not a valid shell variable name"),
        ({"1a": "x"}, "not a valid shell variable name"),
        ({"": "x"}, "not a valid shell variable name"),
        ({"a": {"b c": "x"}}, "key 'a_b c' is not a valid"),
        ({"é": "x"}, "not a valid shell variable name"),
        ({"a;reboot": "x"}, "not a valid shell variable name"),
        ({"a_b": "1", "a": {"b": "2"}}, "same shell variable name 'a_b'"),
        ({"a": "x\0y"}, "NUL"),
        ({"a": ["x", {"b": 1}]}, "element 1 is an object"),
        ({"a": [["x"]]}, "element 0 is an array"),
        ({"a": [None]}, "element 0 is null"),
        ({"a": float("nan")}, "JSON"),
        ({"a": b"x"}, "cannot write"),
        ({1: "x"}, "not a string"),
        ("x", "must be an object"),
        (["x"], "must be an object"),
        (5, "must be an object"),
    ],
)
def test_shell_dump_refuses(cfg, message):
    with pytest.raises(FormatError, match=message.replace("(", r"\(")):
        formats.dump("SHELL", cfg)


def test_valid_name():
    assert shell.valid_name("_")
    assert shell.valid_name("A_1")
    assert not shell.valid_name("1")
    assert not shell.valid_name("a.b")


# --- SHELL: reading --------------------------------------------------------


def test_shell_load_conversions():
    text = (
        "t='true'\nf=false\nT='True'\ni='42'\nneg='-7'\nfl='1.5'\nbig='1e+16'\n"
        "z='007'\nnz='-0'\ne5='1e5'\ntrail='1.50'\nsp=' 1'\nnan='nan'\nempty=''\n"
        "plus='+1'\nhex='0x10'\ninf='Infinity'\ndot='.5'\n"
    )
    assert formats.load("SHELL", text) == {
        "t": True,
        "f": False,
        "T": "True",
        "i": 42,
        "neg": -7,
        "fl": 1.5,
        "big": 1e16,
        "z": "007",
        "nz": "-0",
        "e5": "1e5",
        "trail": "1.50",
        "sp": " 1",
        "nan": "nan",
        "empty": "",
        "plus": "+1",
        "hex": "0x10",
        "inf": "Infinity",
        "dot": ".5",
    }
    assert isinstance(formats.load("SHELL", "a='1.0'")["a"], float)
    assert isinstance(formats.load("SHELL", "a='1'")["a"], int)


def test_shell_load_huge_digit_string_stays_a_string():
    digits = "9" * 5000
    assert formats.load("SHELL", "a=" + digits) == {"a": digits}


def test_shell_load_loose_forms():
    text = (
        "# a comment\n"
        "\n"
        "export plain=b\n"
        "  indented=1 # trailing comment\n"
        'dq="x\\"y \\$HOME \\\\ \\n"\n'
        "posix='it'\\''s'\n"
        "mixed=a'b c'\"d\"\n"
        "semi='s';\n"
        "one=1; two=2\n"
        "hash=#notacomment\n"
        "dollar='$(x)' lone=5$\n"
        "crlf='x'\r\n"
        "export=7\n"
        "cont=a\\\nb\n"
        "last=z"
    )
    with pytest.raises(FormatError):
        formats.load("SHELL", text)  # 'lone=5$' after a value on the same line
    text = text.replace("dollar='$(x)' lone=5$\n", "dollar='$(x)'\nlone=5$\n")
    assert formats.load("SHELL", text) == {
        "plain": "b",
        "indented": 1,
        "dq": 'x"y $HOME \\ \\n',
        "posix": "it's",
        "mixed": "ab cd",
        "semi": "s",
        "one": 1,
        "two": 2,
        "hash": "#notacomment",
        "dollar": "$(x)",
        "lone": "5$",
        "crlf": "x",
        "export": 7,
        "cont": "ab",
        "last": "z",
    }


def test_shell_load_multiline_and_arrays():
    text = "a='l1\nl2\n'\nb=('x' 'y z'\n  \"w\" 3 # c\n)\nc=()\nd=(1)\n"
    assert formats.load("SHELL", text) == {
        "a": "l1\nl2\n",
        "b": ["x", "y z", "w", 3],
        "c": [],
        "d": [1],
    }


def test_shell_load_nodejs_backslash_quote_file():
    # Every line uses the NodeJS daemon's \' escape; POSIX cannot read it.
    text = "a='it\\'s'\nb='x'\nc='don\\'t \\'q\\''\n"
    assert formats.load("SHELL", text) == {"a": "it's", "b": "x", "c": "don't 'q'"}


def test_shell_load_nodejs_file_with_posix_idiom():
    # POSIX cannot read the first line; the loose reading handles both forms.
    text = "a='it\\'s here'\nb='x'\\''y'\nc=1\n"
    assert formats.load("SHELL", text) == {"a": "it's here", "b": "x'y", "c": 1}


def test_shell_load_reads_a_posix_valid_file_as_a_shell_does(tmp_path):
    # This mix of both escapes happens to be valid POSIX, where it means one
    # multi-line value; the loader agrees with the shell rather than guess.
    text = "a='it\\'s'\nb='x'\\''y'\n"
    assert formats.load("SHELL", text) == {"a": "it\\s\nb=x\\y"}
    path = tmp_path / "mixed.sh"
    path.write_text(text)
    out = source_and_print(shell_command("dash"), str(path), ["a", "b"])
    assert out == b"it\\s\nb=x\\y\0\0"


def test_shell_load_prefers_posix_for_trailing_backslash():
    assert formats.load("SHELL", "a='x\\'\nb='y'\n") == {"a": "x\\", "b": "y"}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a='x\nb=1\n", "line 1: unterminated single quote"),
        ('a=1\nb="x\n', "line 2: unterminated double quote"),
        ("a=1\nb=(1 2\n", "line 2: unterminated array"),
        ("a=1\n\njunk\n", "line 3: expected NAME=value"),
        ("a=1\n=x\n", "line 2: expected NAME=value"),
        ("a=1\nb=x y\n", "line 2: unexpected text after the value of b"),
        ("a=$(reboot)\n", "line 1: shell expansion"),
        ("a=`reboot`\n", "line 1: unexpected '`'"),
        ('a="$HOME"\n', "line 1: shell expansion"),
        ('a="`id`"\n', "line 1: shell expansion"),
        ("a=${x}\n", "line 1: shell expansion"),
        ("a=x|y\n", "line 1: unexpected '|'"),
        ("a=x>y\n", "line 1: unexpected '>'"),
        ("export\n", "line 1: expected NAME=value"),
        ("export a\n", "line 1: expected NAME=value"),
        ("1a=x\n", "line 1: expected NAME=value"),
        ("a ='x'\n", "line 1: expected NAME=value"),
    ],
)
def test_shell_load_malformed(text, message):
    with pytest.raises(FormatError, match=message.replace("$", r"\$").replace("|", r"\|")):
        formats.load("SHELL", text)


# --- SHELL: round trip properties --------------------------------------------

# Keys without "_" cannot collide once flattened with "_".
keys = st.from_regex(r"[A-Za-z][A-Za-z0-9]{0,6}", fullmatch=True)
hostile = st.sampled_from(
    [
        "'",
        "''",
        "\\",
        "\\'",
        "x'; touch PWNED; echo '",
        "$(touch PWNED)",
        "`touch PWNED`",
        "a\nb",
        "\r",
        "\t",
        "#x",
        "$HOME",
        "${x}",
        '"',
        "é",
        "😀",
        " ",
        "",
        "true",
        "007",
        "1e5",
    ]
)
strings = hostile | st.text(st.characters(codec="utf-8", exclude_characters="\0"))
flat_scalars = (
    strings | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
)


def _no_constants(name):
    raise ValueError(name)  # NaN and Infinity are not JSON numbers


def expected_word(text):
    """Independent oracle for SHELL's load conversion of one string."""
    if text in ("true", "false"):
        return text == "true"
    try:
        number = json.loads(text, parse_constant=_no_constants)
    except ValueError:
        return text
    is_number = isinstance(number, (int, float)) and not isinstance(number, bool)
    return number if is_number and json.dumps(number) == text else text


def expected_scalar(value):
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)):
        return value
    return expected_word(value)


def flatten(cfg, prefix=""):
    out = {}
    for key, value in cfg.items():
        if value is None:
            continue
        if isinstance(value, dict):
            out.update(flatten(value, prefix + key + "_"))
        elif isinstance(value, list):
            out[prefix + key] = [expected_scalar(v) for v in value]
        else:
            out[prefix + key] = expected_scalar(value)
    return out


shell_configs = st.recursive(
    st.dictionaries(
        keys, flat_scalars | st.none() | st.lists(flat_scalars, max_size=3), max_size=5
    ),
    lambda children: st.dictionaries(keys, children, max_size=3),
    max_leaves=12,
)


@settings(max_examples=200, deadline=None)
@given(shell_configs)
def test_shell_round_trip(cfg):
    text = formats.dump("SHELL", cfg)
    loaded = formats.load("SHELL", text)
    assert loaded == flatten(cfg)
    assert list(loaded) == sorted(loaded)
    # Conversions are lossless: writing what was read gives the same bytes.
    assert formats.dump("SHELL", loaded) == text


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(keys, strings, max_size=6))
def test_shell_string_round_trip_is_exact_for_non_numeric_text(cfg):
    loaded = formats.load("SHELL", formats.dump("SHELL", cfg))
    assert loaded == {k: expected_word(v) for k, v in cfg.items()}
    for key, value in loaded.items():
        if isinstance(value, str):
            assert value == cfg[key]
        else:
            # converted only when writing the number back is lossless
            assert formats.dump("SHELL", {key: value}) == formats.dump("SHELL", {key: cfg[key]})


# --- SHELL: sourcing in real shells ------------------------------------------

HOSTILE_VALUES = [
    "'",
    "x'; touch PWNED; echo '",
    "$(touch PWNED)",
    "`touch PWNED`",
    "${IFS}$(touch${IFS}PWNED)",
    "trailing backslash \\",
    "\\'",
    "\\",
    "line1\nline2",
    "\n",
    "ends with newline\n",
    "carriage\rreturn\r",
    "tab\there",
    "non-ASCII: é ß 日本",
    "emoji 😀",
    "''",
    "",
    "# starts like a comment",
    '"double" quotes',
    "; touch PWNED",
    "a && touch PWNED || touch PWNED",
    "$HOME $0 $$ $@ $* $? $!",
    "\\n \\t \\\\",
    "-e",
    "*",
    "~",
    "x\n'\ntouch PWNED\n'",
]

SHELLS = {
    "sh": ["/bin/sh"],
    "dash": ["dash"],
    "bash": ["bash"],
    "busybox-ash": ["busybox", "ash"],
}


def shell_command(name):
    argv = SHELLS[name]
    program = argv[0]
    found = (
        program if os.path.isabs(program) and os.access(program, os.X_OK) else shutil.which(program)
    )
    if not found:
        pytest.skip("%s is not installed (%s not found)" % (name, program))
    if name == "busybox-ash":
        probe = subprocess.run([found, "ash", "-c", "true"], capture_output=True)
        if probe.returncode != 0:
            pytest.skip("busybox has no ash applet")
    return [found] + argv[1:]


def source_and_print(shell_argv, path, names, arrays=False):
    """Source ``path`` and print each variable NUL-terminated."""
    if arrays:
        prints = "; ".join(
            "for x in \"${%s[@]}\"; do printf '%%s\\0' \"$x\"; done; printf '\\1'" % n
            for n in names
        )
    else:
        prints = "; ".join("printf '%%s\\0' \"$%s\"" % n for n in names)
    script = '. "$1" || exit 99; %s' % prints
    result = subprocess.run(
        shell_argv + ["-c", script, "sh", path],
        cwd=os.path.dirname(path),
        capture_output=True,
        timeout=20,
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C"},
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == b""
    return result.stdout


@pytest.mark.parametrize("shell_name", sorted(SHELLS))
def test_sourcing_yields_exact_values_and_runs_nothing(shell_name, tmp_path):
    shell_argv = shell_command(shell_name)
    cfg = {"v%02d" % i: value for i, value in enumerate(HOSTILE_VALUES)}
    cfg["nested"] = {"inner": "x'; touch PWNED; echo '", "n": 5, "flag": True}
    path = tmp_path / "config.sh"
    path.write_text(formats.dump("SHELL", cfg), encoding="utf-8")
    expected = {n: v for n, v in cfg.items() if n != "nested"}
    expected.update(nested_flag="true", nested_inner="x'; touch PWNED; echo '", nested_n="5")
    names = sorted(expected)
    out = source_and_print(shell_argv, str(path), names)
    assert out == b"".join(expected[n].encode("utf-8") + b"\0" for n in names)
    assert sorted(os.listdir(tmp_path)) == ["config.sh"], "a command ran while sourcing"


def test_sourcing_arrays_in_bash(tmp_path):
    shell_argv = shell_command("bash")
    cfg = {
        "arr": HOSTILE_VALUES,
        "nums": [1, 2.5, True],
        "empty": [],
        "plain": "x'; touch PWNED; echo '",
    }
    path = tmp_path / "config.sh"
    path.write_text(formats.dump("SHELL", cfg), encoding="utf-8")
    out = source_and_print(shell_argv, str(path), ["arr", "empty", "nums", "plain"], arrays=True)
    groups = out.split(b"\1")[:-1]

    def encoded(values):
        return b"".join(v.encode("utf-8") + b"\0" for v in values)

    assert groups == [
        encoded(HOSTILE_VALUES),
        b"",
        encoded(["1", "2.5", "true"]),
        encoded(["x'; touch PWNED; echo '"]),
    ]
    assert sorted(os.listdir(tmp_path)) == ["config.sh"]


@settings(max_examples=30, deadline=None)
@given(st.dictionaries(keys, strings, min_size=1, max_size=8))
def test_sourcing_random_strings_in_dash_and_bash(cfg):
    import tempfile

    for shell_name in ("dash", "bash"):
        shell_argv = shell_command(shell_name)
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "config.sh")
            with open(path, "w", encoding="utf-8") as f:
                f.write(formats.dump("SHELL", cfg))
            out = source_and_print(shell_argv, path, sorted(cfg))
            assert out == b"".join(cfg[n].encode("utf-8") + b"\0" for n in sorted(cfg))
            assert os.listdir(tmp) == ["config.sh"]
