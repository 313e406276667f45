"""Tests for lib.formats: the registry, JSON, PLAINTEXT and SHELL.

The SHELL tests source the written file in every shell named in
docs/interface.md#outfile-formats and compare the variables byte for byte;
that is the safety guarantee.
"""

import json
import os
import shutil
import subprocess

import pytest
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from lib import formats
from lib.formats import FormatError, shell, shellnames

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
        "a_x='true'\na_y='1'\nb='x'\n"
        "[ -z \"${BASH_VERSION-}\" ] || eval 'c=('\\''1'\\'' '\\''two'\\'' '\\''false'\\'')'\n"
        "e=''\n"
    )


def test_shell_quoting():
    assert formats.dump("SHELL", {"a": "it's"}) == "a='it'\\''s'\n"
    assert formats.dump("SHELL", {"a": "l1\nl2"}) == "a='l1\nl2'\n"
    assert formats.dump("SHELL", {"a": 1.5, "b": -3, "c": 1e16}) == "a='1.5'\nb='-3'\nc='1e+16'\n"


def test_shell_none_and_empty():
    assert formats.dump("SHELL", None) == ""
    assert formats.dump("SHELL", {}) == ""
    assert formats.dump("SHELL", {"a": None, "b": {}}) == ""
    assert formats.dump("SHELL", {"a": []}) == "[ -z \"${BASH_VERSION-}\" ] || eval 'a=()'\n"


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


# --- SHELL: names the shell, the loader or child programs act on -------------

# An independent list (not shellnames'): each must be refused as a key.
ACTED_ON = [
    "PATH", "IFS", "ENV", "BASH_ENV", "CDPATH", "PS1", "PS2", "PS3", "PS4", "PS0",
    "SHELLOPTS", "BASHOPTS", "HOME", "SHELL", "TMPDIR", "LD_PRELOAD", "LD_LIBRARY_PATH",
    "LD_AUDIT", "LD_anything", "BASH_XTRACEFD", "BASH_COMPAT", "BASH_LOADABLES_PATH",
    "BASH", "OPTIND", "OPTARG", "PPID", "PWD", "OLDPWD", "HISTFILE", "MAIL", "MAILPATH",
    "MAILCHECK", "LANG", "LC_ALL", "LC_CTYPE", "LANGUAGE", "TZ", "TZDIR", "POSIXLY_CORRECT",
    "PYTHONPATH", "PYTHONSTARTUP", "PYTHONHOME", "PERL5LIB", "PERL5OPT", "PERLLIB",
    "RUBYOPT", "NODE_OPTIONS", "LUA_INIT", "JAVA_TOOL_OPTIONS", "GCONV_PATH",
    "GLIBC_TUNABLES", "MALLOC_CHECK_", "HOSTALIASES", "RES_OPTIONS", "LOCALDOMAIN",
    "NLSPATH", "LOCPATH", "GLOBIGNORE", "EXECIGNORE", "FUNCNEST", "TIMEFORMAT", "TMOUT",
    "UID", "EUID", "SHLVL", "RANDOM", "SECONDS", "LINENO", "FUNCNAME", "HISTSIZE",
    "PROMPT_COMMAND", "INPUTRC", "FPATH", "ZDOTDIR", "BB_ASH_VERSION", "TERM", "TERMINFO",
    "EDITOR", "PAGER", "LESSOPEN", "GIT_SSH_COMMAND", "XDG_CONFIG_HOME", "SSL_CERT_FILE",
    "OPENSSL_CONF", "http_proxy", "https_proxy", "HTTPS_PROXY", "no_proxy", "histchars",
    "auto_resume", "_", "COMP_WORDS", "READLINE_LINE",
]


@pytest.mark.parametrize("name", ACTED_ON)
def test_shell_refuses_a_name_the_shell_or_loader_acts_on(name):
    assert shellnames.acted_on(name)
    with pytest.raises(FormatError, match="key '%s' is a name the shell, the dynamic" % name):
        formats.dump("SHELL", {name: "x", "fine": "y"})
    with pytest.raises(FormatError, match="not written"):
        formats.dump("SHELL", {name: ["x"]})  # as an array too


