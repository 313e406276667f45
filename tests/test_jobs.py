"""--jobs end to end: the real daemon, mosquitto and the emulator's Jobs service,
with the recording handler `act` of tests/jobhelpers.py."""

import os
import shutil
import signal
import tempfile
import time

import pytest
from jobhelpers import THING, doc, finished, handler_directory, start, step
from process import alive, wait_until


@pytest.fixture
def handlers(tmp_path):
    yield from handler_directory(tmp_path)


def status_of(emulator, job_id):
    return emulator.job_execution(THING, job_id)["status"]


def test_steps_run_in_order_as_argv_with_a_defined_environment(
        emulator, certstore, daemon_factory, handlers):
    emulator.queue_job(THING, "job-1", doc(step("one", args=["a b", "$HOME;x"]),
                                           step("two", args=["out=second"]),
                                           includeStdOut=True))
    d = start(daemon_factory, certstore, handlers)
    e = finished(emulator, "job-1")
    assert e["status"] == "SUCCEEDED", e
    assert e["statusDetails"]["stdout"] == "second"
    one, two = handlers.runs()
    # runAsUser (empty here) first, as the device client passes it, then args unexpanded
    assert one["argv"] == ["", "a b", "$HOME;x"]
    assert two["argv"] == ["", "out=second"]
    assert one["env"]["CHARIOTD_JOB_ID"] == "job-1"
    assert one["env"]["CHARIOTD_THING"] == THING
    assert one["env"]["CHARIOTD_JOB_STEP"] == "one"
    assert one["env"]["LANG"] == "C"
    assert "USER" not in one["env"]
    # The job's own working directory, removed after it
    assert one["cwd"] == two["cwd"] and "chariotd-job-" in one["cwd"]
    wait_until(lambda: not os.path.exists(one["cwd"]), 10, "the job's directory to go")
    assert "SUCCEEDED" in d.wait_log("job job-1 on Gw1 reported (SUCCEEDED)").group(1)


def test_a_failing_step_stops_the_job_with_the_reason_and_stderr(
        emulator, certstore, daemon_factory, handlers):
    start(daemon_factory, certstore, handlers)
    emulator.queue_job(THING, "job-2", doc(
        step("fails", args=["out=visible only with includeStdOut", "err=line one",
                            "err=line\ttwo", "exit=3"]),
        step("never"), final=step("final-never")))
    e = finished(emulator, "job-2")
    assert e["status"] == "FAILED"
    details = e["statusDetails"]
    assert details["reason"] == "step 'fails' exited with status 3"
    assert details["failedStep"] == "fails"
    assert details["stderr"] == "line one | line two"
    assert "stdout" not in details
    assert [r["argv"][-1] for r in handlers.runs()] == ["exit=3"]


def test_stderr_is_cut_to_its_last_1024_characters(emulator, certstore, daemon_factory,
                                                    handlers):
    start(daemon_factory, certstore, handlers)
    emulator.queue_job(THING, "job-3", doc(step("noisy", args=["err=" + "x" * 5000 + "END",
                                                               "out=o" * 1, "exit=1"]),
                                           includeStdOut="true"))
    details = finished(emulator, "job-3")["statusDetails"]
    assert len(details["stderr"]) == 1024 and details["stderr"].endswith("xxxEND")
    assert details["stdout"] == "o"


@pytest.mark.parametrize("ignore", ["true", True])
def test_ignore_step_failure_string_or_boolean(emulator, certstore, daemon_factory, handlers,
                                               ignore):
    start(daemon_factory, certstore, handlers)
    emulator.queue_job(THING, "job-4", doc(step("fails", args=["exit=1"],
                                                ignoreStepFailure=ignore),
                                           step("runs"), final=step("final")))
    assert finished(emulator, "job-4")["status"] == "SUCCEEDED"
    assert len(handlers.runs()) == 3


def test_final_step_runs_only_after_every_step_succeeded(emulator, certstore, daemon_factory,
                                                        handlers):
    start(daemon_factory, certstore, handlers)
    emulator.queue_job(THING, "job-5", doc(step("one"), final=step("cleanup",
                                                                   args=["out=final"])))
    assert finished(emulator, "job-5")["status"] == "SUCCEEDED"
    assert [r["argv"] for r in handlers.runs()] == [[""], ["", "out=final"]]
    emulator.queue_job(THING, "job-6", doc(step("one", args=["exit=2"]),
                                           final=step("cleanup")))
    assert finished(emulator, "job-6")["status"] == "FAILED"
    assert len(handlers.runs()) == 3


