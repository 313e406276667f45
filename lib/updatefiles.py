"""A thing's --updates action directories: local shadow updates, kept until
the cloud has them.

Each file in `new/` is handed to the shadow sync once, in sorted name
order; the sync applies it on the device at once. The file is deleted only
when the sync says the update reporting it was accepted, so a crash or a
power cut before then (the device may be offline for hours) applies it
again on the next start instead of losing it. A file the sync refuses goes
to `failed/` (the newest KEEP_FAILED kept) with a log line. Files are only
taken once `start` is called: the sync must first learn the current
configs from the shadow. What a file means is the sync's business.
"""

import logging
import os

from .actiondir import ActionDir, ActionFailed

log = logging.getLogger("chariotd")

KEEP_FAILED = 10
# AWS keeps a shadow's state under 8 KB, so a bigger update can never be reported.
SIZE_LIMIT = 32 * 1024


class UpdateFiles:
    def __init__(self, watcher, directories, take, taken):
        """take(name, data) applies a file or raises ActionFailed; taken() runs
        after each batch of files."""
        self._take = take
        self._taken = taken
        self._started = False
        self._pending = {}  # (dir, name) -> (ActionDir, identity): applied, not reported
        self.dirs = []
        for directory in directories:
            try:
                adir = ActionDir(directory, KEEP_FAILED)
            except OSError as e:
                log.error("--updates %s: cannot set up the directory: %s", directory,
                          e.strerror or e)
                continue
            self.dirs.append(adir)
            watcher.watch(adir.new, lambda _path, names, adir=adir: self._arrived(adir, names))

    def start(self):
        """Take the files already waiting, and from now on every file that arrives."""
        self._started = True
        for adir in self.dirs:
            self._arrived(adir, None)

    def pending(self):
        """Tokens for the files applied but not yet reported, for `finish`."""
        return [(ident, stamp) for ident, (_adir, stamp) in self._pending.items()]

    def finish(self, tokens):
        """Delete the files whose changes the shadow now reports."""
        for ident, stamp in tokens:
            entry = self._pending.get(ident)
            if entry is None or entry[1] != stamp:
                continue  # replaced by a newer file of the same name, still to report
            del self._pending[ident]
            adir, name = entry[0], ident[1]
            try:
                if _identity(os.path.join(adir.new, name)) == stamp:
                    adir.done(name)
            except FileNotFoundError:
                pass

    def _arrived(self, adir, names):
        if not self._started:
            return
        for name in sorted(adir.names()) if names is None else names:
            self._consider(adir, name)
        self._taken()

    def _consider(self, adir, name):
        ident = (adir.path, name)
        try:
            stamp = _identity(os.path.join(adir.new, name))
            if self._pending.get(ident, (None, None))[1] == stamp:
                return  # applied already; deleted once reported
            data = adir.read(name, SIZE_LIMIT)
        except FileNotFoundError:
            return
        except OSError as e:
            adir.fail(name, e.strerror or str(e))
            return
        try:
            self._take(name, data)
        except ActionFailed as e:
            adir.fail(name, str(e))
            return
        self._pending[ident] = (adir, stamp)


def _identity(path):
    """Tells a file from a later one renamed over it (inode numbers get reused)."""
    st = os.lstat(path)
    return st.st_ino, st.st_mtime_ns
