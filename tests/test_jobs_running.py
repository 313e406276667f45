"""--jobs while a step runs, end to end: what --status-file and `chariotd
--status` show of it, that the rest of the daemon carries on meanwhile, that
a step flooding its output costs the daemon no memory, that no step
outlives the daemon, and that a job the service times out (CreateJob's
in-progress timeout) has its step killed. The handlers are tests/jobhelpers.py's `act`."""

import json
import os
import subprocess
import sys

import pytest
from jobhelpers import THING, doc, finished, handler_directory, start, step
from process import CHARIOTD, alive, drop_action, read_status, wait_until
from shadowhelpers import json_service, read_file, wait_synced

from emulator.cloud import Emulator


@pytest.fixture
def handlers(tmp_path):
    yield from handler_directory(tmp_path)


def wait_status(path, condition, what):
    return wait_until(lambda: (lambda s: s is not None and condition(s) and s)(read_status(path)),
                      15, what)


def show(path):
    return subprocess.run([sys.executable, CHARIOTD, "--status", path], check=True,
                          stdout=subprocess.PIPE, text=True).stdout


def test_the_status_file_shows_the_running_job_until_it_finishes(
        tmp_path, emulator, certstore, daemon_factory, handlers):
    status = str(tmp_path / "status.json")
    start(daemon_factory, certstore, handlers, "--status-file=" + status)
    wait_status(status, lambda s: s.get("jobs") == {THING: None}, "no job running")
    assert "jobs for Gw1: none running" in show(status)

    gate = os.path.join(handlers.records, "gate")
    emulator.queue_job(THING, "fw-7", doc(step("prepare"), step("install",
                                                                 args=["wait=" + gate])))
    wait_until(lambda: len(handlers.runs()) == 2, 15, "the second step to start")
    pid = handlers.runs()[1]["pid"]
    s = wait_status(status, lambda s: (s["jobs"][THING] or {}).get("pid") == pid,
                    "the second step in the status file")
    job = s["jobs"][THING]
    assert (job["job_id"], job["step"], job["step_number"], job["steps"]) == \
        ("fw-7", "install", 2, 2)
    assert not job["final_step"] and job["reporting"] is None
    assert s["children_running"] == 1
    out = show(status)
    assert "job fw-7 on Gw1 since %s (" % job["started"] in out
    assert "step 2 of 2 'install', pid %d, running for " % pid in out

    open(gate, "w").close()
    assert finished(emulator, "fw-7")["status"] == "SUCCEEDED"
    s = wait_status(status, lambda s: s["jobs"] == {THING: None}, "no job running again")
    assert s["children_running"] == 0
    assert "jobs for Gw1: none running" in show(status)


def test_the_daemon_carries_on_while_a_step_runs(tmp_path, emulator, observer, certstore,
                                                 daemon_factory, handlers):
    services, messages = tmp_path / "services", str(tmp_path / "messages")
    motd = str(tmp_path / "motd")
    json_service(services, "motd", key="motd", outfile=motd, outformat="PLAINTEXT",
                 notifycmd="")
    d = start(daemon_factory, certstore, handlers, "--services=%s:%s" % (THING, services),
              "--messages=" + messages)
    wait_synced(d)
    gate = os.path.join(handlers.records, "gate")
    emulator.queue_job(THING, "long", doc(step("long", args=["wait=" + gate])))
    handlers.wait_runs(1)
    # The step runs until the gate opens; a shadow change and a message file
    # are handled meanwhile.
    emulator.set_desired(THING, {"motd": "hello while a job runs"})
    wait_until(lambda: os.path.exists(motd) and read_file(motd) == "hello while a job runs",
               15, "the shadow change applied")
    drop_action(messages, "m1.json", json.dumps({"topic": "meanwhile/t", "payload": {"n": 1}}))
    assert observer.wait_topic("meanwhile/t")[0].json() == {"n": 1}
    assert emulator.job_execution(THING, "long")["status"] == "IN_PROGRESS"
    open(gate, "w").close()
    assert finished(emulator, "long")["status"] == "SUCCEEDED"


FLOOD = """#!/bin/sh
# 100 MB on each of stdout and stderr, then a last line on each, and a failure.
head -c 100000000 /dev/zero | tr '\\0' o
head -c 100000000 /dev/zero | tr '\\0' e >&2
echo "the end of stdout"
echo "the end of stderr" >&2
exit 3
"""


def memory_kib(pid, field):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise AssertionError("no %s in /proc/%d/status" % (field, pid))


def test_a_step_flooding_its_output_keeps_the_daemon_small(emulator, certstore,
                                                           daemon_factory, handlers):
    with open(os.path.join(handlers.dir, "flood.sh"), "w") as f:
        f.write(FLOOD)
    os.chmod(os.path.join(handlers.dir, "flood.sh"), 0o755)
    d = start(daemon_factory, certstore, handlers)
    pid = d.proc.pid
    before = memory_kib(pid, "VmHWM")  # the peak so far, idle and connected
    emulator.queue_job(THING, "flood", doc(step("flood", handler="flood.sh"),
                                           includeStdOut=True))
    during = []

    def ended():
        during.append(memory_kib(pid, "VmRSS"))
        e = emulator.job_execution(THING, "flood")
        return e["status"] not in ("QUEUED", "IN_PROGRESS") and e
    e = wait_until(ended, 120, "the flood to end")
    peak = memory_kib(pid, "VmHWM")
    assert e["status"] == "FAILED"
    details = e["statusDetails"]
    assert details["reason"] == "step 'flood' exited with status 3"
    # The tail of each: "..." and the last 1,024 characters or so.
    assert details["stderr"].startswith("...") and \
        details["stderr"].endswith("eeethe end of stderr"), details["stderr"][-40:]
    assert details["stdout"].startswith("...") and \
        details["stdout"].endswith("ooothe end of stdout"), details["stdout"][-40:]
    assert len(details["stderr"]) <= 1024 and len(details["stdout"]) <= 1024
    # 200 MB went through; the daemon kept a tail of each stream, nothing more.
    assert len(during) > 3, during
    assert peak - before < 8 * 1024, (before, peak, max(during))


