"""lib/outfile: outfiles are replaced atomically, or not at all."""

import os
import stat

import pytest

from lib import outfile


def test_replace_writes_and_leaves_no_temporary_file(tmp_path):
    path = str(tmp_path / "x.rc")
    outfile.replace(path, b"a='1'\n")
    assert (tmp_path / "x.rc").read_bytes() == b"a='1'\n"
    assert os.listdir(str(tmp_path)) == ["x.rc"]
    assert outfile.read(path) == b"a='1'\n"
    assert outfile.read(str(tmp_path / "missing")) is None


def test_replace_keeps_the_old_files_mode(tmp_path):
    path = str(tmp_path / "secret.json")
    (tmp_path / "secret.json").write_text("{}")
    os.chmod(path, 0o640)
    outfile.replace(path, b'{"k": 1}\n')
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o640


def test_new_file_mode_follows_the_umask(tmp_path):
    old = os.umask(0o027)
    try:
        outfile.replace(str(tmp_path / "new"), b"x")
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(str(tmp_path / "new")).st_mode) == 0o640


def test_a_symlinked_outfile_is_replaced_at_its_target(tmp_path):
    os.mkdir(str(tmp_path / "data"))
    target = tmp_path / "data" / "console.rc"
    target.write_text("old")
    link = str(tmp_path / "console.rc")
    os.symlink(target, link)
    outfile.replace(link, b"new")
    assert os.path.islink(link)
    assert target.read_text() == "new"


def test_failure_leaves_the_old_file_intact(tmp_path):
    path = str(tmp_path / "x.json")
    (tmp_path / "x.json").write_text("old")
    # Something that is not ours sits where the temporary file would go.
    blocker = str(tmp_path / (".x.json.chariotd-%d" % os.getpid()))
    os.mkdir(blocker)
    (tmp_path / blocker / "keep").touch()
    with pytest.raises(OSError):
        outfile.replace(path, b"new")
    assert (tmp_path / "x.json").read_text() == "old"


def test_missing_directory_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError):
        outfile.replace(str(tmp_path / "no" / "x"), b"x")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories")
def test_read_only_directory_leaves_the_old_file_intact(tmp_path):
    path = str(tmp_path / "x.json")
    (tmp_path / "x.json").write_text("old")
    os.chmod(str(tmp_path), 0o555)
    try:
        with pytest.raises(PermissionError):
            outfile.replace(path, b"new")
    finally:
        os.chmod(str(tmp_path), 0o755)
    assert (tmp_path / "x.json").read_text() == "old"
