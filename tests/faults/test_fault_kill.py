"""Process faults in the daemon itself: kill -9 at 20 random moments during a
message backlog and during shadow changes, and a broker restart in the middle
of shadow, update-file and message traffic. Nothing is lost, no outfile is
ever half-written or missing, and the reported state matches the files."""

import json
import os
import random

from messagehelpers import backlog, ids, listing, spool, topics, wait_empty
from observer import Observer
from process import wait_until
from shadowhelpers import THING, drop_update, json_service, read_file, shadow_state, wait_synced

KILLS = 20
SEED = int(os.environ.get("CHARIOTD_FAULT_SEED", "0")) or random.randrange(1 << 30)


def test_kill_9_at_20_random_moments_of_a_backlog_loses_nothing(tmp_path, certstore,
                                                                  daemon_factory, observer):
    rng = random.Random(SEED)
    d = spool(tmp_path)
    backlog(d, "kill20/", 600)
    daemon = daemon_factory("--messages=" + d, "--publish-rate=300", certstore=certstore,
                            start=False)
    moments = []
    for _ in range(KILLS):
        daemon.start()
        seen = len(topics(observer, "kill20/"))
        if rng.random() < 0.2:
            # Before or while connecting: kill as soon as it has logged anything.
            daemon.wait_log(r"\S", timeout=15)
            moments.append("starting")
        else:
            more = rng.randint(1, 25)
            observer.wait_for(lambda ms, n=seen + more: len(topics(observer, "kill20/")) >= n,
                              timeout=15, what="%d more messages (seed %d)" % (more, SEED))
            moments.append(more)
        daemon.kill()
        assert listing(d, "failed") == [] and listing(d, "tmp") == []
    assert len(listing(d, "new")) > 0, "the backlog ran out before the last kill"
    daemon.start()
    observer.wait_for(lambda ms: ids(observer, "kill20/") == set(range(600)), timeout=30,
                      what="every message after %d kills at %s (seed %d)" % (KILLS, moments, SEED))
    wait_empty(d)
    assert listing(d, "failed") == []
    assert daemon.stop() == 0


def test_kill_9_at_20_random_moments_of_shadow_changes(tmp_path, emulator, certstore,
                                                         daemon_factory):
    rng = random.Random(SEED)
    outfile = str(tmp_path / "svc.json")
    notified = str(tmp_path / "notified")
    json_service(tmp_path / "services", "svc", key="svc", outfile=outfile, outformat="JSON",
                 notifycmd="cat >> %s; echo >> %s" % (notified, notified))
    daemon = daemon_factory("--services=%s:%s" % (THING, tmp_path / "services"),
                            certstore=certstore, start=False)
    expected = {}
    for round_ in range(KILLS):
        daemon.start()
        wait_synced(daemon)
        # A burst of changes, each a delta of its own; kill somewhere inside it.
        burst = rng.randint(1, 4)
        for i in range(burst):
            change = {"r%d_%d" % (round_, i): round_ * 10 + i, "last": round_}
            expected.update(change)
            emulator.set_desired(THING, {"svc": change})
        wait = rng.choice(["nothing", "a write", "all writes"])
        if wait == "a write":
            daemon.wait_log(r"svc: wrote")
        elif wait == "all writes":
            daemon.wait_log(r"svc: wrote .*\n(.*\n)*.*reported svc")
        daemon.kill()
        # Never half-written, never missing once it has been written.
        if os.path.exists(outfile) or round_ > 0:
            config = json.loads(read_file(outfile))
            assert set(config) <= set(expected), config
    daemon.start()
    # After the last restart the pending desired state is applied and reported.
    wait_until(lambda: (shadow_state(emulator) or {}).get("reported", {}).get("svc") == expected
               and "svc" not in shadow_state(emulator).get("desired", {}), 15,
               "reported == every change, desired cleared (seed %d): %r, expected %r\n%s"
               % (SEED, shadow_state(emulator), expected, daemon.log(all_runs=True)[-3000:]))
    daemon.wait_log(r"reported svc|synced", timeout=15)
    wait_until(lambda: json.loads(read_file(outfile)) == expected, what="outfile == reported")
    # A temporary file of a write that a kill interrupted is gone with the next write.
    assert [n for n in os.listdir(tmp_path) if ".chariotd-" in n] == []
    # The last notify saw the final config.
    wait_until(lambda: json.loads(read_file(notified).strip().splitlines()[-1]) == expected,
               what="the last notify run got the final config")
    assert daemon.stop() == 0


def test_broker_restart_mid_traffic(tmp_path, broker, emulator, certstore, daemon_factory,
                                   observer):
    msgs = spool(tmp_path)
    backlog(msgs, "mid/", 300)
    outfile = str(tmp_path / "svc.json")
    updates = str(tmp_path / "updates")
    json_service(tmp_path / "services", "svc", key="svc", outfile=outfile, outformat="JSON",
                 notifycmd="true")
    daemon = daemon_factory("--services=%s:%s" % (THING, tmp_path / "services"),
                            "--updates=%s:%s" % (THING, updates), "--messages=" + msgs,
                            "--publish-rate=100", certstore=certstore)
    wait_synced(daemon)
    observer.wait_for(lambda ms: len(topics(observer, "mid/")) >= 50, what="50 messages")
    emulator.set_desired(THING, {"svc": {"before": 1}})
    broker.restart()
    after = Observer(broker.plain_port)
    try:
        assert emulator.wait_ready(10)
        # Changes made while the daemon is reconnecting, from both sides.
        emulator.set_desired(THING, {"svc": {"cloud": 2}})
        drop_update(updates, "svc", json.dumps({"local": 3}))
        daemon.wait_log("connection to .* lost")
        want = {"before": 1, "cloud": 2, "local": 3}
        wait_until(lambda: (shadow_state(emulator) or {}).get("reported", {}).get("svc") == want
                   and "svc" not in shadow_state(emulator).get("desired", {}), 30,
                   "shadow consistent after the restart")
        assert json.loads(read_file(outfile)) == want
        after.wait_for(lambda ms: ids(observer, "mid/") | ids(after, "mid/") == set(range(300)),
                       timeout=30, what="every message")
        wait_empty(msgs)
        assert listing(msgs, "failed") == [] and listing(updates, "failed") == []
        assert daemon.proc.poll() is None
    finally:
        after.close()
