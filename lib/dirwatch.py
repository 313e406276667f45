"""Notices files arriving in watched directories.

inotify (through ctypes, where the kernel and libc offer it) reports the
names of files renamed or written into a directory within milliseconds and
costs nothing while idle. Where it is missing, a timer stats each directory
every poll interval and reports "something may have changed" when its
mtime moves. Either way the callback runs on the event loop thread. This
module does not read or judge the files it reports.
"""

import ctypes
import errno
import logging
import os
import stat
import struct
import time

log = logging.getLogger("chariotd")

IN_MOVED_TO = 0x80
IN_CLOSE_WRITE = 0x08
IN_CREATE = 0x100
IN_Q_OVERFLOW = 0x4000
IN_NONBLOCK = 0o4000
IN_CLOEXEC = 0o2000000
_EVENT = struct.Struct("iIII")

# A directory mtime this recent may hide a second change within the same
# timestamp tick, so the poller looks again next time.
_MTIME_SETTLE = 2.0


class _Inotify:
    def __init__(self, loop):
        # The running process's own symbols: works with glibc, musl and uClibc alike.
        libc = ctypes.CDLL(None, use_errno=True)
        self._add_watch = libc.inotify_add_watch
        self._add_watch.argtypes = (ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32)
        self.fd = libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
        if self.fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1 failed")
        self._callbacks = {}
        loop.add_reader(self.fd, self._read)

    def watch(self, path, callback):
        mask = IN_MOVED_TO | IN_CLOSE_WRITE | IN_CREATE
        wd = self._add_watch(self.fd, os.fsencode(path), mask)
        if wd < 0:
            raise OSError(ctypes.get_errno(), "inotify_add_watch %s failed" % path)
        self._callbacks[wd] = (path, callback)

    def _read(self):
        names = {}
        overflow = False
        while True:
            try:
                data = os.read(self.fd, 65536)
            except BlockingIOError:
                break
            except OSError as e:
                if e.errno == errno.EINTR:
                    continue
                raise
            overflow |= self._parse(data, names)
        for wd, (path, callback) in self._callbacks.items():
            if overflow:
                callback(path, None)
            elif names.get(wd):
                callback(path, names[wd])

    def _parse(self, data, names):
        overflow = False
        offset = 0
        while offset < len(data):
            wd, mask, _cookie, length = _EVENT.unpack_from(data, offset)
            offset += _EVENT.size
            name = data[offset:offset + length].rstrip(b"\0").decode("utf-8", "surrogateescape")
            offset += length
            if mask & IN_Q_OVERFLOW:
                overflow = True
            elif name and _worth_reporting(mask, self._callbacks.get(wd), name):
                names.setdefault(wd, {})[name] = None  # ordered, without repeats
        return overflow


def _worth_reporting(mask, watched, name):
    # A regular file announces itself again on IN_CLOSE_WRITE once complete;
    # anything else (symlink, FIFO, directory), and a second name of a file
    # made by link(2), only ever gets IN_CREATE.
    if watched is None or not mask & IN_CREATE:
        return watched is not None
    try:
        st = os.lstat(os.path.join(watched[0], name))
    except OSError:
        return False
    return not stat.S_ISREG(st.st_mode) or st.st_nlink > 1


class _Poller:
    def __init__(self, loop, interval):
        self._loop = loop
        self._interval = interval
        self._dirs = []

    def watch(self, path, callback):
        if not self._dirs:
            self._loop.call_later(self._interval, self._poll)
        self._dirs.append([path, callback, None])

    def _poll(self):
        for entry in self._dirs:
            path, callback, last = entry
            try:
                st = os.stat(path)
            except OSError as e:
                log.warning("cannot stat %s: %s", path, e.strerror)
                continue
            stamp = (st.st_mtime_ns, st.st_ino)
            if stamp != last or time.time() - st.st_mtime < _MTIME_SETTLE:
                entry[2] = stamp
                callback(path, None)
        self._loop.call_later(self._interval, self._poll)


class DirWatcher:
    """watch(path, callback): callback(path, names) with names a list, or None
    when the whole directory must be looked at again."""

    def __init__(self, loop, poll_interval):
        self._loop = loop
        self._poll_interval = poll_interval
        self._backend = None
        self._poller = None

    @property
    def mode(self):
        return "inotify" if isinstance(self._backend, _Inotify) else "polling"

    def watch(self, path, callback):
        if self._backend is None:
            self._backend = self._choose_backend()
        try:
            self._backend.watch(path, lambda p, names: callback(p, None if names is None
                                                                 else list(names)))
        except OSError as e:
            log.warning("inotify cannot watch %s (%s); polling it", path, e.strerror)
            self._fallback().watch(path, callback)

    def _choose_backend(self):
        if os.environ.get("CHARIOTD_NO_INOTIFY"):
            return self._fallback()
        try:
            return _Inotify(self._loop)
        except (OSError, AttributeError) as e:
            log.info("inotify unavailable (%s); polling every %ss", e, self._poll_interval)
            return self._fallback()

    def _fallback(self):
        if self._poller is None:
            self._poller = _Poller(self._loop, self._poll_interval)
        return self._poller
