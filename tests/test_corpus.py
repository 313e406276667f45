"""A hostile-input corpus (issue 10 item 9): table-driven cases of what a
device may be handed, each with the log line it must produce and what must
happen (a file in failed/ or removed, an outfile untouched, exit status 2).

One daemon takes a category's cases one after another (or all at once),
so the whole file runs in well under a minute: daemon A has the message
files, the command files and the fleet-provisioning answers (through the
`reprovision` command, against a fake provisioning service on the broker);
daemon B the service definitions (loaded at start), the shadow
documents (as deltas published on the broker, beside the emulator that
answers the daemon's own requests) and then the update files. Command-line
values run the real `chariotd.py` each.
"""

import json
import os
import re
import socket
import subprocess
import sys

import pytest
from observer import Observer
from process import CHARIOTD, DaemonProcess, make_certstore, wait_until

from emulator.cloud import Emulator

THING = "Corpus1"
DELTA = "$aws/things/%s/shadow/update/delta" % THING


def show(text):
    """text as the daemon's log shows it (control characters escaped)."""
    from lib.cli import _ESCAPES

    return text.translate(_ESCAPES)


def _text(path):
    with open(path) as f:
        return f.read()


def lines_with(log, needle):
    return [line for line in log.splitlines() if needle in line]


def start_daemon(workdir, pki, clientid, options, certstore):
    args = ["--clientid=" + clientid, "--cacert=" + pki.ca_cert,
            "--certstore=" + certstore] + list(options)
    d = DaemonProcess(str(workdir), args).start()
    d.wait_log(r"INFO: connected to ")
    return d


def since(d, offset, pattern, timeout=15):
    """Wait for a log line matching pattern after offset; return that line."""
    rx = re.compile(pattern)

    def found():
        for line in d.log()[offset:].splitlines():
            if rx.search(line):
                return line
        assert d.proc.poll() is None, "chariotd exited:\n" + d.log()
        return None

    return wait_until(found, timeout, "a log line %r" % pattern)


# == message files ===========================================================
#
# Each case: the entry's name in new/, how to make it (bytes renamed in from
# tmp/, or a function making it in new/ directly), what becomes of it
# ("failed": moved to failed/; "removed": its name in new/ removed, nothing
# sent or kept; "sent": published) and the text its log line holds.

SECRET = {"topic": "corpus/secret", "payload": "the secret"}


def _symlink(new, tmp, name):
    os.symlink(str(tmp / "secret"), os.path.join(new, name))


def _hardlink(new, tmp, name):
    os.link(str(tmp / "secret"), os.path.join(new, name))


def _fifo(new, _tmp, name):
    os.mkfifo(os.path.join(new, name))


def _directory(new, _tmp, name):
    os.mkdir(os.path.join(new, name))


def _socket(new, _tmp, name):
    s = socket.socket(socket.AF_UNIX)
    s.bind(os.path.join(new, name))
    s.close()


def _sparse(new, tmp, name):
    path = str(tmp / "sparse")
    with open(path, "wb") as f:
        f.write(b'{"topic": "corpus/sparse", "payload": "')
        f.truncate(8 << 30)  # 8 GiB of holes: no disk used
    os.rename(path, os.path.join(new, name))


def _bytes_name(new, tmp, name):
    path = os.path.join(os.fsencode(str(tmp)), b"nonutf8")
    with open(path, "wb") as f:
        f.write(b"{not json")
    os.rename(path, os.path.join(os.fsencode(new), os.fsencode(name)))


def _msg(topic, payload, **more):
    return json.dumps(dict(topic=topic, payload=payload, **more)).encode()