STUBBORN = """#!/bin/sh
# Notes each SIGTERM and carries on; only SIGKILL ends it.
trap 'echo TERM >>"$0.terms"' TERM
echo $$ >"$0.pid"
while :; do sleep 0.1; done
"""


def test_a_step_that_ignores_sigterm_does_not_outlive_the_daemon(
        emulator, certstore, daemon_factory, handlers):
    stubborn = os.path.join(handlers.dir, "stubborn.sh")
    with open(stubborn, "w") as f:
        f.write(STUBBORN)
    os.chmod(stubborn, 0o755)
    d = start(daemon_factory, certstore, handlers)
    emulator.queue_job(THING, "stubborn", doc(step("stubborn", handler="stubborn.sh")))
    pid = int(wait_until(lambda: os.path.exists(stubborn + ".pid") and read_file(stubborn + ".pid"),
                         15, "the step to start"))
    assert d.stop(timeout=20) == 0
    d.wait_log("stopping job stubborn's handler")
    wait_until(lambda: not alive(pid), 10, "the handler to be killed")
    assert read_file(stubborn + ".terms") == "TERM\n"  # one SIGTERM, then SIGKILL
    assert emulator.job_execution(THING, "stubborn")["status"] == "IN_PROGRESS"


def test_a_job_the_service_times_out_has_its_step_killed(broker, certstore, daemon_factory,
                                                         handlers):
    # CreateJob's timeoutConfig: 3 minutes IN_PROGRESS, a minute lasting 1 s here.
    with Emulator(broker.plain_port, tick_interval=0.1, job_minute=1.0).start() as emulator:
        d = start(daemon_factory, certstore, handlers)
        emulator.queue_job(THING, "slow", doc(step("slow", args=["sleep=600"])),
                           in_progress_timeout=3)
        run = handlers.wait_runs(1)[0]
        e = finished(emulator, "slow")
        assert e["status"] == "TIMED_OUT"
        d.wait_log("job slow on Gw1 is .* in the cloud; stopping it")
        wait_until(lambda: not alive(run["pid"]), 10, "the step to be killed")
        # The device reported nothing over it; the service refuses any update now.
        emulator.queue_job(THING, "next", doc(step("next")))
        assert finished(emulator, "next")["status"] == "SUCCEEDED"
        assert emulator.job_execution(THING, "slow")["status"] == "TIMED_OUT"
        emulator.publish("$aws/things/%s/jobs/slow/update" % THING,
                         {"status": "SUCCEEDED", "clientToken": "late"})
        rejected = emulator.wait_topic("$aws/things/%s/jobs/slow/update/rejected" % THING)
        assert rejected[-1].json()["code"] == "InvalidStateTransition"
        assert rejected[-1].json()["executionState"]["status"] == "TIMED_OUT"
        assert len(handlers.runs()) == 2


def test_a_throttled_outcome_is_sent_again(emulator, certstore, daemon_factory, handlers):
    d = start(daemon_factory, certstore, handlers)
    gate = os.path.join(handlers.records, "gate")
    emulator.queue_job(THING, "busy", doc(step("busy", args=["wait=" + gate, "err=last words",
                                                              "exit=4"])))
    handlers.wait_runs(1)
    emulator.throttle_jobs(THING, 1)  # the outcome
    open(gate, "w").close()
    e = finished(emulator, "busy", timeout=30)
    assert e["status"] == "FAILED"
    assert e["statusDetails"]["stderr"] == "last words"  # the details were kept
    assert len(handlers.runs()) == 1  # and the job did not run again
    assert d.log().count("update refused for now (RequestThrottled); again in 5s") == 1


@pytest.mark.parametrize("end", ["removed", "force-deleted"])
def test_a_job_removed_or_deleted_in_the_cloud_has_its_step_stopped(
        emulator, certstore, daemon_factory, handlers, end):
    d = start(daemon_factory, certstore, handlers)
    emulator.queue_job(THING, "gone", doc(step("long", args=["sleep=600"])))
    pid = handlers.wait_runs(1)[0]["pid"]
    if end == "removed":
        emulator.remove_job(THING, "gone")
    else:
        emulator.delete_job(THING, "gone", force=True)
    d.wait_log("job gone on Gw1 is .* in the cloud; stopping it")
    wait_until(lambda: not alive(pid), 10, "the step to be stopped")
    emulator.queue_job(THING, "next", doc(step("next")))
    assert finished(emulator, "next")["status"] == "SUCCEEDED"
    if end == "removed":
        assert emulator.job_execution(THING, "gone")["status"] == "REMOVED"
    else:
        assert emulator.job_execution(THING, "gone") is None