def test_shell_refuses_such_a_name_made_by_joining_nested_keys():
    # The issue's document: every such name is named, sorted.
    cfg = {"PATH": "/tmp/evil", "LD": {"PRELOAD": "/tmp/x.so"}, "BASH": {"ENV": "/config/motd"},
           "ok": "1"}
    with pytest.raises(FormatError) as e:
        formats.dump("SHELL", cfg)
    assert str(e.value) == ("keys 'BASH_ENV', 'LD_PRELOAD', 'PATH' are names the shell, the "
                            "dynamic loader or the programs they start act on; not written")
    with pytest.raises(FormatError, match="'LC_ALL'"):
        formats.dump("SHELL", {"LC": {"ALL": "C"}})
    with pytest.raises(FormatError, match="'BASH_XTRACEFD'"):
        formats.dump("SHELL", {"BASH": {"XTRACEFD": "2"}})
    # A deleted (null) or empty name writes nothing, so it is no danger.
    assert formats.dump("SHELL", {"PATH": None, "LD": {}, "a": "1"}) == "a='1'\n"


@pytest.mark.parametrize("name", ["path", "Path", "PATHS", "MYPATH", "LD", "LDX", "ld_preload",
                                  "BASHFUL", "ifs", "home", "PS5", "LCD", "Lang", "a_PATH"])
def test_shell_other_names_are_ordinary(name):
    assert not shellnames.acted_on(name)
    assert formats.load("SHELL", formats.dump("SHELL", {name: "x"})) == {name: "x"}


def test_shell_load_still_reads_such_names():
    # Reading is not writing: a NodeJS daemon's file with PATH in it loads.
    assert formats.load("SHELL", "PATH=/bin\n") == {"PATH": "/bin"}


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
# Names a service may use (the refused ones have tests of their own), also
# as the first part of a joined name (LD is fine, LD_x is not).
keys = st.from_regex(r"[A-Za-z][A-Za-z0-9]{0,6}", fullmatch=True).filter(
    lambda k: not shellnames.acted_on(k) and not shellnames.acted_on(k + "_"))
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
    assume(not any(shellnames.acted_on(n) for n in flatten(cfg)))  # NIS + PATH, say
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


# --- SHELL: arrays in POSIX shells --------------------------------------------

ARRAY_SHELLS = dict(SHELLS, **{"bash-posix": ["bash", "--posix"]})


def array_shell(name):
    argv = shell_command("bash" if name == "bash-posix" else name)
    return argv + ARRAY_SHELLS[name][1:] if name == "bash-posix" else argv