DEEP = 100000
MESSAGE_CASES = [
    # (name, content or maker, outcome, log text, topic when sent)
    ("invalid-utf8", b'{"topic": "corpus/u", "payload": "\xff\xfe"}', "failed",
     "not JSON ('utf-8' codec can't decode byte 0xff", None),
    ("empty", b"", "failed", "not JSON (Expecting value: line 1 column 1 (char 0))", None),
    ("blank", b" \n\t\n", "failed", "not JSON (Expecting value", None),
    ("binary", bytes(range(256)) * 4, "failed", "not JSON (", None),
    ("nul-bytes", b"\0" * 64, "failed", "not JSON (", None),
    ("cut-short", _msg("corpus/cut", {"a": [1, 2, 3]})[:-5], "failed", "not JSON (", None),
    ("top-array", b'[{"topic": "corpus/arr", "payload": 1}]', "failed", "not a JSON object", None),
    ("top-string", b'"corpus/str"', "failed", "not a JSON object", None),
    ("nested-100000", b'{"topic": "corpus/deep", "payload": ' + b"[" * DEEP + b"]" * DEEP + b"}",
     "failed", "not JSON (maximum recursion depth exceeded", None),
    ("sparse-8g", _sparse, "failed", "8589934592 bytes, over the 1048576 byte limit", None),
    ("just-over-1m", b" " * (1024 * 1024 + 1), "failed", "over the 1048576 byte limit", None),
    ("nan", b'{"topic": "corpus/nan", "payload": {"v": NaN}}', "failed",
     "payload holds NaN, Infinity or a number beyond a double", None),
    ("infinity", b'{"topic": "corpus/inf", "payload": [Infinity]}', "failed",
     "payload holds NaN, Infinity", None),
    ("beyond-double", b'{"topic": "corpus/big", "payload": -1e400}', "failed",
     "(such as 1e400)", None),
    ("priority-nan", b'{"topic": "corpus/p", "payload": 1, "priority": NaN}', "failed",
     "priority NaN is not a number", None),
    ("lone-surrogate", b'{"topic": "corpus/s", "payload": "\\udc80"}', "failed",
     "payload is not valid UTF-8 text", None),
    ("qos-2", _msg("corpus/q", 1, qos=2), "failed", "qos 2 is not 0 or 1", None),
    ("qos-true", _msg("corpus/q", 1, qos=True), "failed", "qos true is not 0 or 1", None),
    ("topic-null", b'{"topic": null, "payload": 1}', "failed", "missing topic", None),
    ("topic-object", b'{"topic": {"a": 1}, "payload": 1}', "failed", "topic is not a string",
     None),
    ("topic-plus", _msg("corpus/+/x", 1), "failed", "wildcard", None),
    ("topic-hash", _msg("corpus/#", 1), "failed", "wildcard", None),
    ("topic-aws-shadow-accepted", _msg("$aws/things/x/shadow/update/accepted", {}), "failed",
     "a reserved topic a device may not publish to", None),
    ("topic-aws-unknown", _msg("$aws/anything", 1), "failed", "reserved topic", None),
    ("topic-dollar", _msg("$corpus/x", 1), "failed", "reserved topic", None),
    ("topic-newline", _msg("corpus/x\nFAKE", 1), "failed",
     "contains the control character U+000A", None),
    ("topic-10k", _msg("t" * 10000, 1), "failed", "10000 bytes", None),
    ("symlink-to-secret", _symlink, "failed", "not a regular file", None),
    ("fifo", _fifo, "failed", "not a regular file", None),
    ("directory", _directory, "failed", "not a regular file", None),
    ("unix-socket", _socket, "failed", "not a regular file", None),
    ("hardlink-to-secret", _hardlink, "removed",
     "2 hard links, so perhaps another name of a file not meant to be sent", None),
    ("forged\nERROR: line", b"{nope", "failed", "not JSON", None),
    ("non-utf8-\udcff-name", _bytes_name, "failed", "not JSON", None),
    # Taken, as JSON readers take them: the last of duplicate keys, a UTF-8
    # byte order mark, UTF-16 text.
    ("duplicate-keys", b'{"topic": "corpus/first", "topic": "corpus/dup", "payload": 1, '
     b'"payload": "last"}', "sent", None, "corpus/dup"),
    ("bom", b"\xef\xbb\xbf" + _msg("corpus/bom", "with a BOM"), "sent", None, "corpus/bom"),
    ("utf-16", _msg("corpus/utf16", "é").decode().encode("utf-16"), "sent", None,
     "corpus/utf16"),
    ("compress-unknown", _msg("corpus/lzma", "plain", compress="lzma"), "sent",
     'unknown compress "lzma"; sending uncompressed', "corpus/lzma"),
    ("basic-ingest", _msg("$aws/rules/corpus_rule/x", {"v": 1}), "sent", None,
     "$aws/rules/corpus_rule/x"),
]
SENT_PAYLOAD = {"duplicate-keys": b"last", "bom": b"with a BOM", "utf-16": "é".encode(),
                "compress-unknown": b"plain", "basic-ingest": b'{"v":1}'}


# == command files ===========================================================

COMMAND_CASES = [
    # (name, content or maker, outcome, log text)
    ("format-disk", b"", "failed", "unknown command 'format-disk'"),
    ("open-tunnel", b"{not json", "failed", "arguments are not valid JSON"),
    ("open-tunnel.array", b'["thing"]', "failed", "arguments are not a JSON object"),
    ("open-tunnel.mapped", b'{"thing": "%s", "services": ["SSH"]}' % THING.encode(), "failed",
     "tunnels need --tunnelmappings"),
    ("close-tunnel", b"{}", "failed", 'no "thing" in the arguments'),
    ("close-tunnel.number", b'{"thing": 5}', "failed", 'no "thing" in the arguments'),
    ("close-tunnel.utf8", b'{"thing": "\xff"}', "failed", "arguments are not valid JSON"),
    ("refetch\nERROR: forged", b"", "failed", "unknown command 'refetch\\nERROR: forged'"),
    ("open-tunnel.big", b" " * (64 * 1024 + 1), "failed", "over the 65536 byte limit"),
    ("refetch.symlink", _symlink, "failed", "not a regular file"),
    ("refetch.fifo", _fifo, "failed", "not a regular file"),
    ("refetch.dir", _directory, "failed", "not a regular file"),
    ("close-tunnel.nested", b"[" * 30000 + b"]" * 30000, "failed",
     "arguments are not valid JSON: maximum recursion depth exceeded"),
    ("refetch.42", b"ignored arguments", "done", "command refetch.42"),
]


# == fleet-provisioning answers ===============================================
#
# Each case: the fake service's answer to CreateKeysAndCertificate and (when
# the flow gets that far) to RegisterThing, as (suffix, payload); and the
# reason the flow fails with. The device keeps its certificate every time.

TEMPLATE = "CorpusTemplate"
CREATE = "$aws/certificates/create/json"
REGISTER = "$aws/provisioning-templates/%s/provision/json" % TEMPLATE


def _created(pki_pair, _other_key=None, **changes):
    cert, key = pki_pair
    reply = {"certificateId": "corpusnew", "certificatePem": cert, "privateKey": key,
             "certificateOwnershipToken": "token"}
    reply.update(changes)
    return "accepted", json.dumps({k: v for k, v in reply.items() if v is not None})


