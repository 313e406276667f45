"""Tests for lib.services: loading service definitions from a directory."""

import json
import os

import pytest

from lib.services import Service, load_services

MINIMAL = {"key": "net", "outfile": "/etc/net.conf", "outformat": "SHELL", "notifycmd": "true"}


def write(directory, name, text):
    path = directory / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def write_json(directory, name, values):
    return write(directory, name, json.dumps(values))


def only_service(directory):
    services, errors = load_services(str(directory))
    assert errors == []
    assert len(services) == 1
    return next(iter(services.values()))


# --- the three forms ---------------------------------------------------------


def test_js_definition(tmp_path):
    path = write(
        tmp_path,
        "network.js",
        """'use strict';
// network settings
module.exports = {
  key: 'network',
  outfile: '/etc/network.conf',
  outformat: 'SHELL',
  informat: 'SHELL',
  notifycmd: '/etc/init.d/network reload',
  outkeys: ['ip', 'mask',],
  notifykeys: ['ip'],
  initialnotify: true,
  timeout: 2.5,
};
""",
    )
    service = only_service(tmp_path)
    assert isinstance(service, Service)
    assert service.key == "network"
    assert service.outfile == "/etc/network.conf"
    assert service.outformat == "SHELL"
    assert service.informat == "SHELL"
    assert service.notifycmd == "/etc/init.d/network reload"
    assert service.outkeys == ["ip", "mask"]
    assert service.notifykeys == ["ip"]
    assert service.initialnotify is True
    assert service.ephemeraldata is False
    assert service.timeout == 2.5
    assert service.validate is None
    assert service.path == path


def test_json_definition_and_defaults(tmp_path):
    path = write_json(tmp_path, "net.json", MINIMAL)
    service = only_service(tmp_path)
    assert (service.key, service.outfile, service.outformat, service.notifycmd) == (
        "net",
        "/etc/net.conf",
        "SHELL",
        "true",
    )
    assert service.informat == "JSON"
    assert service.outkeys is None
    assert service.notifykeys is None
    assert service.initialnotify is False
    assert service.ephemeraldata is False
    assert service.timeout == 10
    assert service.validate is None
    assert service.path == path
    assert "net" in repr(service)


def test_py_definition_with_validate(tmp_path):
    write(
        tmp_path,
        "clock.py",
        """
import os.path

key = "clock"
outfile = os.path.join("/etc", "clock.json")
outformat = "JSON"
notifycmd = "sv restart ntpd"
outkeys = ("server", "zone")   # a tuple is fine in Python
timeout = 3
_helper_constant = 5


def _check_server(name):
    return isinstance(name, str) and name != ""


def validate(cfg):
    if not _check_server(cfg.get("server")):
        raise ValueError("server must be a host name")
    cfg.setdefault("zone", "UTC")
    return cfg
""",
    )
    service = only_service(tmp_path)
    assert service.key == "clock"
    assert service.outfile == "/etc/clock.json"
    assert service.outkeys == ["server", "zone"]
    assert service.timeout == 3
    assert service.validate({"server": "pool.ntp.org"}) == {"server": "pool.ntp.org", "zone": "UTC"}
    with pytest.raises(ValueError, match="host name"):
        service.validate({})
    assert not hasattr(service, "_helper_constant")
    # Loading a .py definition leaves no __pycache__ in the services directory.
    assert sorted(os.listdir(tmp_path)) == ["clock.py"]


def test_ephemeral_service_needs_no_outfile(tmp_path):
    write_json(
        tmp_path, "cmd.json", {"key": "reboot", "notifycmd": "reboot", "ephemeraldata": True}
    )
    service = only_service(tmp_path)
    assert service.ephemeraldata is True
    assert service.outfile is None and service.outformat is None


def test_null_counts_as_absent(tmp_path):
    write_json(tmp_path, "a.json", dict(MINIMAL, outkeys=None, informat=None, timeout=None))
    service = only_service(tmp_path)
    assert service.outkeys is None and service.informat == "JSON" and service.timeout == 10


@pytest.mark.parametrize("fmt", ["JSON", "SHELL", "PLAINTEXT"])
def test_every_known_format_is_accepted(tmp_path, fmt):
    write_json(tmp_path, "a.json", dict(MINIMAL, outformat=fmt, informat=fmt))
    assert only_service(tmp_path).outformat == fmt


# --- skipping ---------------------------------------------------------------