@pytest.mark.parametrize("document, reason", [
    (doc(step("x", handler="missing.sh")), "unknown handler 'missing.sh'"),
    ({"version": "2.0", "steps": []}, "unsupported job document version '2.0'"),
    (doc(step("x", ignoreStepFailure="maybe")), "'ignoreStepFailure' must be true or false"),
    (doc({"action": {"name": "x", "type": "runScript", "input": {}}}), "unknown action type"),
    (doc(step("x", args=["x" * 33000])), "over AWS's 32768"),
    ({"ToDo": "Reboot"}, "not a job document chariotd knows"),
    (doc(step("x", args=["${aws:iot:parameter:packages}"])), "unsubstituted template parameter"),
])
def test_documents_that_cannot_run_are_rejected(emulator, certstore, daemon_factory, handlers,
                                                document, reason):
    start(daemon_factory, certstore, handlers)
    emulator.queue_job(THING, "bad", document)
    e = finished(emulator, "bad")
    assert e["status"] == "REJECTED"
    assert reason in e["statusDetails"]["reason"]
    assert handlers.runs() == []


@pytest.mark.parametrize("handler, path", [
    ("../act", None), (".act", None), ("sub/act", None), ("act", "/bin"),
    ("act", "HANDLERS/../records"), ("act", "relative"), ("act", "HANDLERS/escape"),
    ("sh", "/bin"),
])
def test_malicious_handler_names_and_paths_never_run_anything(
        emulator, certstore, daemon_factory, handlers, handler, path):
    os.symlink(handlers.records, os.path.join(handlers.dir, "escape"))
    handlers.add(".act")
    os.makedirs(os.path.join(handlers.dir, "sub"))
    handlers.add("act", os.path.join(handlers.dir, "sub"))
    handlers.add("act", handlers.records)
    start(daemon_factory, certstore, handlers)
    action = step("evil", handler=handler, args=["out=ran"])
    if path is not None:
        action["action"]["input"]["path"] = path.replace("HANDLERS", handlers.dir)
    emulator.queue_job(THING, "evil", doc(action))
    assert finished(emulator, "evil")["status"] == "REJECTED"
    assert handlers.runs() == []


def test_a_path_inside_the_handler_directory_is_allowed(emulator, certstore, daemon_factory,
                                                       handlers):
    os.makedirs(os.path.join(handlers.dir, "sub"))
    handlers.add("act", os.path.join(handlers.dir, "sub"))
    start(daemon_factory, certstore, handlers)
    action = step("in sub", args=["out=x"])
    action["action"]["input"]["path"] = os.path.join(handlers.dir, "sub")
    plain = step("default path")
    plain["action"]["input"]["path"] = "default"
    emulator.queue_job(THING, "sub", doc(action, plain))
    assert finished(emulator, "sub")["status"] == "SUCCEEDED"
    assert len(handlers.runs()) == 2


def test_run_command_is_refused_without_the_flag(emulator, certstore, daemon_factory, handlers):
    start(daemon_factory, certstore, handlers)
    emulator.queue_job(THING, "cmd", doc({"action": {"name": "cmd", "type": "runCommand",
                                                     "input": {"command": "touch,/tmp/x"}}}))
    e = finished(emulator, "cmd")
    assert e["status"] == "REJECTED"
    assert "--jobs-allow-commands" in e["statusDetails"]["reason"]


def test_run_command_with_the_flag_splits_at_commas(emulator, certstore, daemon_factory,
                                                   handlers):
    act = os.path.join(handlers.dir, "act")
    start(daemon_factory, certstore, handlers, "--jobs-allow-commands")
    emulator.queue_job(THING, "cmd", doc({"action": {
        "name": "cmd", "type": "runCommand",
        "input": {"command": act + ",out=a\\,b,err=x y"}}}, includeStdOut=True))
    e = finished(emulator, "cmd")
    assert e["status"] == "SUCCEEDED", e
    assert e["statusDetails"]["stdout"] == "a,b"
    assert handlers.runs()[0]["argv"] == ["out=a,b", "err=x y"]