PROVISIONING_CASES = [
    # (id, create answer(pair, other_key), register answer, log text)
    ("create-not-json", lambda p, o: ("accepted", "{nope"), None,
     "CreateKeysAndCertificate: malformed reply"),
    ("create-array", lambda p, o: ("accepted", "[]"), None,
     "CreateKeysAndCertificate: malformed reply"),
    ("create-nested", lambda p, o: ("accepted", "[" * 50000 + "]" * 50000), None,
     "CreateKeysAndCertificate: malformed reply"),
    ("rejected-nested", lambda p, o: ("rejected", "[" * 50000 + "]" * 50000), None,
     "CreateKeysAndCertificate rejected: no code: no message"),
    ("no-certificate", lambda p, o: _created(p, certificatePem=None), None,
     "CreateKeysAndCertificate: malformed reply"),
    ("no-private-key", lambda p, o: _created(p, privateKey=None), None,
     "CreateKeysAndCertificate: malformed reply"),
    ("token-not-string", lambda p, o: _created(p, certificateOwnershipToken=7), None,
     "CreateKeysAndCertificate: malformed reply"),
    ("id-escapes", lambda p, o: _created(p, certificateId="../../etc"), None,
     "certificate id '../../etc' cannot name a certstore entry"),
    ("id-preferred", lambda p, o: _created(p, certificateId="preferred"), None,
     "certificate id 'preferred' cannot name a certstore entry"),
    ("create-rejected", lambda p, o: ("rejected", json.dumps(
        {"statusCode": 400, "errorCode": "InvalidPayload", "errorMessage": "no"})), None,
     "CreateKeysAndCertificate rejected: 400 InvalidPayload: no"),
    ("register-no-thing", _created, ("accepted", '{"deviceConfiguration": {}}'),
     "RegisterThing: malformed reply"),
    ("register-thing-number", _created, ("accepted", '{"thingName": 5}'),
     "RegisterThing: malformed reply"),
    ("register-rejected", _created, ("rejected", '{"statusCode": 403}'),
     "RegisterThing rejected: 403: no message"),
    ("malformed-certificate",
     lambda p, o: _created(p, certificatePem="-----BEGIN CERTIFICATE-----\nAAAA\n"
                           "-----END CERTIFICATE-----\n"),
     ("accepted", '{"thingName": "Corpus1"}'),
     "cannot store certificate corpusnew in "),
    ("certificate-for-another-key", lambda p, o: _created(p, privateKey=o),
     ("accepted", '{"thingName": "Corpus1"}'),
     "cannot store certificate corpusnew in "),
]
PAIR_REFUSED = {"malformed-certificate": "not a usable certificate and private key",
                "certificate-for-another-key": "the certificate is for another key"}


class FakeProvisioning(Observer):
    """The provisioning service as a script: answers each request with the
    current case's answer."""

    def __init__(self, port):
        self.answers = {}
        super().__init__(port, topics=(CREATE, REGISTER))

    def _on_message(self, client, userdata, msg):
        super()._on_message(client, userdata, msg)
        answer = self.answers.get(msg.topic)
        if answer is not None:
            suffix, payload = answer
            client.publish(msg.topic + "/" + suffix, payload, qos=1)


@pytest.fixture(scope="module")
def daemon_a(tmp_path_factory, pki, broker):
    """Daemon A, connected, with --messages, --commands and --fleetprov; yields
    (daemon, tmp, messages dir, commands dir, certstore, fake provisioning)."""
    tmp = tmp_path_factory.mktemp("corpus-a")
    endpoint = "localhost:%d" % broker.tls_port
    store = make_certstore(str(tmp / "certstore"), endpoint, [("corpus-a", *pki.issue("corpus-a"))])
    claims = make_certstore(str(tmp / "claims"), endpoint, [("claim", *pki.issue("claim"))])
    fleetprov = tmp / "fleetprov.json"
    fleetprov.write_text(json.dumps({"claimstore": claims, "template": TEMPLATE,
                                     "parameters": {"SerialNumber": "1"}}))
    with open(tmp / "secret", "w") as f:
        json.dump(SECRET, f)
    msgs, cmds = str(tmp / "msgs"), str(tmp / "cmds")
    provisioning = FakeProvisioning(broker.plain_port)
    d = start_daemon(tmp, pki, "corpus-a", ["--messages=" + msgs, "--commands=" + cmds,
                                            "--fleetprov=" + str(fleetprov)], store)
    try:
        yield d, tmp, msgs, cmds, store, provisioning
    finally:
        d.close()
        provisioning.close()


def _drop(directory, tmp, name, content):
    new = os.path.join(directory, "new")
    if callable(content):
        content(new, tmp, name)
        return
    path = os.path.join(directory, "tmp", name)
    with open(path, "wb") as f:
        f.write(content)
    os.rename(path, os.path.join(new, name))


@pytest.fixture(scope="module")
def messages_run(daemon_a, broker):
    """Every message case dropped at once into daemon A's spool, and waited out."""
    d, tmp, msgs, _cmds, _store, _prov = daemon_a
    everything = Observer(broker.plain_port, topics=("#", "$aws/rules/#"))
    try:
        for name, content, _outcome, _text, _topic in MESSAGE_CASES:
            _drop(msgs, tmp, name, content)
        failed = sorted(n for n, _c, outcome, _t, _tp in MESSAGE_CASES if outcome == "failed")
        sent = [topic for _n, _c, _o, _t, topic in MESSAGE_CASES if topic]
        wait_until(lambda: sorted(os.listdir(os.path.join(msgs, "failed"))) == failed, 30,
                   "every bad message file in failed/")
        wait_until(lambda: not os.listdir(os.path.join(msgs, "new")), 30, "new/ to empty")
        everything.wait_for(lambda ms: {m.topic for m in ms} >= set(sent), 30,
                            "every good message sent")
        yield d.log(), msgs, list(everything.messages)
    finally:
        everything.close()


@pytest.mark.parametrize("name, content, outcome, text, topic", MESSAGE_CASES,
                         ids=[show(c[0]) for c in MESSAGE_CASES])
