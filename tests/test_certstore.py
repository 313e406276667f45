"""Certificate store: endpoint parsing, the preferred link, rotation, adding entries."""

import os
import stat

import pytest

from lib.certstore import CertStore, CertStoreError, parse_endpoint


def entry(store, cert_id, key=True, mtime=None):
    d = store / cert_id
    d.mkdir()
    (d / (cert_id + "-certificate.pem.crt")).write_text("CERT")
    if key:
        (d / (cert_id + "-private.pem.key")).write_text("KEY")
    if mtime:
        os.utime(d, (mtime, mtime))


@pytest.mark.parametrize("text, host, port, alpn", [
    ("abc-ats.iot.eu-west-1.amazonaws.com\n", "abc-ats.iot.eu-west-1.amazonaws.com", 8883, None),
    ("broker.local:1883", "broker.local", 1883, None),
    ("  a.example:443  \nignored", "a.example", 443, ["x-amzn-mqtt-ca"]),
])
def test_endpoint(text, host, port, alpn):
    ep = parse_endpoint(text)
    assert (ep.host, ep.port, ep.alpn) == (host, port, alpn)


@pytest.mark.parametrize("text", ["", "\n", "host:", "host:abc", "host:70000", ":8883", "a b"])
def test_malformed_endpoint(text):
    with pytest.raises(ValueError):
        parse_endpoint(text)


def test_unreadable_endpoint_names_file(tmp_path):
    with pytest.raises(CertStoreError, match="endpoint.txt"):
        CertStore(str(tmp_path)).endpoint()


def test_missing_preferred_picks_newest_and_links(tmp_path):
    entry(tmp_path, "old", mtime=1000)
    entry(tmp_path, "new", mtime=2000)
    assert CertStore(str(tmp_path)).preferred() == "new"
    assert os.readlink(tmp_path / "preferred") == "new"


def test_dangling_preferred_is_repaired(tmp_path):
    entry(tmp_path, "a", mtime=1000)
    os.symlink("gone", tmp_path / "preferred")
    assert CertStore(str(tmp_path)).preferred() == "a"
    assert os.readlink(tmp_path / "preferred") == "a"


def test_valid_preferred_is_kept(tmp_path):
    entry(tmp_path, "a", mtime=1000)
    entry(tmp_path, "b", mtime=2000)
    os.symlink("a", tmp_path / "preferred")
    assert CertStore(str(tmp_path)).preferred() == "a"


def test_entry_without_key_is_skipped(tmp_path):
    entry(tmp_path, "good", mtime=1000)
    entry(tmp_path, "keyless", key=False, mtime=2000)
    assert CertStore(str(tmp_path)).preferred() == "good"


def test_no_usable_certificate(tmp_path):
    entry(tmp_path, "keyless", key=False)
    with pytest.raises(CertStoreError, match="no usable certificate"):
        CertStore(str(tmp_path)).preferred()


def test_rotation_cycles_and_needs_two(tmp_path):
    store = CertStore(str(tmp_path))
    entry(tmp_path, "a", mtime=1000)
    assert store.rotate() is None
    entry(tmp_path, "b", mtime=2000)
    assert store.preferred() == "b"
    assert store.rotate() == "a"
    assert store.preferred() == "a"
    assert store.rotate() == "b"


def _pem(path):
    with open(path) as f:
        return f.read()


def test_add_is_owner_only_whatever_the_umask(tmp_path, pki):
    cert, key = (_pem(p) for p in pki.issue("fresh"))
    old = os.umask(0)
    try:
        CertStore(str(tmp_path)).add("fresh", cert, key)
    finally:
        os.umask(old)
    d = tmp_path / "fresh"
    assert stat.S_IMODE(d.stat().st_mode) == 0o700
    assert stat.S_IMODE((d / "fresh-private.pem.key").stat().st_mode) == 0o600
    assert (d / "fresh-certificate.pem.crt").read_text() == cert
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".")]


def test_a_pair_tls_cannot_use_is_not_added(tmp_path, pki):
    cert, _key = (_pem(p) for p in pki.issue("fresh"))
    other_key = _pem(pki.issue("other")[1])
    store = CertStore(str(tmp_path))
    for pem, key, reason in ((cert, other_key, "the certificate is for another key"),
                             ("CERT PEM", other_key, "not a usable certificate and private key")):
        with pytest.raises(CertStoreError, match=reason):
            store.add("fresh", pem, key)
    assert os.listdir(tmp_path) == []  # nothing left behind, not even a temporary directory