def test_the_old_schema(emulator, certstore, daemon_factory, handlers):
    start(daemon_factory, certstore, handlers)
    emulator.queue_job(THING, "old-1", {"operation": "act", "args": ["out=hello", "err=one"],
                                        "path": "default", "allowStdErr": 1,
                                        "includeStdOut": True})
    e = finished(emulator, "old-1")
    assert e["status"] == "SUCCEEDED", e
    assert e["statusDetails"]["stdout"] == "hello"
    assert handlers.runs()[0]["argv"] == ["out=hello", "err=one"]  # no runAsUser argument
    emulator.queue_job(THING, "old-2", {"operation": "act", "args": ["err=one", "err=two"],
                                        "allowStdErr": 1})
    e = finished(emulator, "old-2")
    assert e["status"] == "FAILED"
    assert "more than allowStdErr 1" in e["statusDetails"]["reason"]
    emulator.queue_job(THING, "old-3", {"operation": "echo", "args": ["hi"]})
    assert finished(emulator, "old-3")["status"] == "REJECTED"  # not from PATH without the flag


def test_a_step_that_overstays_its_timeout_is_killed_and_failed(
        emulator, certstore, daemon_factory, handlers):
    start(daemon_factory, certstore, handlers, "--jobs-step-timeout=1")
    emulator.queue_job(THING, "slow", doc(step("slow", args=["sleep=60"])))
    e = finished(emulator, "slow")
    assert e["status"] == "FAILED"
    assert e["statusDetails"]["reason"] == "step 'slow' timed out after 1s and was killed"
    pid = handlers.runs()[0]["pid"]
    wait_until(lambda: not alive(pid), 10, "the handler to be gone")


def test_a_document_timeout_config_bounds_the_job(emulator, certstore, daemon_factory,
                                                  handlers):
    start(daemon_factory, certstore, handlers)
    emulator.queue_job(THING, "slow", doc(step("slow", args=["sleep=60"]),
                                          timeoutConfig={"inProgressTimeoutInMinutes": 0.02}))
    e = finished(emulator, "slow")
    assert e["status"] == "FAILED"
    assert "timed out after 1.2s" in e["statusDetails"]["reason"]


def test_a_canceled_job_stops_its_handler(emulator, certstore, daemon_factory, handlers):
    d = start(daemon_factory, certstore, handlers)
    emulator.queue_job(THING, "long", doc(step("long", args=["sleep=60"])))
    pid = handlers.wait_runs(1)[0]["pid"]
    emulator.cancel_job(THING, "long")
    d.wait_log("job long on Gw1 is .* in the cloud; stopping it")
    wait_until(lambda: not alive(pid), 10, "the handler to be stopped")
    assert status_of(emulator, "long") == "CANCELED"
    # and the next job runs
    emulator.queue_job(THING, "next", doc(step("next")))
    assert finished(emulator, "next")["status"] == "SUCCEEDED"


def test_a_job_left_in_progress_by_a_crash_is_failed_after_restart(
        emulator, certstore, daemon_factory, handlers):
    d = start(daemon_factory, certstore, handlers)
    emulator.queue_job(THING, "crash", doc(step("long", args=["sleep=60"])))
    run = handlers.wait_runs(1)[0]
    d.kill()
    os.killpg(run["pgid"], signal.SIGKILL)  # the power cut takes the handler too
    assert status_of(emulator, "crash") == "IN_PROGRESS"
    d.start()
    e = finished(emulator, "crash")
    assert e["status"] == "FAILED"
    assert e["statusDetails"]["reason"].startswith("interrupted: chariotd stopped while the job")
    assert len(handlers.runs()) == 1


def test_progress_files_become_in_progress_updates(emulator, certstore, daemon_factory,
                                                   handlers):
    start(daemon_factory, certstore, handlers)
    gate = os.path.join(handlers.records, "gate")
    emulator.queue_job(THING, "prog", doc(step("work", args=[
        'progress={"percent": 50, "phase": "copying\\nfiles", "bad key": "x"}',
        "wait=" + gate])))

    def shown():
        e = emulator.job_execution(THING, "prog")
        return e["status"] == "IN_PROGRESS" and e.get("statusDetails", {}).get("percent") and e
    e = wait_until(shown, 15, "the progress update")
    assert e["statusDetails"] == {"percent": "50", "phase": "copying | files"}
    open(gate, "w").close()
    assert finished(emulator, "prog")["status"] == "SUCCEEDED"


