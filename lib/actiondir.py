"""Maildir-style action directories: `tmp/`, `new/`, `failed/`.

A writer prepares a file in `tmp/` and renames it into `new/`; the rename
is the commit. This module lays the directory out, opens entries of `new/`
safely (never following a link, never blocking on a FIFO), and finishes
them: deleted when actioned, moved to `failed/` (pruned to a keep count)
when not. What a file means is its consumer's business.
"""

import errno
import logging
import os
import stat
import weakref

log = logging.getLogger("chariotd")


class NotRegularFile(OSError):
    """An entry of new/ that is a symlink, FIFO, device or directory."""


class FileTooLarge(OSError):
    """An entry bigger than its consumer accepts."""


class LinkedFile(OSError):
    """An entry with more hard links than its consumer accepts: another name of
    a file that is not the writer's to hand over (a secret, say)."""


class ActionDir:
    def __init__(self, path, keep_failed=10):
        self.path = path
        self.new = os.path.join(path, "new")
        self.failed = os.path.join(path, "failed")
        self.keep_failed = keep_failed
        for sub in ("tmp", "failed"):
            # Without these (a full or read-only disk) the daemon still works:
            # writers need tmp/, and a file that cannot go to failed/ is deleted.
            try:
                os.makedirs(os.path.join(path, sub), exist_ok=True)
            except OSError as e:
                log.error("%s: cannot make %s/ (%s); carrying on without it", path, sub,
                          e.strerror or e)
        os.makedirs(self.new, exist_ok=True)  # OSError: the caller says why it cannot start
        self._open_new()

    def _open_new(self):
        # Entries of new/ are opened, stat'ed and deleted relative to it: no
        # path to join and walk for each file of a busy spool.
        self._new_fd = os.open(self.new, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        self._close_new = weakref.finalize(self, os.close, self._new_fd)

    def refresh(self):
        """Follow new/ if it was removed and made again since it was opened; a
        caller about to list the whole directory calls this first."""
        try:
            st = os.stat(self.new)
        except OSError:
            return
        held = os.fstat(self._new_fd)
        if (st.st_ino, st.st_dev) != (held.st_ino, held.st_dev):
            self._close_new()
            self._open_new()

    def names(self):
        """Names currently in new/, unsorted (a backlog can be large)."""
        with os.scandir(self.new) as it:
            for entry in it:
                yield entry.name

    def read_with_stat(self, name, limit=None, max_links=None):
        """(bytes, os.stat_result) of new/NAME: NotRegularFile for anything but a
        regular file, FileTooLarge over limit bytes, and with max_links,
        LinkedFile (nothing read) if it has more hard links."""
        try:
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                         dir_fd=self._new_fd)
        except OSError as e:
            if e.errno == errno.ELOOP:  # O_NOFOLLOW met a symlink
                raise NotRegularFile("not a regular file") from None
            raise
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise NotRegularFile("not a regular file")
            if max_links is not None and st.st_nlink > max_links:
                raise LinkedFile("%d hard links" % st.st_nlink)
            if limit is not None and st.st_size > limit:
                raise FileTooLarge("%d bytes, over the %d byte limit" % (st.st_size, limit))
            # One byte more than fstat said: a file that is still that size is
            # read, and its end seen, in one call; otherwise read on to the end.
            data = os.read(fd, st.st_size + 1)
            if len(data) == st.st_size:
                return data, st
            chunks, size = [data], len(data)
            while True:
                if limit is not None and size > limit:
                    raise FileTooLarge("grew past the %d byte limit" % limit)
                chunk = os.read(fd, 65536)
                if not chunk:
                    return b"".join(chunks), st
                chunks.append(chunk)
                size += len(chunk)
        finally:
            os.close(fd)

    def lstat(self, name):
        """os.lstat of new/NAME."""
        return os.lstat(name, dir_fd=self._new_fd)

    def done(self, name):
        try:
            os.unlink(name, dir_fd=self._new_fd)
        except FileNotFoundError:
            pass

    def fail(self, name, reason):
        """Move new/NAME to failed/ with a log line; delete it if even that fails."""
        log.error("%s: %s; moved to failed/", os.path.join(self.new, name), reason)
        try:
            os.replace(os.path.join(self.new, name), os.path.join(self.failed, name))
        except OSError as e:
            if isinstance(e, FileNotFoundError) and not os.path.lexists(
                    os.path.join(self.new, name)):
                return  # gone already
            # failed/ missing, unwritable or on another filesystem
            log.error("cannot move %s to failed/ (%s); deleting it", name, e.strerror)
            self.done(name)
            return
        self.prune()

    def prune(self):
        """Keep only the newest keep_failed entries of failed/."""
        try:
            with os.scandir(self.failed) as it:
                entries = [(e.stat(follow_symlinks=False).st_mtime_ns, e.name) for e in it]
        except OSError as e:
            log.warning("cannot list %s: %s", self.failed, e.strerror)
            return
        entries.sort(reverse=True)
        for _, name in entries[self.keep_failed:]:
            try:
                path = os.path.join(self.failed, name)
                if os.path.isdir(path) and not os.path.islink(path):
                    os.rmdir(path)
                else:
                    os.unlink(path)
            except OSError as e:
                log.warning("cannot prune %s: %s", name, e.strerror)


class ActionFailed(Exception):
    """Raised by a handler: the file could not be actioned; the message says why."""


class Consumer:
    """The one consume loop of an action directory: hands each file of new/ to
    take(name, data) on the loop thread.

    Every file, in sorted name order, is taken at start() and whenever the
    watcher lost count (polling, an inotify overflow); otherwise the files the
    watcher names. A file that cannot be read (not regular, over limit bytes,
    unreadable) or that take refuses with ActionFailed goes to failed/ with
    why. A file take accepts is deleted, or, with hold, handed to
    hold(name, stat) instead and left in new/ for its owner to finish
    (ActionDir.done). skip(name) true passes a file over unread; after()
    runs after each batch. With started=False nothing is taken before start().
    """

    def __init__(self, watcher, adir, take, limit=1024 * 1024, hold=None, skip=None,
                 after=None, started=True):
        self.adir = adir
        self._take = take
        self._limit = limit
        self._hold = hold
        self._skip = skip
        self._after = after
        self._started = False
        # Watch first, then look: a file arriving in between is reported, not missed.
        watcher.watch(adir.new, lambda _path, names: self._arrived(names))
        if started:
            self.start()

    def start(self):
        """Take the files already waiting, and from now on every file that arrives."""
        self._started = True
        self._arrived(None)

    def _arrived(self, names):
        if not self._started:
            return
        for name in sorted(self.adir.names()) if names is None else names:
            self._consider(name)
        if self._after is not None:
            self._after()

    def _consider(self, name):
        adir = self.adir
        if self._skip is not None and self._skip(name):
            return
        try:
            data, st = adir.read_with_stat(name, self._limit)
        except FileNotFoundError:
            return
        except OSError as e:
            adir.fail(name, e.strerror or str(e))
            return
        try:
            self._take(name, data)
        except ActionFailed as e:
            adir.fail(name, str(e))
        else:
            if self._hold is None:
                adir.done(name)
            else:
                self._hold(name, st)
