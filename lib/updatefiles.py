"""A thing's --updates action directories: local shadow updates, kept until
the cloud has them.

Each file in `new/` is handed to the shadow sync once, in sorted name
order; the sync applies it on the device at once. The file is deleted only
when the sync says the update reporting it was accepted, so a crash or a
power cut before then (the device may be offline for hours) applies it
again on the next start instead of losing it. A file the sync refuses goes
to `failed/` (the newest KEEP_FAILED kept) with a log line, as does one
whose change the shadow refuses to report. Files are only
taken once `start` is called: the sync must first learn the current
configs from the shadow. What a file means is lib.shadowservices' business.
"""

import logging

from .actiondir import ActionDir, Consumer

log = logging.getLogger("chariotd")

KEEP_FAILED = 10
# AWS keeps a shadow's state under 8 KB, so a bigger update can never be reported.
SIZE_LIMIT = 32 * 1024


class UpdateFiles:
    def __init__(self, watcher, directories, take, taken):
        """take(name, data) applies a file or raises ActionFailed; taken() runs
        after each batch of files."""
        self._pending = {}  # (dir, name) -> (ActionDir, identity): applied, not reported
        self._consumers = []
        for directory in directories:
            try:
                adir = ActionDir(directory, KEEP_FAILED)
            except OSError as e:
                log.error("--updates %s: cannot set up the directory: %s", directory,
                          e.strerror or e)
                continue
            self._consumers.append(Consumer(
                watcher, adir, take, SIZE_LIMIT, after=taken, started=False,
                hold=lambda name, st, adir=adir: self._hold(adir, name, st),
                skip=lambda name, adir=adir: self._applied(adir, name)))

    @property
    def dirs(self):
        """The ActionDirs files are taken from."""
        return [consumer.adir for consumer in self._consumers]

    def start(self):
        """Take the files already waiting, and from now on every file that arrives."""
        for consumer in self._consumers:
            consumer.start()

    def pending(self, keys=None):
        """Tokens for the files applied but not yet reported (with keys, only
        the files of those shadow keys), for `finish` or `fail`."""
        return [(ident, stamp) for ident, (_adir, stamp) in self._pending.items()
                if keys is None or file_key(ident[1]) in keys]

    def finish(self, tokens):
        """Delete the files whose changes the shadow now reports."""
        for adir, name in self._settled(tokens):
            adir.done(name)

    def fail(self, tokens, keys, reason):
        """Move the files of keys (among tokens) to failed/: the shadow refused their change."""
        for adir, name in self._settled([t for t in tokens if file_key(t[0][1]) in keys]):
            adir.fail(name, reason)

    def _settled(self, tokens):
        """(ActionDir, name) of each file of tokens still in new/, no longer pending."""
        for ident, stamp in tokens:
            entry = self._pending.get(ident)
            if entry is None or entry[1] != stamp:
                continue  # replaced by a newer file of the same name, still to report
            del self._pending[ident]
            adir, name = entry[0], ident[1]
            try:
                if _identity(adir.lstat(name)) == stamp:
                    yield adir, name
            except FileNotFoundError:
                pass

    def _applied(self, adir, name):
        """Whether new/NAME is the very file applied already (deleted once reported)."""
        entry = self._pending.get((adir.path, name))
        if entry is None:
            return False
        try:
            return _identity(adir.lstat(name)) == entry[1]
        except FileNotFoundError:
            return True
        except OSError:
            return False  # the read says why

    def _hold(self, adir, name, st):
        self._pending[(adir.path, name)] = (adir, _identity(st))


def file_key(name):
    """The shadow key an update file KEY or KEY.SUFFIX sets ("" for none)."""
    return name.partition(".")[0]


def _identity(st):
    """Tells a file from a later one renamed over it (inode numbers get reused)."""
    return st.st_ino, st.st_mtime_ns
