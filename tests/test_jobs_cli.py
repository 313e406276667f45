"""`python3 -m emulator jobs create|describe|cancel` with `serve`, chariotd running the job."""

import json

from emulator_fixture import Process, cli, one_line_error
from jobhelpers import THING, Handlers, doc, step
from process import wait_until


def describe(port, job_id):
    result = cli(port, "jobs", "describe", "--thing", THING, "--job-id", job_id)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_create_describe_and_cancel(serve, broker, certstore, daemon_factory, tmp_path):  # noqa: F811
    port = broker.plain_port
    handlers = Handlers(tmp_path)
    d = daemon_factory("--jobs=%s:%s" % (THING, handlers.dir), certstore=certstore)
    d.wait_log("connected to")
    document = tmp_path / "job.json"
    document.write_text(json.dumps(doc(step("hello", args=["out=hi"]), includeStdOut=True)))
    created = cli(port, "jobs", "create", "--thing", THING, "--document", str(document))
    assert created.returncode == 0, created.stderr
    job_id = created.stdout.strip()
    assert job_id.startswith("job-")
    e = wait_until(lambda: describe(port, job_id)["status"] == "SUCCEEDED" and
                   describe(port, job_id), 20, "the job to succeed")
    assert e["statusDetails"]["stdout"] == "hi"

    gate = tmp_path / "gate"
    document.write_text(json.dumps(doc(step("long", args=["wait=%s" % gate]))))
    assert cli(port, "jobs", "create", "--thing", THING, "--document", str(document),
               "--job-id", "long").returncode == 0
    handlers.wait_runs(2)
    assert cli(port, "jobs", "cancel", "--thing", THING, "--job-id", "long").returncode == 0
    assert describe(port, "long")["status"] == "CANCELED"
    d.wait_log("job long on Gw1 is .* in the cloud; stopping it")
    assert "no pending job" in one_line_error(
        cli(port, "jobs", "cancel", "--thing", THING, "--job-id", "long"))
    assert "no job nope" in one_line_error(
        cli(port, "jobs", "describe", "--thing", THING, "--job-id", "nope"))


def test_create_with_an_in_progress_timeout(broker, tmp_path):
    port = broker.plain_port
    emulator = Process(str(tmp_path), "serve-quick", "serve", "--port", str(port),
                    "--job-minute", "0.5")
    emulator.wait_output("and subscribed")
    try:
        document = tmp_path / "job.json"
        document.write_text(json.dumps(doc(step("hello"))))
        assert "inProgressTimeoutInMinutes must be 1-10080" in one_line_error(
            cli(port, "jobs", "create", "--thing", THING, "--document", str(document),
                "--in-progress-timeout", "0"))
        assert cli(port, "jobs", "create", "--thing", THING, "--document", str(document),
                   "--job-id", "quick", "--in-progress-timeout", "2").returncode == 0
        assert "approximateSecondsBeforeTimedOut" not in describe(port, "quick")  # queued
        # A device starts it; 2 minutes of 0.5 s later the service times it out.
        assert cli(port, "publish", "$aws/things/%s/jobs/start-next" % THING, "{}"
                   ).returncode == 0
        wait_until(lambda: describe(port, "quick")["status"] == "TIMED_OUT", 10,
                   "the job to time out")
    finally:
        assert emulator.terminate() == 0, emulator.output()