def test_message_file(messages_run, tmp_path, name, content, outcome, text, topic):
    log, msgs, published = messages_run
    path = show(os.path.join(msgs, "new", name))
    lines = lines_with(log, path + ":")
    failed = os.listdir(os.path.join(msgs, "failed"))
    if outcome == "sent":
        (message,) = [m for m in published if m.topic == topic]
        assert message.payload == SENT_PAYLOAD[name]
        assert name not in failed
        assert [line for line in lines if text and text in line] if text else lines == []
        return
    assert len(lines) == 1, lines  # one line, escaped: nothing forged
    assert lines[0].startswith("ERROR: ") and text in lines[0], lines[0]
    if outcome == "failed":
        assert lines[0].endswith("moved to failed/") and name in failed
    else:
        assert "not read or sent" in lines[0] and name not in failed
    assert not [m for m in published if m.topic.startswith("corpus/") and m.topic != topic
                and m.payload == SECRET["payload"].encode()]


def test_message_corpus_sends_nothing_it_refused_and_keeps_the_connection(messages_run):
    log, _msgs, published = messages_run
    sent = {topic for *_rest, topic in MESSAGE_CASES if topic}
    assert {m.topic for m in published if m.topic.startswith(("corpus/", "$aws/rules/"))} \
        == sent
    assert log.count("INFO: connected to ") == 1 and "connection to" not in log
    assert "Traceback" not in log
    assert not [line for line in log.splitlines() if line.startswith(("ERROR: line", "FAKE"))]


@pytest.fixture(scope="module")
def commands_run(daemon_a, messages_run):
    d, tmp, _msgs, cmds, _store, _prov = daemon_a
    for name, content, _outcome, _text in COMMAND_CASES:
        _drop(cmds, tmp, name, content)
    # (failed/ of a command directory keeps only the newest 10)
    failing = [show(os.path.join(cmds, "new", n)) + ":" for n, _c, outcome, _t in COMMAND_CASES
               if outcome == "failed"]
    wait_until(lambda: not os.listdir(os.path.join(cmds, "new")) and
               all(lines_with(d.log(), path) for path in failing), 20,
               "every command file handled")
    return d.log(), cmds


@pytest.mark.parametrize("name, content, outcome, text", COMMAND_CASES,
                         ids=[show(c[0]) for c in COMMAND_CASES])
def test_command_file(commands_run, name, content, outcome, text):
    log, cmds = commands_run
    path = show(os.path.join(cmds, "new", name))
    if outcome == "done":
        assert "INFO: " + text in log.splitlines()
        assert lines_with(log, path) == []
        return
    lines = lines_with(log, path + ":")
    assert len(lines) == 1, lines
    assert lines[0].startswith("ERROR: ") and text in lines[0], lines[0]
    assert lines[0].endswith("moved to failed/")
    assert "Traceback" not in log


@pytest.fixture(scope="module")
def provisioning_run(daemon_a, commands_run, pki):
    """Each answer through a `reprovision` command of its own: {case id: log text}."""
    d, tmp, _msgs, cmds, store, provisioning = daemon_a
    pair = [_text(p) for p in pki.issue("corpusnew")]
    other_key = _text(pki.issue("corpus-other")[1])
    before = sorted(os.listdir(store)), os.readlink(os.path.join(store, "preferred"))
    results = {}
    for i, (case, create, register, _reason) in enumerate(PROVISIONING_CASES):
        provisioning.answers = {CREATE: create(pair, other_key), REGISTER: register}
        offset = len(d.log())
        _drop(cmds, tmp, "reprovision.%d" % i, b"")
        since(d, offset, r"certificate rotation failed; keeping the current certificate")
        results[case] = d.log()[offset:]
        assert (sorted(os.listdir(store)), os.readlink(os.path.join(store, "preferred"))) \
            == before, "the certstore changed after %s" % case
    return results


@pytest.mark.parametrize("case, create, register, text", PROVISIONING_CASES,
                         ids=[c[0] for c in PROVISIONING_CASES])
def test_fleet_provisioning_answer(provisioning_run, case, create, register, text):
    log = provisioning_run[case]
    (line,) = lines_with(log, "fleet provisioning failed: ")
    assert line.startswith("ERROR: fleet provisioning failed: ") and text in line, line
    if case in PAIR_REFUSED:
        assert PAIR_REFUSED[case] in line, line
        assert "BEGIN" not in log and "AAAA" not in log  # no certificate or key text logged
    assert "Traceback" not in log
    assert ("RegisterThing" in log) == (register is not None)


# == service definitions =====================================================
#
# All in daemon B's --services directory beside its good services: each bad
# one is one log line naming the file, and is skipped; the good ones load.


def _definition(**keys):
    return json.dumps(keys)


def _mkfifo(path):
    os.mkfifo(path)


def _mkdir(path):
    os.mkdir(path)


def _dangling(path):
    os.symlink("/nonexistent/definition", path)


