"""The certificate store: which certificate to connect with, and where.

Layout (docs/interface.md#certificate-store): `endpoint.txt`, a directory per
certificate holding `ID-certificate.pem.crt` and `ID-private.pem.key`, and
a `preferred` symlink naming the one to use. This module keeps `preferred`
valid, rotates it, and adds new entries atomically with the key readable by
the owner only. It never logs or returns key or certificate contents.
"""

import logging
import os

from . import atomicwrite

log = logging.getLogger("chariotd")

PREFERRED = "preferred"
DEFAULT_PORT = 8883


class CertStoreError(Exception):
    """The store cannot give a usable endpoint or certificate; says which file."""


class Endpoint:
    __slots__ = ("host", "port")

    def __init__(self, host, port):
        self.host = host
        self.port = port

    @property
    def alpn(self):
        # AWS IoT Core takes MQTT with client certificates on 443 only with this ALPN.
        return ["x-amzn-mqtt-ca"] if self.port == 443 else None

    def __str__(self):
        return "%s:%d" % (self.host, self.port)


def parse_endpoint(text):
    """'host' or 'host:port' (first line) -> Endpoint; ValueError when malformed."""
    line = text.strip().splitlines()[0].strip() if text.strip() else ""
    host, sep, port = line.rpartition(":") if ":" in line else (line, "", "")
    if not sep:
        host, port = line, str(DEFAULT_PORT)
    if not host or any(c.isspace() for c in host):
        raise ValueError("no host name")
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError("bad port %r" % port)
    return Endpoint(host, int(port))


class CertStore:
    def __init__(self, path):
        self.path = path

    def endpoint(self):
        name = os.path.join(self.path, "endpoint.txt")
        try:
            with open(name) as f:
                return parse_endpoint(f.read())
        except OSError as e:
            raise CertStoreError("cannot read %s: %s" % (name, e.strerror)) from None
        except ValueError as e:
            raise CertStoreError("%s: %s" % (name, e)) from None

    def ids(self):
        """Certificate ids, oldest first by directory mtime."""
        try:
            entries = [e for e in os.scandir(self.path)
                       if e.name != PREFERRED and not e.name.startswith(".")
                       and e.is_dir(follow_symlinks=False)]
        except OSError as e:
            raise CertStoreError("cannot list %s: %s" % (self.path, e.strerror)) from None
        entries.sort(key=lambda e: (e.stat(follow_symlinks=False).st_mtime_ns, e.name))
        return [e.name for e in entries]

    def paths(self, cert_id):
        d = os.path.join(self.path, cert_id)
        return (os.path.join(d, cert_id + "-certificate.pem.crt"),
                os.path.join(d, cert_id + "-private.pem.key"))

    def _usable(self, cert_id):
        return all(os.path.isfile(p) for p in self.paths(cert_id))

    def preferred(self):
        """The id to connect with; repairs a missing or dangling `preferred` link."""
        link = os.path.join(self.path, PREFERRED)
        try:
            current = os.path.basename(os.readlink(link).rstrip("/"))
        except OSError:
            current = None
        ids = self.ids()
        if current in ids and self._usable(current):
            return current
        usable = [i for i in ids if self._usable(i)]
        if not usable:
            for i in ids:
                log.error("certstore entry %s lacks its certificate or key",
                          os.path.join(self.path, i))
            raise CertStoreError("no usable certificate in %s" % self.path)
        newest = usable[-1]
        if current:
            log.warning("certstore %s: preferred -> %s is not usable; using newest (%s)",
                        self.path, current, newest)
        self._link(newest)
        return newest

    def rotate(self):
        """Point `preferred` at the next usable certificate; return its id (or None)."""
        usable = [i for i in self.ids() if self._usable(i)]
        if len(usable) < 2:
            return None
        try:
            current = self.preferred()
        except CertStoreError:
            return None
        nxt = usable[(usable.index(current) + 1) % len(usable)]
        self._link(nxt)
        return nxt

    def _link(self, cert_id):
        tmp = os.path.join(self.path, ".preferred.%d" % os.getpid())
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        os.symlink(cert_id, tmp)
        os.replace(tmp, os.path.join(self.path, PREFERRED))

    def add(self, cert_id, cert_pem, key_pem):
        """Store a new certificate entry atomically (directory 0700, key 0600)."""
        import tempfile  # rarely needed; not worth its memory at start-up

        final = os.path.join(self.path, cert_id)
        tmpdir = tempfile.mkdtemp(prefix=".new-", dir=self.path)
        try:
            os.chmod(tmpdir, 0o700)
            cert, key = (os.path.join(tmpdir, os.path.basename(p)) for p in self.paths(cert_id))
            # Created with the final mode, so the key is never readable by
            # others, whatever the umask, not even for a moment.
            atomicwrite.write_new(key, key_pem, 0o600, exact_mode=True)
            atomicwrite.write_new(cert, cert_pem, 0o644, exact_mode=True)
            _check_pair(cert, key)
            # An entry that may not survive a power cut is not added.
            atomicwrite.sync_directory(tmpdir, required=True)
            os.rename(tmpdir, final)
            atomicwrite.sync_directory(self.path, required=True)
        except (OSError, CertStoreError):
            for p in os.listdir(tmpdir) if os.path.isdir(tmpdir) else ():
                os.unlink(os.path.join(tmpdir, p))
            if os.path.isdir(tmpdir):
                os.rmdir(tmpdir)
            raise
        return cert_id

    def make_preferred(self, cert_id):
        self._link(cert_id)


def _check_pair(certfile, keyfile):
    """CertStoreError unless TLS can use the certificate with the key: an entry
    that cannot connect must not become preferred (a provisioning answer with
    a broken certificate, or one for another key, would strand the device)."""
    import ssl

    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_cert_chain(certfile, keyfile)
    except ssl.SSLError as e:
        if e.reason == "KEY_VALUES_MISMATCH":
            raise CertStoreError("the certificate is for another key") from None
        raise CertStoreError("not a usable certificate and private key (OpenSSL: %s)"
                             % (e.reason or e.library or e)) from None