def test_hidden_and_other_files_are_ignored(tmp_path):
    write_json(tmp_path, "good.json", MINIMAL)
    write(tmp_path, ".hidden.json", "not json")
    write(tmp_path, ".swp.py", "syntax error(")
    write(tmp_path, "README.md", "# docs")
    write(tmp_path, "net.json~", "{")
    write(tmp_path, "net.js.bak", "{")
    write(tmp_path, "noext", "{")
    (tmp_path / "subdir").mkdir()
    services, errors = load_services(str(tmp_path))
    assert errors == []
    assert list(services) == ["net"]


def test_missing_directory(tmp_path):
    missing = str(tmp_path / "nope")
    services, errors = load_services(missing)
    assert services == {}
    assert len(errors) == 1
    assert missing in errors[0] and "cannot read service directory" in errors[0]


def test_empty_directory(tmp_path):
    assert load_services(str(tmp_path)) == ({}, [])


# --- errors: each is one line naming the file; the rest still load -------------


def assert_one_error(directory, filename, *fragments):
    write_json(directory, "zz-good.json", dict(MINIMAL, key="good"))
    services, errors = load_services(str(directory))
    assert list(services) == ["good"], errors
    assert len(errors) == 1, errors
    line = errors[0]
    assert line.startswith(str(directory / filename) + ": "), line
    assert "\n" not in line
    for fragment in fragments:
        assert fragment in line, line
    return line


@pytest.mark.parametrize("missing", ["key", "outfile", "outformat", "notifycmd"])
def test_missing_required_key(tmp_path, missing):
    values = dict(MINIMAL)
    del values[missing]
    write_json(tmp_path, "a.json", values)
    assert_one_error(tmp_path, "a.json", "missing required key '%s'" % missing)


def test_several_problems_are_one_line(tmp_path):
    write_json(tmp_path, "a.json", {"outformat": "XML", "timeout": -1})
    line = assert_one_error(
        tmp_path,
        "a.json",
        "missing required key 'key'",
        "missing required key 'notifycmd'",
        "unknown outformat 'XML'",
        "'timeout' must be a positive number",
    )
    assert line.count(";") >= 3


@pytest.mark.parametrize(
    ("key", "value"), [("outformat", "XML"), ("outformat", "json"), ("informat", "YAML")]
)
def test_unknown_format(tmp_path, key, value):
    write_json(tmp_path, "a.json", dict(MINIMAL, **{key: value}))
    assert_one_error(tmp_path, "a.json", "unknown %s %r" % (key, value), "JSON, PLAINTEXT, SHELL")


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("key", 5, "'key' must be a non-empty string"),
        ("key", "", "'key' must be a non-empty string"),
        ("key", ["net"], "'key' must be a non-empty string"),
        ("outfile", True, "'outfile' must be a non-empty string"),
        ("outformat", 1, "'outformat' must be a format name"),
        ("informat", {}, "'informat' must be a format name"),
        ("notifycmd", ["sv", "restart"], "'notifycmd' must be a string"),
        ("outkeys", "ip", "'outkeys' must be a list of strings"),
        ("outkeys", ["ip", 5], "'outkeys' must be a list of strings"),
        ("notifykeys", {"ip": 1}, "'notifykeys' must be a list of strings"),
        ("initialnotify", "true", "'initialnotify' must be true or false"),
        ("initialnotify", 1, "'initialnotify' must be true or false"),
        ("ephemeraldata", "yes", "'ephemeraldata' must be true or false"),
        ("timeout", 0, "'timeout' must be a positive number"),
        ("timeout", -5, "'timeout' must be a positive number"),
        ("timeout", "10", "'timeout' must be a positive number"),
        ("timeout", True, "'timeout' must be a positive number"),
        ("validate", "check.sh", "'validate' is only supported in NAME.py"),
    ],
)
def test_wrong_type(tmp_path, key, value, expected):
    write_json(tmp_path, "a.json", dict(MINIMAL, **{key: value}))
    assert_one_error(tmp_path, "a.json", expected)


def test_py_wrong_types(tmp_path):
    write(
        tmp_path,
        "a.py",
        'key = "k"\noutfile = "/x"\noutformat = "JSON"\n'
        'notifycmd = "true"\nvalidate = 5\ntimeout = float("inf")\n',
    )
    assert_one_error(
        tmp_path, "a.py", "'validate' must be a function", "'timeout' must be a positive number"
    )


