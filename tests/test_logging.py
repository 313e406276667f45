"""Log lines cannot be forged: a name holding a newline, or bytes that are not
UTF-8, is written escaped, and every record is one line."""

import os

from messagehelpers import listing, spool
from process import wait_until


def test_a_name_with_a_newline_cannot_forge_a_log_line(tmp_path, certstore, daemon_factory):
    path = spool(tmp_path)
    name = "bad\nERROR: forged line"
    with open(os.path.join(path, "tmp", "x"), "w") as f:
        f.write("{not json")
    os.rename(os.path.join(path, "tmp", "x"), os.path.join(path, "new", name))
    d = daemon_factory("--messages=" + path, certstore=certstore)
    wait_until(lambda: name in listing(path, "failed"), 15, "the bad file in failed/")
    d.wait_log(r"bad\\nERROR: forged line")
    assert not [line for line in d.log().splitlines() if line.startswith("ERROR: forged")]


def test_a_name_that_is_not_utf8_is_logged_as_its_bytes(tmp_path, certstore, daemon_factory):
    path = spool(tmp_path)
    name = b"caf\xe9\x1b[31m"
    with open(os.path.join(path.encode(), b"new", name), "w") as f:
        f.write("[]")
    d = daemon_factory("--messages=" + path, certstore=certstore)
    wait_until(lambda: os.listdir(os.path.join(path.encode(), b"failed")), 15, "failed/")
    d.wait_log(r"caf\\xe9\\x1b\[31m")
    assert "Logging error" not in d.log()
    assert "\x1b" not in d.log()
