"""Action directories and the watcher, in-process with a real event loop."""

import os
import time

import pytest

from lib.actiondir import ActionDir, ActionFailed, Consumer
from lib.dirwatch import DirWatcher
from lib.eventloop import EventLoop


def run_until(loop, condition, timeout=5):
    deadline = time.monotonic() + timeout

    def check():
        if condition() or time.monotonic() > deadline:
            loop.stop()
        else:
            loop.call_later(0.01, check)

    loop.call_later(0, check)
    loop.run()
    assert condition(), "condition not reached within %ss" % timeout


def drop(adir, name, data=b"{}"):
    tmp = os.path.join(adir.path, "tmp", name)
    with open(tmp, "wb") as f:
        f.write(data)
    os.rename(tmp, os.path.join(adir.new, name))


@pytest.fixture(params=["inotify", "polling"])
def watcher(request, monkeypatch):
    if request.param == "polling":
        monkeypatch.setenv("CHARIOTD_NO_INOTIFY", "1")
    loop = EventLoop()
    w = DirWatcher(loop, 0.05)
    w.loop = loop
    return w


def test_layout_is_created(tmp_path):
    ActionDir(str(tmp_path / "d"))
    assert sorted(os.listdir(tmp_path / "d")) == ["failed", "new", "tmp"]


def test_files_present_at_start_go_in_sorted_order_then_new_ones(tmp_path, watcher):
    adir = ActionDir(str(tmp_path))
    for name in ("c", "a", "b"):
        drop(adir, name, name.encode())
    seen = []
    Consumer(watcher, adir, lambda name, data: seen.append((name, data)))
    assert seen == [("a", b"a"), ("b", b"b"), ("c", b"c")]
    drop(adir, "d", b"d")
    run_until(watcher.loop, lambda: len(seen) == 4)
    assert seen[-1] == ("d", b"d")
    assert os.listdir(adir.new) == []
    assert watcher.mode == ("polling" if os.environ.get("CHARIOTD_NO_INOTIFY") else "inotify")


def test_failed_action_moves_file_to_failed(tmp_path, watcher):
    adir = ActionDir(str(tmp_path))
    drop(adir, "bad")

    def refuse(name, data):
        raise ActionFailed("not today")

    Consumer(watcher, adir, refuse)
    assert os.listdir(adir.failed) == ["bad"] and os.listdir(adir.new) == []


def test_non_regular_entries_are_never_opened(tmp_path, watcher):
    secret = tmp_path / "secret"
    secret.write_text("TOP SECRET")
    adir = ActionDir(str(tmp_path / "d"))
    os.symlink(secret, os.path.join(adir.new, "link"))
    os.mkfifo(os.path.join(adir.new, "fifo"))  # opening it for reading would block
    os.mkdir(os.path.join(adir.new, "dir"))
    seen = []
    Consumer(watcher, adir, lambda name, data: seen.append(data))
    assert seen == []
    assert sorted(os.listdir(adir.failed)) == ["dir", "fifo", "link"]
    os.symlink(secret, os.path.join(adir.new, "late-link"))
    run_until(watcher.loop, lambda: "late-link" in os.listdir(adir.failed))
    assert seen == []


def test_oversized_file_is_refused(tmp_path, watcher, caplog):
    adir = ActionDir(str(tmp_path))
    drop(adir, "big", b"x" * 1001)
    drop(adir, "small", b"x" * 1000)
    seen = []
    Consumer(watcher, adir, lambda name, data: seen.append(name), limit=1000)
    assert seen == ["small"]
    assert os.listdir(adir.failed) == ["big"] and os.listdir(adir.new) == []
    assert "1001 bytes, over the 1000 byte limit; moved to failed/" in caplog.text


def test_failed_is_pruned_to_keep_count(tmp_path):
    adir = ActionDir(str(tmp_path), keep_failed=3)
    for i in range(6):
        drop(adir, "f%d" % i)
        t = 1000 + i
        os.utime(os.path.join(adir.new, "f%d" % i), (t, t))
        adir.fail("f%d" % i, "test")
    assert sorted(os.listdir(adir.failed)) == ["f3", "f4", "f5"]


def test_failing_move_deletes(tmp_path):
    adir = ActionDir(str(tmp_path))
    drop(adir, "x")
    os.rmdir(adir.failed)
    with open(adir.failed, "w"):
        pass  # failed/ is now a file: the move cannot succeed
    adir.fail("x", "test")
    assert os.listdir(adir.new) == []
