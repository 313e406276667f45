"""Writing a file so that a crash or power cut leaves all of it or none.

`write_new` creates a file that must not exist yet (never through a link),
writes all of its bytes and (unless told not to) flushes them to disk
before it returns; a failure removes what it wrote. `sync_directory` makes
a rename or a new entry in a directory durable. Whether a directory that
cannot be synced is an error is the caller's decision, stated at each call:
`required=True` raises OSError, `required=False` carries on (some
filesystems refuse fsync on directories). Renaming the file into place, and
what to name it while it is written, is the caller's business too.
"""

import os


def write_new(path, data, mode=0o666, exact_mode=False, owner=None, durable=True):
    """Create path holding data (bytes or str) flushed to disk; OSError on failure,
    with nothing left at path. mode goes through the umask unless exact_mode;
    owner (uid, gid) is given to the file where the process may (root). Not
    durable: not flushed (a file rewritten every second, whose loss in a power
    cut costs nothing, should not wear the flash)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                 mode)
    try:
        try:
            if owner is not None:
                try:
                    os.fchown(fd, *owner)
                except PermissionError:
                    pass  # not root: the file stays ours, which is all we can do
            if exact_mode:
                os.fchmod(fd, mode)  # whatever the umask
            view = memoryview(data.encode() if isinstance(data, str) else data)
            while view:
                view = view[os.write(fd, view):]
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        try:
            os.unlink(path)
        except OSError:
            pass
        raise


def sync_directory(path, required):
    """Flush directory path's entries to disk; with required, OSError when it
    cannot be, else a directory that cannot be opened or synced is passed over."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        if required:
            raise
        return
    try:
        os.fsync(fd)
    except OSError:
        if required:
            raise
    finally:
        os.close(fd)