NESTED_JS = "module.exports = { key: " + "[" * 1000 + "]" * 1000 + " };"
DEFINITION_CASES = [
    # (file name, content or maker(path), log text)
    ("bad-syntax.json", '{"key": "x",', "syntax error: "),
    ("not-object.json", '["key", "notifycmd"]', "must hold a JSON object"),
    ("nested.json", '{"key": ' + "[" * 100000 + "]" * 100000 + "}",
     "syntax error: maximum recursion depth exceeded"),
    ("not-utf8.json", b'{"key": "\xff"}', "cannot read: not UTF-8 text"),
    ("code.js", 'module.exports = { key: "code", outfile: "/tmp/x", outformat: "JSON", '
     'notifycmd: "", validate: function (c) { return c; } };', "contains code; port it to code.py"),
    ("require.js", 'module.exports = { key: require("fs").readFileSync("/etc/shadow") };',
     "contains code; port it to require.py"),
    ("cut.js", 'module.exports = { key: "cut", ', "syntax error: "),
    ("nested.js", NESTED_JS, "syntax error: line 1: nested more than 64 deep"),
    ("unknown-format.json", _definition(key="u", outfile="/tmp/u", outformat="YAML",
                                        notifycmd=""), "unknown outformat 'YAML' (known: "),
    ("unknown-informat.json", _definition(key="i", outfile="/tmp/i", outformat="JSON",
                                          informat="XML", notifycmd=""), "unknown informat 'XML'"),
    ("no-key.json", _definition(outfile="/tmp/n", outformat="JSON", notifycmd=""),
     "missing required key 'key'"),
    ("empty-key.json", _definition(key="", outfile="/tmp/e", outformat="JSON", notifycmd=""),
     "'key' must be a non-empty string, not ''"),
    ("timeout-text.json", _definition(key="t", outfile="/tmp/t", outformat="JSON", notifycmd="",
                                      timeout="10"),
     "'timeout' must be a positive number of seconds, not '10'"),
    ("timeout-negative.json", _definition(key="t", outfile="/tmp/t", outformat="JSON",
                                          notifycmd="", timeout=-1),
     "'timeout' must be a positive number of seconds, not -1"),
    ("outkeys-string.json", _definition(key="o", outfile="/tmp/o", outformat="JSON",
                                        notifycmd="", outkeys="a"),
     "'outkeys' must be a list of strings, not 'a'"),
    ("validate.json", _definition(key="v", outfile="/tmp/v", outformat="JSON", notifycmd="",
                                  validate="return cfg"),
     "'validate' is only supported in NAME.py definitions"),
    # A misspelt key says so even when the definition cannot load.
    ("typo.json", _definition(key="typo", outfile="/tmp/typo", outformat="JSON",
                              notifycmnd="true"),
     "missing required key 'notifycmd'; ignoring unknown key 'notifycmnd'"),
    ("raises.py", "raise RuntimeError('boom')\n", "failed to load: RuntimeError: boom"),
    ("exits.py", "import sys\nsys.exit(3)\n", "failed to load: SystemExit: 3"),
    ("py-syntax.py", "key = 'x'\nif\n", "syntax error: line 2: invalid syntax"),
    ("fifo.json", _mkfifo, "not a regular file"),
    ("directory.json", _mkdir, "not a regular file"),
    ("dangling.json", _dangling, "cannot read: No such file or directory"),
    ("zz-duplicate.json", _definition(key="cfg", outfile="/tmp/dup", outformat="JSON",
                                      notifycmd=""), "service key 'cfg' is already defined by "),
    # Loaded, with a line: a relative outfile is written where chariotd runs.
    ("rel.json", None, "'outfile' rel.conf is a relative path: written in chariotd's working "
     "directory, as "),
]
GOOD_SERVICES = ["cfg", "dotdot", "env", "linked", "motd", "rel"]


# == shadow documents =========================================================
#
# Deltas published on the broker as AWS would (and as it never would), one
# at a time, each with a version the emulator's shadow has, so that the
# daemon's answers (clearing desired, reporting) go through. Services: cfg
# (JSON), env (SHELL), motd (PLAINTEXT).

NOT_OBJECT = r"ignoring a message on \$aws/things/Corpus1/shadow/update/delta that is not a " \
    r"JSON object"
NO_STATE = r"shadow Corpus1: ignoring a delta without a state object"
REFUSED = r"shadow Corpus1: %s: delta version \d+ refused: %s; cleared from desired$"
FORBIDDEN = "the shell, the dynamic loader or the programs they start act on; not written"


def _deep(levels):
    """A delta whose cfg nests objects levels deep, as JSON text."""
    return (b'{"version": VERSION, "state": {"cfg": ' + b'{"d": ' * levels + b'"x"' +
            b"}" * levels + b"}}")


