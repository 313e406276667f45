"""Helpers for the message spool tests (no tests here): a --messages
directory, message files dropped the way writers must, and what arrived."""

import json
import os

from process import wait_until


def spool(tmp_path, name="msgs"):
    """A --messages directory laid out the way a writer finds it."""
    path = str(tmp_path / name)
    for sub in ("tmp", "new", "failed"):
        os.makedirs(os.path.join(path, sub), exist_ok=True)
    return path


def drop(directory, name, doc=None, raw=None, mtime=None):
    """Write a message as writers must: in tmp/, then rename into new/."""
    tmp = os.path.join(directory, "tmp", name)
    with open(tmp, "wb") as f:
        f.write(raw if raw is not None else json.dumps(doc).encode())
    if mtime is not None:
        os.utime(tmp, (mtime, mtime))
    os.rename(tmp, os.path.join(directory, "new", name))


def listing(directory, sub):
    return sorted(os.listdir(os.path.join(directory, sub)))


def wait_empty(directory, timeout=10):
    wait_until(lambda: not listing(directory, "new"), timeout, "new/ of %s to empty" % directory)


def wait_failed(directory, name, timeout=10):
    wait_until(lambda: name in listing(directory, "failed"), timeout, "%s in failed/" % name)


def topics(observer, prefix):
    return [m.topic for m in observer.messages if m.topic.startswith(prefix)]


def ids(observer, prefix):
    return {m.json()["id"] for m in observer.messages if m.topic.startswith(prefix)}


def backlog(directory, prefix, count, qos=1):
    for i in range(count):
        drop(directory, "m%05d" % i, {"topic": prefix + "m", "payload": {"id": i}, "qos": qos})