def test_duplicate_key_first_file_wins(tmp_path):
    first = write_json(tmp_path, "a.json", dict(MINIMAL, outfile="/first"))
    second = write(
        tmp_path,
        "b.js",
        "module.exports = {key: 'net', outfile: '/second', outformat: 'JSON', notifycmd: 'true'};",
    )
    services, errors = load_services(str(tmp_path))
    assert services["net"].outfile == "/first"
    assert services["net"].path == first
    assert errors == ["%s: service key 'net' is already defined by %s; skipped" % (second, first)]


def test_broken_first_definition_does_not_claim_the_key(tmp_path):
    write_json(tmp_path, "a.json", dict(MINIMAL, outformat="XML"))
    write_json(tmp_path, "b.json", MINIMAL)
    services, errors = load_services(str(tmp_path))
    assert services["net"].path.endswith("b.json")
    assert len(errors) == 1 and "a.json" in errors[0]


def test_js_with_code_says_port_to_py(tmp_path):
    write(
        tmp_path,
        "network.js",
        """module.exports = {
  key: 'network',
  outfile: '/etc/network.conf',
  outformat: 'SHELL',
  notifycmd: 'true',
  validate: function (cfg) { return cfg; },
};""",
    )
    assert_one_error(tmp_path, "network.js", "contains code; port it to network.py", "line 6")


def test_js_syntax_error(tmp_path):
    write(tmp_path, "a.js", "module.exports = {\n  key: 'net,\n};")
    line = assert_one_error(tmp_path, "a.js", "syntax error", "line 2", "unterminated string")
    assert "port it" not in line


def test_js_that_is_not_an_object(tmp_path):
    write(tmp_path, "a.js", "module.exports = ['net'];")
    assert_one_error(tmp_path, "a.js", "must be an object")


def test_json_syntax_error(tmp_path):
    write(tmp_path, "a.json", '{"key": "net",}')
    assert_one_error(tmp_path, "a.json", "syntax error")


def test_json_that_is_not_an_object(tmp_path):
    write(tmp_path, "a.json", '["net"]')
    assert_one_error(tmp_path, "a.json", "must hold a JSON object")


def test_json_too_deep(tmp_path):
    write(tmp_path, "a.json", "[" * 100000 + "]" * 100000)
    assert_one_error(tmp_path, "a.json", "syntax error")


def test_py_syntax_error(tmp_path):
    write(tmp_path, "a.py", 'key = "net"\n\ndef broken(:\n    pass\n')
    assert_one_error(tmp_path, "a.py", "syntax error", "line 3")


@pytest.mark.parametrize(
    ("source", "fragment"),
    [
        ("raise RuntimeError('boom')\n", "failed to load: RuntimeError: boom"),
        ("import no_such_module_for_chariotd\n", "failed to load: ModuleNotFoundError"),
        ("import sys\nsys.exit(3)\n", "failed to load: SystemExit"),
    ],
)
def test_py_that_fails_while_loading(tmp_path, source, fragment):
    write(tmp_path, "a.py", source)
    assert_one_error(tmp_path, "a.py", fragment)


def test_non_utf8_file(tmp_path):
    (tmp_path / "a.json").write_bytes(b'{"key": "\xff"}')
    assert_one_error(tmp_path, "a.json", "cannot read", "UTF-8")


def test_broken_symlink_is_unreadable(tmp_path):
    os.symlink(str(tmp_path / "nowhere.json"), str(tmp_path / "a.json"))
    assert_one_error(tmp_path, "a.json", "cannot read", "No such file")


def test_directory_with_a_definition_name(tmp_path):
    (tmp_path / "a.json").mkdir()
    assert_one_error(tmp_path, "a.json", "not a regular file")


@pytest.mark.skipif(os.geteuid() == 0, reason="root can read a file whatever its mode")
def test_permission_denied(tmp_path):
    path = write_json(tmp_path, "a.json", MINIMAL)
    os.chmod(path, 0)
    assert_one_error(tmp_path, "a.json", "cannot read", "Permission denied")


def test_unknown_keys_are_reported_but_the_service_loads(tmp_path):
    path = write_json(tmp_path, "a.json", dict(MINIMAL, intialnotify=True))
    services, errors = load_services(str(tmp_path))
    assert list(services) == ["net"]
    assert errors == ["%s: ignoring unknown key 'intialnotify'" % path]


def test_service_has_slots():
    service = Service(key="k", notifycmd="true")
    with pytest.raises(AttributeError):
        service.colour = "red"
