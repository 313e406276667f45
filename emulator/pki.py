"""Throwaway X.509 material for tests and the demo, made with the openssl CLI.

Makes a CA, a server certificate for localhost/127.0.0.1 and device
certificates signed by the CA. Keys are EC P-256 so that generation takes
milliseconds. Nothing here is fit for production use.
"""

import os
import subprocess


class Pki:
    """A CA in a directory, able to issue server and device certificates."""

    def __init__(self, directory, name="chariotd-test-ca"):
        self.dir = directory
        os.makedirs(directory, exist_ok=True)
        self.ca_key = os.path.join(directory, name + ".key")
        self.ca_cert = os.path.join(directory, name + ".crt")
        if not os.path.exists(self.ca_cert):
            _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                     "-nodes", "-keyout", self.ca_key, "-out", self.ca_cert, "-days", "3650",
                     "-subj", "/CN=" + name,
                     "-addext", "basicConstraints=critical,CA:TRUE",
                     "-addext", "keyUsage=critical,keyCertSign,cRLSign")

    def issue(self, name, server=False):
        """Return (cert_path, key_path) for NAME, creating them once."""
        cert = os.path.join(self.dir, name + ".crt")
        key = os.path.join(self.dir, name + ".key")
        if os.path.exists(cert):
            return cert, key
        csr = os.path.join(self.dir, name + ".csr")
        _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                 "-keyout", key, "-out", csr, "-subj", "/CN=" + name)
        self.sign_csr(csr, cert, server=server)
        os.unlink(csr)
        return cert, key

    def sign_csr(self, csr_path, cert_path, server=False):
        """Sign a PEM CSR file with this CA; used for CreateCertificateFromCsr too."""
        ext = os.path.join(self.dir, os.path.basename(cert_path) + ".ext")
        with open(ext, "w") as f:
            if server:
                f.write("subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n")
            else:
                f.write("extendedKeyUsage=clientAuth\n")
        try:
            _openssl("x509", "-req", "-in", csr_path, "-CA", self.ca_cert, "-CAkey", self.ca_key,
                     "-CAcreateserial", "-out", cert_path, "-days", "825", "-sha256",
                     "-extfile", ext)
        finally:
            os.unlink(ext)


def _openssl(*args):
    proc = subprocess.run(("openssl",) + args, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError("openssl %s failed: %s" % (args[0], proc.stderr.strip()))
