"""The example services of examples/, set up unprivileged exactly as
examples/README.md describes, driven from the cloud end to end."""

import os
import re
import shutil
import stat
import subprocess

import pytest
from process import wait_until
from shadowhelpers import THING, read_file, shadow_state, source_in, wait_synced

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KEY_A = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIA admin@example.com"
KEY_B = "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQ ops@example.com"


def readme_recipe():
    """The shell block of examples/README.md's unprivileged section."""
    text = read_file(os.path.join(ROOT, "examples", "README.md"))
    section = text[text.index("## Unprivileged"):]
    return re.search(r"```sh\n(.*?)```", section, re.S).group(1)


@pytest.fixture
def demo():
    script = readme_recipe() + 'printf %s "$DEMO"\n'
    directory = subprocess.run(["sh", "-c", script], cwd=ROOT, check=True, capture_output=True,
                               text=True, timeout=10).stdout
    yield directory
    shutil.rmtree(directory)


def test_console_and_ssh_examples(demo, emulator, certstore, daemon_factory):
    d = daemon_factory("--services=%s:%s" % (THING, os.path.join(demo, "services")),
                       certstore=certstore)
    wait_synced(d)
    assert "services console, ssh" in d.log()
    emulator.set_desired(THING, {
        "console": {"enabled": True, "tty": "ttyS0", "baud": 115200},
        "ssh": {"authorized_keys": [KEY_A, "ssh-rsa AAAA\ncommand=\"sh\" ssh-rsa BBBB", KEY_B]},
    })
    d.wait_log("reported console, ssh; cleared desired console, ssh")
    console_rc = os.path.join(demo, "var", "console.rc")
    assert source_in(["busybox", "ash"], console_rc, ["enabled", "tty", "baud"]) == \
        [b"true", b"ttyS0", b"115200"]
    d.wait_log("console: notifycmd done")
    keys = os.path.join(demo, "ssh", "authorized_keys")
    wait_until(lambda: os.path.exists(keys), what="authorized_keys written")
    assert read_file(keys) == KEY_A + "\n" + KEY_B + "\n"
    assert stat.S_IMODE(os.stat(keys).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(os.path.dirname(keys)).st_mode) == 0o700
    d.wait_log("ssh: notifycmd done")

    # Revoking every key empties the file.
    emulator.set_desired(THING, {"ssh": {"authorized_keys": []}})
    wait_until(lambda: read_file(keys) == "", what="keys revoked")
    assert shadow_state(emulator)["reported"]["ssh"] == {"authorized_keys": []}
