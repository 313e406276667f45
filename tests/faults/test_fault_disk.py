"""Disk faults on small tmpfs mounts the tests make: the outfile directory
full or read-only (the previous config stays intact, the failure is logged
and retried), `failed/` unwritable, the spool's filesystem full."""

import json
import os

from messagehelpers import drop, listing, spool, topics, wait_empty
from process import wait_until
from shadowhelpers import THING, json_service, read_file, shadow_state, wait_synced


def service_on(tmp_path, directory):
    outfile = os.path.join(directory, "svc.json")
    notified = str(tmp_path / "notified")
    json_service(tmp_path / "services", "svc", key="svc", outfile=outfile, outformat="JSON",
                 notifycmd="cat > %s" % notified)
    return outfile, notified


def reported(emulator):
    return (shadow_state(emulator) or {}).get("reported", {}).get("svc")


def outfile_fault(tmp_path, emulator, certstore, daemon_factory, tmpfs, fault, errno_text):
    fs = tmpfs(tmp_path / "etc", size_kb=64, inodes=64)
    outfile, notified = service_on(tmp_path, fs.path)
    emulator.update_shadow(THING, {"reported": {"svc": {"v": 1}}})
    d = daemon_factory("--services=%s:%s" % (THING, tmp_path / "services"), certstore=certstore)
    wait_synced(d)
    wait_until(lambda: os.path.exists(outfile) and json.loads(read_file(outfile)) == {"v": 1},
               what="the first outfile")
    undo = fault(fs)
    emulator.set_desired(THING, {"svc": {"v": 2, "pad": "x" * 8000}})
    d.wait_log(r"svc: desired state|delta version \d+ not applied: cannot write %s: %s; left in "
               r"desired" % (outfile, errno_text))
    # The previous config is intact, still reported, the change still desired.
    assert json.loads(read_file(outfile)) == {"v": 1}
    assert [n for n in os.listdir(fs.path) if n.startswith(".svc")] == []
    assert reported(emulator) == {"v": 1}
    assert shadow_state(emulator)["desired"]["svc"]["v"] == 2
    # Retried: a second attempt is logged while the fault lasts...
    failure = "not applied: cannot write %s: %s; left in desired" % (outfile, errno_text)
    wait_until(lambda: d.log().count(failure) >= 2, 20, "a second attempt")
    undo()
    # ...and once the disk is back, the change is applied without any help.
    want = {"v": 2, "pad": "x" * 8000}
    wait_until(lambda: json.loads(read_file(outfile)) == want, 40, "the change applied")
    wait_until(lambda: reported(emulator) == want
               and "svc" not in shadow_state(emulator).get("desired", {}), 10,
               "reported, desired cleared")
    wait_until(lambda: os.path.exists(notified) and read_file(notified).strip()
               and json.loads(read_file(notified)) == want, what="notified")
    assert d.proc.poll() is None
    assert d.stop() == 0


def test_outfile_directory_full(tmp_path, emulator, certstore, daemon_factory, tmpfs):
    def fault(fs):
        fillers = fs.fill()
        return lambda: fs.free(fillers)

    outfile_fault(tmp_path, emulator, certstore, daemon_factory, tmpfs, fault,
                  "No space left on device")


def test_outfile_directory_read_only(tmp_path, emulator, certstore, daemon_factory, tmpfs):
    def fault(fs):
        fs.readonly()
        return lambda: fs.readonly(False)

    outfile_fault(tmp_path, emulator, certstore, daemon_factory, tmpfs, fault,
                  "Read-only file system")


def test_failed_directory_unwritable(tmp_path, certstore, daemon_factory, observer, tmpfs):
    d = spool(tmp_path)
    fs = tmpfs(os.path.join(d, "failed"), size_kb=16, inodes=16)
    fs.readonly()
    daemon = daemon_factory("--messages=" + d, certstore=certstore)
    drop(d, "1-bad", raw=b"not json")
    drop(d, "2-good", {"topic": "disk/good", "payload": {"n": 2}})
    # (A mount point: the rename fails with EXDEV rather than EROFS.)
    daemon.wait_log(r"cannot move 1-bad to failed/ \(.+\); deleting it")
    observer.wait_topic("disk/good")
    wait_empty(d)
    assert listing(d, "failed") == []
    drop(d, "3-good", {"topic": "disk/good", "payload": {"n": 3}})
    observer.wait_topic("disk/good", 2)
    assert daemon.proc.poll() is None
    assert daemon.stop() == 0


def test_spool_filesystem_full(tmp_path, certstore, daemon_factory, observer, tmpfs):
    fs = tmpfs(tmp_path / "spoolfs", size_kb=512, inodes=200)
    d = spool(tmp_path / "spoolfs")
    for i in range(50):
        drop(d, "m%03d" % i, {"topic": "full/m", "payload": {"id": i}})
    drop(d, "bad", raw=b"{")
    fillers = fs.fill()
    daemon = daemon_factory("--messages=" + d, certstore=certstore)
    observer.wait_for(lambda ms: len(topics(observer, "full/")) >= 50, what="all 50 messages")
    wait_empty(d)
    assert listing(d, "failed") == ["bad"]
    # Deleting the sent files freed space: writers can go on, and are served.
    fs.free(fillers)
    drop(d, "after", {"topic": "full/after", "payload": {}})
    observer.wait_topic("full/after")
    assert daemon.proc.poll() is None
    assert daemon.stop() == 0


def test_spool_on_a_full_filesystem_without_its_subdirectories(tmp_path, certstore,
                                                                daemon_factory, observer, tmpfs):
    fs = tmpfs(tmp_path / "spoolfs", size_kb=64, inodes=16)
    d = os.path.join(fs.path, "msgs")
    os.makedirs(os.path.join(d, "new"))
    with open(os.path.join(d, "new", "1-bad"), "w") as f:
        f.write("{")
    with open(os.path.join(d, "new", "2-good"), "w") as f:
        json.dump({"topic": "nosub/good", "payload": {}}, f)
    fs.fill()
    daemon = daemon_factory("--messages=" + d, certstore=certstore)
    # tmp/ and failed/ cannot be made: said once each, and the spool still works.
    daemon.wait_log(r"%s: cannot make tmp/ \(No space left on device\); carrying on" % d)
    daemon.wait_log(r"%s: cannot make failed/ \(No space left on device\); carrying on" % d)
    observer.wait_topic("nosub/good")
    daemon.wait_log(r"cannot move 1-bad to failed/ \(No such file or directory\); deleting it")
    wait_empty(d)
    assert daemon.proc.poll() is None and "Traceback" not in daemon.log()
    assert daemon.stop() == 0


def test_spool_whose_new_directory_cannot_be_made(tmp_path, certstore, daemon_factory, tmpfs):
    fs = tmpfs(tmp_path / "spoolfs", size_kb=16, inodes=8)
    fs.readonly()
    d = os.path.join(fs.path, "msgs")
    daemon = daemon_factory("--messages=" + d, certstore=certstore)
    daemon.wait_log(r"cannot start messages: Read-only file system: %s" % d)
    assert daemon.wait_exit(20) == 1
    assert "Traceback" not in daemon.log()
