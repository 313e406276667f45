"""A service's outfile on disk: replace atomically, read back.

A new outfile is written to a temporary file in the outfile's own
directory, flushed to disk and renamed over the old one, so a reader sees
either the whole old file or the whole new one, and a full disk or a
missing directory leaves the old file intact. The temporary file of a
writer killed before its rename is removed by the next run's first write.
A symlinked outfile (an /etc entry pointing into a writable partition,
say) is replaced at the link's target. `/dev/null` is never written. This
module knows nothing of formats, services or shadows.
"""

import os
import stat

from . import atomicwrite

DEV_NULL = "/dev/null"
# Outfiles whose leftovers were looked for: only a writer of an earlier run
# can leave one (ours are removed when a write fails), so once per run.
_swept = set()
READ_LIMIT = 1024 * 1024  # outfiles hold a shadow section, which AWS caps at 8 KB


def read(path):
    """The file's bytes (at most READ_LIMIT), or None when it does not exist;
    OSError otherwise."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        # os.read, not open(): a buffered file would allocate READ_LIMIT for
        # the usual few hundred bytes, and ask four more syscalls.
        chunks, left = [], READ_LIMIT
        while left > 0:
            chunk = os.read(fd, min(left, 65536))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def replace(path, data):
    """Atomically make the file at path hold data (bytes); OSError on failure,
    with the old file untouched. An existing file's mode and owner are kept."""
    try:
        old = os.lstat(path)
    except FileNotFoundError:
        old = None
    if old is not None and stat.S_ISLNK(old.st_mode):
        target = os.path.realpath(path)
        try:
            old = os.stat(target)
        except FileNotFoundError:
            old = None
    else:
        # Only a link in the last component changes which directory the file
        # is in; the rename works through linked directories above it alike.
        target = os.path.abspath(path)
    directory, name = os.path.split(target)
    tmp = os.path.join(directory, ".%s.chariotd-%d" % (name, os.getpid()))
    if target not in _swept:
        _remove_leftovers(directory, name)
        _swept.add(target)
    if old is None:
        atomicwrite.write_new(tmp, data)  # the mode follows the umask
    else:
        atomicwrite.write_new(tmp, data, old.st_mode & 0o7777, exact_mode=True,
                              owner=(old.st_uid, old.st_gid))
    try:
        os.rename(tmp, target)
    except OSError:
        _remove(tmp)
        raise
    # The rename is durable only once the directory entry is on disk; where the
    # filesystem cannot say so, the rename is done all the same.
    atomicwrite.sync_directory(directory, required=False)


def _remove_leftovers(directory, name):
    # A daemon killed between creating its temporary file and renaming it
    # leaves the file behind; remove those whose writer is gone (ours too).
    prefix = ".%s.chariotd-" % name
    try:
        names = [n for n in os.listdir(directory) if n.startswith(prefix)]
    except OSError:
        return
    for leftover in names:
        pid = leftover[len(prefix):]
        if pid.isdigit() and (int(pid) == os.getpid() or not _running(int(pid))):
            _remove(os.path.join(directory, leftover))


def _running(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        pass
    return True


def _remove(path):
    try:
        os.unlink(path)
    except OSError:
        pass  # absent, or not ours to remove: the exclusive create will say so