SHADOW_CASES = [
    # (id, delta (a dict, bytes as they are, or a function of the version),
    #  log line (regex), outfile and its content after (None: unchanged),
    #  whether an update follows)
    ("no-state", {}, NO_STATE, None, False),
    ("state-null", {"state": None}, NO_STATE, None, False),
    ("state-list", {"state": [{"cfg": {"a": 2}}]}, NO_STATE, None, False),
    ("state-string", {"state": "cfg"}, NO_STATE, None, False),
    ("not-json", b'{"state": {"cfg": ', NOT_OBJECT, None, False),
    ("array", b'[{"state": {"cfg": {"a": 2}}}]', NOT_OBJECT, None, False),
    ("invalid-utf8", b'{"state": {"cfg": {"a": "\xff"}}}', NOT_OBJECT, None, False),
    # (within the broker's 128 KiB, as AWS's)
    ("nested-50000", b'{"state": {"cfg": ' + b"[" * 50000 + b"]" * 50000 + b"}}", NOT_OBJECT,
     None, False),
    ("plaintext-object", {"state": {"motd": {"text": "hi"}}},
     REFUSED % ("motd", "cannot be written as PLAINTEXT: PLAINTEXT config must be a string, "
                "not an object"), None, True),
    ("plaintext-number", {"state": {"motd": 5}},
     REFUSED % ("motd", "cannot be written as PLAINTEXT: PLAINTEXT config must be a string, "
                "not a number"), None, True),
    ("shell-string", {"state": {"env": "A=2"}},
     REFUSED % ("env", "cannot be written as SHELL: SHELL config must be an object, not a "
                "string"), None, True),
    ("shell-array", {"state": {"env": ["A", "2"]}},
     REFUSED % ("env", "cannot be written as SHELL: SHELL config must be an object, not an "
                "array"), None, True),
    ("shell-bad-name", {"state": {"env": {"a-b": "1"}}},
     REFUSED % ("env", "cannot be written as SHELL: key 'a-b' is not a valid shell variable "
                "name"), None, True),
    ("shell-empty-key", {"state": {"env": {"": "1"}}},
     REFUSED % ("env", "cannot be written as SHELL: key '' is not a valid shell variable name"),
     None, True),
    ("shell-unicode-key", {"state": {"env": {"é": "1"}}},
     REFUSED % ("env", "cannot be written as SHELL: key 'é' is not a valid shell variable "
                "name"), None, True),
    ("shell-digit-key", {"state": {"env": {"1A": "1"}}},
     REFUSED % ("env", "cannot be written as SHELL: key '1A' is not a valid shell variable "
                "name"), None, True),
    ("shell-path", {"state": {"env": {"PATH": "/tmp/evil"}}},
     REFUSED % ("env", "cannot be written as SHELL: key 'PATH' is a name " + FORBIDDEN), None,
     True),
    ("shell-ld-preload-nested", {"state": {"env": {"LD": {"PRELOAD": "/tmp/x.so"}}}},
     REFUSED % ("env", "cannot be written as SHELL: key 'LD_PRELOAD' is a name " + FORBIDDEN),
     None, True),
    ("shell-nul", {"state": {"env": {"B": "a\0b"}}},
     REFUSED % ("env", "cannot be written as SHELL: a value contains a NUL character, which a "
                "shell cannot hold"), None, True),
    ("json-lone-surrogate", b'{"state": {"cfg": {"s": "\\ud800"}}, "version": VERSION}',
     REFUSED % ("cfg", "the config holds a lone surrogate, which is not valid Unicode"), None,
     True),
    ("json-deep-900", _deep(900),
     REFUSED % ("cfg", "the config is nested more than 32 deep"), None, True),
    ("json-deep-975", _deep(975),
     REFUSED % ("cfg", "the config is nested more than 32 deep"), None, True),
    ("json-unicode-and-empty-keys", {"state": {"cfg": {"ключ": "значение", "": "empty"}}},
     r"cfg: wrote \S+/cfg.json \(delta version \d+\)",
     ("cfg.json", {"a": 1, "ключ": "значение", "": "empty"}), True),
    ("json-nul-value", {"state": {"cfg": {"n": "a\0b"}}},
     r"cfg: wrote \S+/cfg.json \(delta version \d+\)",
     ("cfg.json", {"a": 1, "ключ": "значение", "": "empty", "n": "a\0b"}), True),
    ("json-wrong-type", {"state": {"cfg": 5}},
     r"cfg: wrote \S+/cfg.json \(delta version \d+\)", ("cfg.json", 5), True),
    # (as large as the shadow's 8 KB state takes back: a larger config is
    # written but its report is refused with 413 and left out of reported,
    # tests/test_shadow_refused.py)
    ("json-large-array", {"state": {"cfg": {"big": [0] * 3500}}},
     r"cfg: wrote \S+/cfg.json \(delta version \d+\)", ("cfg.json", {"big": [0] * 3500}),
     True),
    # A key of no service here is left for its owner, in desired.
    ("unknown-service-and-cfg", {"state": {"nosuch": {"a": 1}, "cfg": {"big": None, "b": 2}}},
     r"shadow Corpus1: reported cfg; cleared desired cfg$", ("cfg.json", {"b": 2}), True),
    ("json-types-at-every-level", {"state": {"cfg": {"x": {"y": [1, "two", True, [],
                                                               {"z": 1.5}]}}}},
     r"cfg: wrote \S+/cfg.json \(delta version \d+\)",
     ("cfg.json", {"b": 2, "x": {"y": [1, "two", True, [], {"z": 1.5}]}}), True),
    ("json-null-in-array", {"state": {"cfg": {"x": [1, None]}}},
     REFUSED % ("cfg", "the config holds null inside an array, which a shadow cannot hold"),
     None, True),
    ("shell-null", {"state": {"env": None}}, r"env: wrote \S+/env.sh \(delta version \d+\)",
     ("env.sh", b""), True),
    ("plaintext-delete", {"state": {"motd": "DELETE"}},
     r"motd: wrote \S+/motd.txt \(delta version \d+\)", ("motd.txt", b""), True),
    # (after the updates above, which moved the shadow's version on)
    ("older-version", lambda v: {"version": v - 3, "state": {"cfg": {"a": 2}}},
     r"ignoring delta version \d+, older than \d+ already handled", None, False),
    ("version-string", lambda v: {"version": str(v + 5), "state": {"cfg": {"a": 2}}},
     r"ignoring delta version 0, older than \d+ already handled", None, False),
    ("version-true", lambda v: {"version": True, "state": {"cfg": {"a": 2}}},
     r"ignoring delta version 0, older than \d+ already handled", None, False),
    ("version-negative", lambda v: {"version": -v, "state": {"cfg": {"a": 2}}},
     r"ignoring delta version -\d+, older than \d+ already handled", None, False),
]


@pytest.fixture(scope="module")
def daemon_b(tmp_path_factory, pki, broker):
    """Daemon B, synced, with the good services and every bad definition in its
    --services directory; yields (daemon, emulator, services dir, outfile dir)."""
    tmp = tmp_path_factory.mktemp("corpus-b")
    services, out = tmp / "services", tmp / "out"
    for path in (services, out, out / "real", out / "sub"):
        os.makedirs(str(path))
    notify = "cat >> %s; echo >> %s" % (out / "notified", out / "notified")
    for key, outfile, fmt in (("cfg", out / "cfg.json", "JSON"), ("env", out / "env.sh", "SHELL"),
                              ("motd", out / "motd.txt", "PLAINTEXT"),
                              ("dotdot", out / "sub" / ".." / "dotdot.json", "JSON"),
                              ("linked", out / "linked.json", "JSON"),
                              ("rel", "rel.conf", "JSON")):
        (services / (key + ".json")).write_text(_definition(
            key=key, outfile=str(outfile), outformat=fmt, notifycmd=notify))
    os.symlink("real/target.json", str(out / "linked.json"))
    for name, content, _text in DEFINITION_CASES:
        path = str(services / name)
        if callable(content):
            content(path)
        elif content is not None:
            with open(path, "wb") as f:
                f.write(content if isinstance(content, bytes) else content.encode())
    emulator = Emulator(broker.plain_port, ca=pki, workdir=str(tmp / "emulator"),
                        tick_interval=0.2).start()
    emulator.set_desired(THING, {"cfg": {"a": 1}, "env": {"A": "1"}, "motd": "hello",
                                 "dotdot": {"d": 1}, "linked": {"l": 1}, "rel": {"r": 1}})
    store = make_certstore(str(tmp / "certstore"), "localhost:%d" % broker.tls_port,
                           [("corpus-b", *pki.issue("corpus-b"))])
    d = None
    try:
        d = start_daemon(tmp, pki, "corpus-b", ["--services=%s:%s" % (THING, services),
                                                "--updates=%s:%s" % (THING, tmp / "updates")],
                         store)
        since(d, 0, r"shadow Corpus1: (reported|cleared desired) ")
        yield d, emulator, str(services), out
    finally:
        if d is not None:
            d.close()
        emulator.stop()