@pytest.mark.parametrize("shell_name", sorted(ARRAY_SHELLS))
def test_arrays_leave_every_scalar_to_posix_shells(shell_name, tmp_path):
    # The NodeJS form `list=('x' ...)` is a syntax error in sh, dash and ash,
    # which stops the sourcing shell there: the scalars after it were lost.
    shell_argv = array_shell(shell_name)
    cfg = {"a": "first", "list": ["x y", "it's", "$(touch PWNED)", "l1\nl2"], "m": "middle",
           "empty": [], "nested": {"arr": [1, True, "'"], "s": "x'; touch PWNED; echo '"},
           "z": "last"}
    path = tmp_path / "config.sh"
    path.write_text(formats.dump("SHELL", cfg), encoding="utf-8")
    bash = shell_name.startswith("bash")
    arrays = "; ".join(
        'for x in "${%s[@]}"; do printf "%%s\\0" "$x"; done; printf "\\1"' % n
        for n in ("list", "empty", "nested_arr")) if bash else \
        'printf "%s\\1" "${list+set}${empty+set}${nested_arr+set}"'
    script = ('set -eu; . "$1"; printf "%%s\\0" "$a" "$m" "$nested_s" "$z"; printf "\\1"; %s'
              % arrays)
    result = subprocess.run(shell_argv + ["-c", script, "sh", str(path)], cwd=str(tmp_path),
                            capture_output=True, timeout=20,
                            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C"})
    assert (result.returncode, result.stderr) == (0, b"")
    groups = result.stdout.split(b"\1")[:-1]
    assert groups[0] == b"first\0middle\0x'; touch PWNED; echo '\0last\0"
    if bash:
        assert groups[1:] == [b"x y\0it's\0$(touch PWNED)\0l1\nl2\0", b"", b"1\0true\0'\0"]
    else:
        assert groups[1:] == [b""]  # the array names stay unset
    assert sorted(os.listdir(tmp_path)) == ["config.sh"]


@pytest.mark.parametrize("shell_name", sorted(SHELLS))
def test_a_file_ending_in_an_array_sources_with_status_0(shell_name, tmp_path):
    path = tmp_path / "config.sh"
    path.write_text(formats.dump("SHELL", {"a": "1", "zz": ["x"]}), encoding="utf-8")
    result = subprocess.run(shell_command(shell_name) + ["-c", '. "$1" && echo "ok $a"', "sh",
                                                         str(path)],
                            capture_output=True, timeout=20)
    assert (result.returncode, result.stdout, result.stderr) == (0, b"ok 1\n", b"")


def test_shell_load_reads_guarded_and_bare_arrays():
    guarded = formats.dump("SHELL", {"a": ["it's", "x\ny", 5, False], "b": [], "c": "3"})
    assert formats.load("SHELL", guarded) == {"a": ["it's", "x\ny", 5, False], "b": [], "c": 3}
    # The NodeJS daemon's bare form still reads, and comes out guarded.
    bare = "a=('it'\\''s' 'x\ny' '5' 'false')\nb=()\nc='3'\n"
    assert formats.load("SHELL", bare) == formats.load("SHELL", guarded)
    assert formats.dump("SHELL", formats.load("SHELL", bare)) == guarded


@pytest.mark.parametrize(("text", "message"), [
    ("[ -z \"${BASH_VERSION-}\" ] || eval 'a=1'\n", "line 1: eval must hold exactly one array"),
    ("x=1\n[ -z \"${BASH_VERSION-}\" ] || eval 'a=(1) b=(2)'\n",
     "line 2: bad array assignment after eval: line 1: unexpected text after"),
    ("[ -z \"${BASH_VERSION-}\" ] || eval 'a=(1'\n", "bad array assignment after eval: "
     "line 1: unterminated array"),
    ("[ -z \"${BASH_VERSION-}\" ] || eval 'a=(1)' x\n", "unexpected text after the value of a"),
    ("[ -z \"${BASH_VERSION-}\" ] || eval \"a=($x)\"\n", "shell expansion"),
])
def test_shell_load_malformed_guarded_arrays(text, message):
    with pytest.raises(FormatError, match=message.replace("(", r"\(")):
        formats.load("SHELL", text)


# --- SHELL: nothing but the service's own names changes ---------------------------

# Keys chosen to hit what a shell or the loader acts on, alone or joined
# (LD + PRELOAD), beside ordinary and invalid names.
HOSTILE_NAMES = ["PATH", "IFS", "ENV", "BASH_ENV", "CDPATH", "PS1", "PS4", "SHELLOPTS",
                 "BASHOPTS", "HOME", "SHELL", "TMPDIR", "OPTIND", "OPTARG", "PPID", "PWD",
                 "OLDPWD", "HISTFILE", "MAIL", "MAILPATH", "LANG", "LC_ALL", "TZ", "UID",
                 "POSIXLY_CORRECT", "PYTHONPATH", "PERL5LIB", "LD_PRELOAD", "LD_LIBRARY_PATH",
                 "GCONV_PATH", "TMOUT", "RANDOM", "SECONDS", "LINENO", "_", "histchars",
                 "http_proxy", "BASH_XTRACEFD", "GLOBIGNORE", "FUNCNEST", "BB_ASH_VERSION",
                 "BASH_VERSION", "SHLVL", "EUID", "TERM"]
name_parts = sorted({part for name in HOSTILE_NAMES for part in name.split("_") if part})
hostile_keys = st.one_of(keys, keys, keys, st.sampled_from(HOSTILE_NAMES),
                         st.sampled_from(name_parts),
                         st.sampled_from(["a-b", "1x", "é", "", "a b", "x;y", "$x", "a=b"]))
hostile_scalars = strings | st.integers() | st.booleans()
hostile_configs = st.recursive(
    st.dictionaries(hostile_keys, hostile_scalars | st.none() | st.lists(hostile_scalars,
                                                                          max_size=3),
                    min_size=1, max_size=5),
    lambda children: st.dictionaries(hostile_keys, children, min_size=1, max_size=3),
    max_leaves=10)

# The trailing `:` keeps bash from exec'ing the last env, which changes SHLVL.
# Between the two listings an empty entry, which env -0 never prints (a value
# may hold any byte but NUL).
# env by its path, in no variable: the config may assign any name of its own
# (hypothesis found {"e": "'"} overwriting the variable that held it).
ENV_SCRIPT = ('{env} -0; printf "\\000"; set -a; . "$1" || exit 99; set +a; {env} -0; :'
              .format(env=shutil.which("env")))
BEFORE = {"PATH": "/usr/bin:/bin", "HOME": "/root", "LC_ALL": "C", "TZ": "UTC",
          "LANG": "C", "keep": "me"}


def environment(block):
    return dict(item.split(b"=", 1) for item in block.split(b"\0") if item)


@settings(max_examples=150, deadline=None)
@given(hostile_configs)
@example({"A": "\x01", "LD": {"PRELOAD": "/tmp/x.so"}})
@example({"e": "'"})
@example({"A": "\x01", "list": ["\x01", "it's"], "n": {"m": 5}})
def test_no_shadow_document_changes_the_environment_beyond_its_own_names(cfg):
    import tempfile

    try:
        text = formats.dump("SHELL", cfg)
    except FormatError:
        return  # refused: the daemon writes nothing
    own = set(flatten(cfg))
    assert not own & set(HOSTILE_NAMES), "wrote %s" % sorted(own & set(HOSTILE_NAMES))
    for shell_name in sorted(SHELLS):
        shell_argv = shell_command(shell_name)
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "config.sh")
            with open(path, "w", encoding="utf-8") as f:
                f.write(text)
            result = subprocess.run(shell_argv + ["-c", ENV_SCRIPT, "sh", path], cwd=tmp,
                                    capture_output=True, timeout=20, env=BEFORE)
            assert (result.returncode, result.stderr) == (0, b""), shell_name
            before, after = result.stdout.split(b"\0\0", 1)
            before, after = environment(before), environment(after)
            changed = {k.decode() for k in set(before) | set(after)
                       if before.get(k) != after.get(k)}
            assert changed <= own, (shell_name, sorted(changed - own))
            for name in own:
                value = flatten(cfg)[name]
                if not isinstance(value, list):
                    assert after[name.encode()] == shell_text(cfg, name), (shell_name, name)
            assert os.listdir(tmp) == ["config.sh"], "a command ran while sourcing"


def shell_text(cfg, name):
    """The bytes a scalar's variable must hold: its text as dump writes it."""
    value = cfg
    for part in _path_of(cfg, name):
        value = value[part]
    if isinstance(value, bool):
        return b"true" if value else b"false"
    return (value if isinstance(value, str) else json.dumps(value)).encode()


def _path_of(cfg, name, prefix=""):
    for key, value in cfg.items():
        full = prefix + key
        if isinstance(value, dict):
            found = _path_of(value, name, full + "_")
            if found:
                return [key] + found
        elif full == name and value is not None:
            return [key]
    return None