def test_progress_is_rate_limited(emulator, certstore, daemon_factory, handlers):
    start(daemon_factory, certstore, handlers)
    emulator.queue_job(THING, "many", doc(step("work", args=[
        'progress={"n": "%d"}' % i for i in range(30)] + ["sleep=1.5"])))
    assert finished(emulator, "many")["status"] == "SUCCEEDED"
    updates = [m for m in emulator.messages if m.topic.endswith("/many/update")
               and m.json()["status"] == "IN_PROGRESS"]
    assert 1 <= len(updates) <= 3
    times = [m.time for m in updates]
    assert all(b - a >= 0.9 for a, b in zip(times, times[1:]))


def test_jobs_queued_while_running_wait_their_turn(emulator, certstore, daemon_factory,
                                                   handlers):
    start(daemon_factory, certstore, handlers)
    gate = os.path.join(handlers.records, "gate")
    emulator.queue_job(THING, "first", doc(step("first", args=["wait=" + gate])))
    handlers.wait_runs(1)
    emulator.queue_job(THING, "second", doc(step("second")))
    time.sleep(0.5)  # not synchronisation: a window in which a second job must NOT start
    assert len(handlers.runs()) == 1
    open(gate, "w").close()
    assert finished(emulator, "second")["status"] == "SUCCEEDED"
    assert finished(emulator, "first")["status"] == "SUCCEEDED"


def test_a_version_conflict_is_settled(emulator, certstore, daemon_factory, handlers):
    start(daemon_factory, certstore, handlers)
    gate = os.path.join(handlers.records, "gate")
    emulator.queue_job(THING, "vc", doc(step("work", args=["wait=" + gate])))
    handlers.wait_runs(1)
    # Someone else (another tool of the device maker's) updates the execution meanwhile.
    emulator.publish("$aws/things/%s/jobs/vc/update" % THING,
                     {"status": "IN_PROGRESS", "statusDetails": {"by": "other"}})
    wait_until(lambda: emulator.job_execution(THING, "vc")["versionNumber"] == 3, 10,
               "the other update")
    open(gate, "w").close()
    assert finished(emulator, "vc")["status"] == "SUCCEEDED"


WHOAMI = """#!/bin/sh
{ id -u; printf '%s\\n' "$1" "$USER"; } >"$(dirname "$0")/whoami.out"
printf '{"p": "1"}' >"$CHARIOTD_JOB_STATUS_DIR/p.json"
"""


def test_run_as_user_as_root_switches_user(emulator, certstore, daemon_factory, handlers):
    if os.geteuid() != 0:
        pytest.skip("needs root")
    # Outside the test's private (0700) directories, so that nobody can run it.
    directory = tempfile.mkdtemp(prefix="cdj-run-as-")
    try:
        os.chmod(directory, 0o777)
        with open(os.path.join(directory, "whoami.sh"), "w") as f:
            f.write(WHOAMI)
        os.chmod(os.path.join(directory, "whoami.sh"), 0o755)
        d = daemon_factory("--jobs=%s:%s" % (THING, directory), certstore=certstore)
        d.wait_log("connected to")
        emulator.queue_job(THING, "nobody", doc(step("as nobody", handler="whoami.sh",
                                                     runAsUser="nobody")))
        e = finished(emulator, "nobody")
        assert e["status"] == "SUCCEEDED", e
        with open(os.path.join(directory, "whoami.out")) as f:
            assert f.read().split() == ["65534", "nobody", "nobody"]
        emulator.queue_job(THING, "ghost", doc(step("x", handler="whoami.sh",
                                                    runAsUser="no-such-user-here")))
        e = finished(emulator, "ghost")
        assert e["status"] == "REJECTED" and "no such user" in e["statusDetails"]["reason"]
    finally:
        shutil.rmtree(directory)


def test_run_as_user_when_not_root_is_rejected(emulator, certstore, daemon_factory, handlers,
                                               tmp_path):
    d = daemon_factory("--jobs=%s:%s" % (THING, handlers.dir), certstore=certstore, start=False)
    if os.geteuid() == 0:
        d.command_prefix = ("unshare", "--user")  # an unprivileged user namespace
    d.start()
    d.wait_log("connected to")
    emulator.queue_job(THING, "nobody", doc(step("as root", runAsUser="root")))
    e = finished(emulator, "nobody")
    assert e["status"] == "REJECTED"
    assert "needs chariotd to run as root" in e["statusDetails"]["reason"]
    assert handlers.runs() == []