@pytest.mark.parametrize("name, content, text", DEFINITION_CASES,
                         ids=[c[0] for c in DEFINITION_CASES])
def test_service_definition(daemon_b, name, content, text):
    d, _emulator, services, _out = daemon_b
    log = d.log()
    lines = lines_with(log, os.path.join(services, name) + ": ")
    assert len(lines) == 1, lines
    assert lines[0].startswith("ERROR: ") and text in lines[0], lines[0]
    assert "INFO: shadow Corpus1: services %s; updates from " % ", ".join(GOOD_SERVICES) in log


def test_outfiles_of_good_definitions_in_odd_places(daemon_b):
    d, _emulator, _services, out = daemon_b
    assert json.loads((out / "dotdot.json").read_text()) == {"d": 1}
    assert os.path.islink(str(out / "linked.json"))  # replaced at the link's target
    assert json.loads((out / "real" / "target.json").read_text()) == {"l": 1}
    workdir = os.path.dirname(str(out))
    assert json.loads(_text(os.path.join(workdir, "rel.conf"))) == {"r": 1}
    assert "Traceback" not in d.log()


@pytest.fixture(scope="module")
def shadow_run(daemon_b):
    """Each delta in turn: {case id: (log after it, outfile contents before, after)}."""
    d, emulator, _services, out = daemon_b
    results = {}

    def outfiles():
        return {name: (out / name).read_bytes() for name in ("cfg.json", "env.sh", "motd.txt")}

    for case, delta, line, _after, update in SHADOW_CASES:
        version = emulator.get_shadow(THING)["version"]
        if callable(delta):
            delta = delta(version)
        if isinstance(delta, dict):
            payload = json.dumps(dict({"version": version}, **delta),
                                 separators=(",", ":")).encode()
        else:
            payload = delta.replace(b"VERSION", str(version).encode())
        before = outfiles()
        offset = len(d.log())
        emulator.publish(DELTA, payload)
        since(d, offset, line)
        if update:
            since(d, offset, r"shadow Corpus1: (reported|cleared desired) ")
        results[case] = (d.log()[offset:], before, outfiles())
    # The last word: the daemon still follows the shadow.
    emulator.set_desired(THING, {"motd": "still here"})
    wait_until(lambda: (out / "motd.txt").read_text() == "still here", 15, "motd written")
    return results


@pytest.mark.parametrize("case, delta, line, after, update", SHADOW_CASES,
                         ids=[c[0] for c in SHADOW_CASES])
def test_shadow_document(shadow_run, daemon_b, case, delta, line, after, update):
    log, before, now = shadow_run[case]
    assert re.search(line, log, re.M), log
    assert "Traceback" not in log
    if after is None:
        assert now == before, "an outfile changed"
    else:
        name, content = after
        assert (now[name] if isinstance(content, bytes) else json.loads(now[name])) == content
        assert all(now[n] == before[n] for n in now if n != name)
    d = daemon_b[0]
    assert d.proc.poll() is None


# == update files ===============================================================
#
# Local changes dropped into daemon B's --updates directory, after its shadow
# cases: each refused one goes to failed/ with its line.

UPDATE_CASES = [
    # (name, content or maker, log text)
    ("other.deep", b'{"d":' * 960 + b"1" + b"}" * 960, "the value is nested more than 32 deep"),
    ("other.null-in-array", b'{"x": [1, null]}',
     "the value holds null inside an array, which a shadow cannot hold"),
    ("cfg.deep", b'{"d":' * 960 + b"1" + b"}" * 960, "the config is nested more than 32 deep"),
    ("cfg.not-json", b"{x", "not valid JSON: "),
    ("cfg.not-utf8", b'{"a": "\xff"}', "not valid JSON: "),
    (".hidden", b"{}", "the file name does not start with a shadow key"),
    ("env.path", b'{"PATH": "/tmp/evil"}', "key 'PATH' is a name " + FORBIDDEN),
    ("motd.symlink", _symlink, "not a regular file"),
    # Taken, but the shadow refuses to report them (each then sent alone).
    ("other.too-deep-for-the-shadow", b'{"a": {"b": {"c": {"d": {"e": 1}}}}}',
     "the shadow cannot take it: 400 JSON contains too many levels of nesting; maximum is 6"),
    ("blob.over-8kb", b'{"data": "' + b"x" * 9000 + b'"}',
     "the shadow cannot take it: 413 The payload exceeds the maximum size allowed"),
]


@pytest.fixture(scope="module")
def updates_run(daemon_b, shadow_run):
    d = daemon_b[0]
    updates = os.path.join(os.path.dirname(str(daemon_b[3])), "updates")
    for name, content, _text in UPDATE_CASES:
        _drop(updates, daemon_b[3], name, content)  # (a symlink's target: out/secret)
    paths = [os.path.join(updates, "new", n) + ":" for n, _c, _t in UPDATE_CASES]
    wait_until(lambda: all(lines_with(d.log(), p) for p in paths), 20, "every update file")
    return d.log(), updates


