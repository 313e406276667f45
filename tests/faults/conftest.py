"""Fixtures of the fault suite: small tmpfs mounts that the test can fill or
make read-only, and real links (faultnet.Net: the broker and the daemon in
network namespaces of their own). Every mount's source, namespace and link
is named with the prefix `cdf-` and removed after the test, whatever
happened."""

import os
import subprocess
import uuid

import pytest

PREFIX = "cdf-"


def _run(*argv):
    subprocess.run(argv, check=True, capture_output=True, timeout=30)


class Tmpfs:
    """A tmpfs mounted at PATH (size in KiB, inode count), owned by the test."""

    def __init__(self, path, size_kb=256, inodes=None):
        self.path = str(path)
        self.name = PREFIX + uuid.uuid4().hex[:8]
        os.makedirs(self.path, exist_ok=True)
        opts = "size=%dk,mode=0755" % size_kb + (",nr_inodes=%d" % inodes if inodes else "")
        _run("mount", "-t", "tmpfs", "-o", opts, self.name, self.path)
        self.mounted = True

    def fill(self):
        """Take every free block and inode; returns the filler paths."""
        fillers = []
        block = b"\0" * 4096
        try:
            path = os.path.join(self.path, ".filler")
            fillers.append(path)
            with open(path, "wb") as f:
                while True:
                    f.write(block)
                    f.flush()
        except OSError:
            pass
        try:
            for i in range(1 << 20):
                path = os.path.join(self.path, ".filler-%d" % i)
                open(path, "wb").close()
                fillers.append(path)
        except OSError:
            pass
        return fillers

    def free(self, fillers):
        for path in fillers:
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass

    def readonly(self, ro=True):
        _run("mount", "-o", "remount," + ("ro" if ro else "rw"), self.path)

    def unmount(self):
        if self.mounted:
            subprocess.run(["umount", "-l", self.path], capture_output=True, timeout=30)
            self.mounted = False


@pytest.fixture
def tmpfs():
    """tmpfs(path, size_kb=256, inodes=None) -> a mounted Tmpfs; all unmounted afterwards."""
    mounts = []

    def make(path, size_kb=256, inodes=None):
        mounts.append(Tmpfs(path, size_kb, inodes))
        return mounts[-1]

    try:
        yield make
    finally:
        for m in reversed(mounts):
            m.unmount()


@pytest.fixture
def net(pki, tmp_path):
    """A faultnet.Net with its broker running; skipped when links cannot be made here."""
    import faultnet

    why = faultnet.available()
    if why:
        pytest.skip(why)
    n = faultnet.Net(pki, str(tmp_path))
    try:
        n.start_broker()
        yield n
    finally:
        n.close()