@pytest.mark.parametrize("name, content, text", UPDATE_CASES, ids=[c[0] for c in UPDATE_CASES])
def test_update_file(updates_run, name, content, text):
    log, updates = updates_run
    (line,) = lines_with(log, os.path.join(updates, "new", name) + ":")
    assert line.startswith("ERROR: ") and text in line and line.endswith("moved to failed/"), \
        line
    assert name in os.listdir(os.path.join(updates, "failed"))
    assert "Traceback" not in log


# == command-line values =======================================================
#
# Each: the real chariotd.py with one hostile value; exit status 2 and one line
# on stderr naming the option and what is wrong, before anything connects.

CLI_BASE = ["--cacert=/nonexistent/ca", "--certstore=/nonexistent/store"]
CLI_CASES = [
    # (id, arguments (str or bytes), text of the one line)
    ("clientid-newline", ["--clientid=gw\nINFO: forged"],
     "--clientid: 'gw\\nINFO: forged' contains the control character U+000A"),
    ("clientid-129-bytes", ["--clientid=" + "g" * 129], "is 129 bytes, over AWS IoT Core's 128"),
    ("clientid-dollar", ["--clientid=$GEN/x"], "starts with '$'"),
    ("clientid-not-utf8", [b"--clientid=gw\xff"], "--clientid: 'gw\\udcff' is not UTF-8 text"),
    ("clientid-empty", ["--clientid="], "--clientid is mandatory"),
    ("thing-hash", ["--clientid=x", "--services=Gw#:/tmp"], "--services: 'Gw#' is not a valid"),
    ("thing-plus", ["--clientid=x", "--updates=+:/tmp"], "--updates: '+' is not a valid"),
    ("thing-newline", ["--clientid=x", "--defaultshadow=Gw\n1:true"],
     "--defaultshadow: 'Gw\\n1' is not a valid"),
    ("thing-129", ["--clientid=x", "--services=%s:/tmp" % ("g" * 129)], "is not a valid thing"),
    ("shadow-name-slash", ["--clientid=x", "--services=Gw1/a/b:/tmp"],
     "--services: 'Gw1/a/b' is not THING or THING/SHADOW"),
    ("shadow-name-wildcard", ["--clientid=x", "--services=Gw1/#:/tmp"],
     "--services: 'Gw1/#' is not a valid"),
    ("defender-thing", ["--clientid=x", "--defender=Gw+"], "--defender: 'Gw+'"),
    ("keepalive-huge", ["--clientid=x", "--keepalive=99999999"],
     "--keepalive: 99999999 is out of range: 1 to 1200 seconds"),
    ("keepalive-float", ["--clientid=x", "--keepalive=1e3"], "--keepalive: '1e3' is not a whole"),
    ("poll-nan", ["--clientid=x", "--poll-interval=nan"], "--poll-interval: 'nan' is out of range"),
    ("rate-inf", ["--clientid=x", "--publish-rate=inf"], "--publish-rate: 'inf' is out of range"),
    ("concurrency-0", ["--clientid=x", "--default-message-concurrency=0"],
     "--default-message-concurrency: '0' is out of range"),
    ("messages-empty", ["--clientid=x", "--messages="], "--messages: empty value"),
    ("messages-dev-null", ["--clientid=x", "--messages=/dev/null"],
     "--messages: /dev/null is not a directory"),
    ("commands-empty", ["--clientid=x", "--commands="], "--commands: empty value"),
    ("status-file-empty", ["--clientid=x", "--status-file="], "--status-file: empty value"),
    ("fleetprov-empty", ["--clientid=x", "--fleetprov="], "--fleetprov: empty value"),
    ("will-wildcard", ["--clientid=x", "--last-will-topic=dev/#", "--last-will-payload=x"],
     "--last-will-topic: 'dev/#': contains a wildcard"),
    ("will-reserved", ["--clientid=x", "--last-will-topic=$aws/x", "--last-will-payload=x"],
     "--last-will-topic: '$aws/x': a reserved topic"),
    ("tunnel-port-0", ["--clientid=x", "--tunnelmappings=Gw1:SSH=0"],
     "--tunnelmappings: SSH: port '0' is not 1 to 65535"),
    ("tunnel-port-text", ["--clientid=x", "--tunnelmappings=Gw1:SSH=ssh"],
     "--tunnelmappings: SSH: port 'ssh' is not 1 to 65535"),
    ("unknown-option", ["--clientid=x", "--insecure"], "unrecognized arguments: --insecure"),
]


@pytest.mark.parametrize("case, args, text", CLI_CASES, ids=[c[0] for c in CLI_CASES])
def test_command_line_value(case, args, text):
    argv = [os.fsencode(a) if isinstance(a, str) else a for a in CLI_BASE + args]
    proc = subprocess.run([sys.executable, CHARIOTD] + argv, capture_output=True, timeout=20)
    stderr = proc.stderr.decode("utf-8", "backslashreplace")
    assert proc.returncode == 2, stderr
    (line,) = stderr.splitlines()
    assert line.startswith("chariotd: ") and text in line, line
    assert proc.stdout == b""


def test_a_fleetprov_file_nested_too_deep_is_one_line_and_status_2(tmp_path):
    config = tmp_path / "fleetprov.json"
    config.write_bytes(b"[" * DEEP + b"]" * DEEP)
    proc = subprocess.run([sys.executable, CHARIOTD, "--clientid=x", "--cacert=/nonexistent/ca",
                           "--certstore=%s" % (tmp_path / "store"), "--fleetprov=%s" % config],
                          capture_output=True, text=True, timeout=20)
    assert proc.returncode == 2, proc.stderr
    (line,) = proc.stderr.splitlines()
    assert line.startswith("ERROR: --fleetprov: %s is not valid JSON: maximum recursion depth "
                           "exceeded" % config), line
