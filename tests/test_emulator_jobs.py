"""Jobs emulation (docs/aws-facts.md#jobs): JobsService directly, then through mosquitto.

The Secure Tunneling notification, the other cloud-initiated push to a
device, is tested at the end.
"""

import json

import pytest
from observer import Observer

from emulator.cloud import Emulator
from emulator.jobs import JobsService, parse_topic

T = "$aws/things/Gw1/jobs"
DOC1 = {"ToDo": "Reboot"}
DOC2 = {"ToDo": "Delete Root User"}


class Clock:
    def __init__(self, now=1747316671):
        self.now = now

    def __call__(self):
        return self.now


def call(service, topic, payload=b""):
    """Run one request; list of (topic, payload) replies in order."""
    if not isinstance(payload, bytes):
        payload = json.dumps(payload).encode()
    return service.handle(topic, payload)


def only(replies, topic):
    found = [p for t, p in replies if t == topic]
    assert len(found) == 1, replies
    return found[0]


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def jobs(clock):
    return JobsService(clock)


@pytest.fixture
def two_jobs(jobs, clock):
    jobs.queue_job("Gw1", "Job1", DOC1)
    clock.now += 10
    jobs.queue_job("Gw1", "Job2", DOC2)
    clock.now += 10
    return jobs


def test_parse_topic():
    assert parse_topic(T + "/get") == ("Gw1", "pending", None)
    assert parse_topic(T + "/start-next") == ("Gw1", "start-next", None)
    assert parse_topic(T + "/$next/get") == ("Gw1", "describe", "$next")
    assert parse_topic(T + "/Job-1_a/update") == ("Gw1", "update", "Job-1_a")
    for topic in (T + "/get/accepted", T + "/Job1/update/rejected", T + "/notify",
                  T + "/notify-next", "$aws/things/Gw1/shadow/get"):
        assert parse_topic(topic) is None, topic
    assert parse_topic(T + "/bogus")[1] == "invalid"
    assert parse_topic(T + "/$next/update")[1] == "invalid"


def test_queueing_notifies(jobs, clock):
    first = jobs.queue_job("Gw1", "Job1", DOC1)
    summary = {"jobId": "Job1", "queuedAt": clock.now, "lastUpdatedAt": clock.now,
               "executionNumber": 1, "versionNumber": 1}
    assert first == [
        (T + "/notify", {"timestamp": clock.now, "jobs": {"QUEUED": [summary]}}),
        (T + "/notify-next", {"timestamp": clock.now, "execution": {
            "jobId": "Job1", "status": "QUEUED", "jobDocument": DOC1, "queuedAt": clock.now,
            "lastUpdatedAt": clock.now, "versionNumber": 1, "executionNumber": 1}})]
    clock.now += 5
    second = jobs.queue_job("Gw1", "Job2", DOC2)
    assert [t for t, _ in second] == [T + "/notify"]  # the head did not change
    assert [j["jobId"] for j in second[0][1]["jobs"]["QUEUED"]] == ["Job1", "Job2"]
    with pytest.raises(ValueError):
        jobs.queue_job("Gw1", "Job1", DOC1)
    with pytest.raises(ValueError):
        jobs.queue_job("Gw1", "bad id!", DOC1)


def test_get_pending_lists(two_jobs, clock):
    reply = only(call(two_jobs, T + "/get", {"clientToken": "c"}), T + "/get/accepted")
    assert reply["inProgressJobs"] == [] and reply["clientToken"] == "c"
    assert [j["jobId"] for j in reply["queuedJobs"]] == ["Job1", "Job2"]
    assert only(call(JobsService(clock), "$aws/things/Idle/jobs/get"),
                "$aws/things/Idle/jobs/get/accepted") == {
        "inProgressJobs": [], "queuedJobs": [], "timestamp": clock.now}


def test_start_next_lifecycle(two_jobs, clock):
    replies = call(two_jobs, T + "/start-next", {"clientToken": "s1",
                                                   "statusDetails": {"step": "1"}})
    assert [t for t, _ in replies] == [T + "/start-next/accepted"]  # no notifications
    execution = replies[0][1]["execution"]
    assert execution == {"jobId": "Job1", "status": "IN_PROGRESS", "jobDocument": DOC1,
                         "queuedAt": clock.now - 20, "startedAt": clock.now,
                         "lastUpdatedAt": clock.now, "versionNumber": 2, "executionNumber": 1,
                         "statusDetails": {"step": "1"}}
    clock.now += 3
    again = only(call(two_jobs, T + "/start-next"), T + "/start-next/accepted")
    assert again["execution"] == execution  # idempotent while in progress
    pending = only(call(two_jobs, T + "/get"), T + "/get/accepted")
    assert [j["jobId"] for j in pending["inProgressJobs"]] == ["Job1"]
    assert pending["inProgressJobs"][0]["startedAt"] == clock.now - 3

    replies = call(two_jobs, T + "/Job1/update", {"status": "SUCCEEDED", "clientToken": "u1"})
    assert only(replies, T + "/Job1/update/accepted") == {"timestamp": clock.now,
                                                          "clientToken": "u1"}
    assert [j["jobId"] for j in only(replies, T + "/notify")["jobs"]["QUEUED"]] == ["Job2"]
    head = only(replies, T + "/notify-next")["execution"]
    assert (head["jobId"], head["status"], head["jobDocument"]) == ("Job2", "QUEUED", DOC2)

    call(two_jobs, T + "/start-next")
    replies = call(two_jobs, T + "/Job2/update", {"status": "FAILED"})
    assert only(replies, T + "/notify") == {"timestamp": clock.now, "jobs": {}}
    assert only(replies, T + "/notify-next") == {"timestamp": clock.now}
    idle = only(call(two_jobs, T + "/start-next"), T + "/start-next/accepted")
    assert idle == {"timestamp": clock.now}


def test_in_progress_job_ahead_of_head_changes_next(two_jobs):
    replies = call(two_jobs, T + "/Job2/update", {"status": "IN_PROGRESS"})
    assert [t for t, _ in replies] == [T + "/Job2/update/accepted", T + "/notify-next"]
    assert replies[1][1]["execution"]["jobId"] == "Job2"
    started = only(call(two_jobs, T + "/start-next"), T + "/start-next/accepted")
    assert started["execution"]["jobId"] == "Job2"


def test_describe(two_jobs):
    described = only(call(two_jobs, T + "/Job2/get"), T + "/Job2/get/accepted")
    assert described["execution"]["jobDocument"] == DOC2
    without = only(call(two_jobs, T + "/Job2/get", {"includeJobDocument": False}),
                   T + "/Job2/get/accepted")
    assert "jobDocument" not in without["execution"]
    head = only(call(two_jobs, T + "/$next/get", {"clientToken": "n"}), T + "/$next/get/accepted")
    assert head["execution"]["jobId"] == "Job1" and head["clientToken"] == "n"
    missing = only(call(two_jobs, T + "/Nope/get", {"clientToken": "m"}), T + "/Nope/get/rejected")
    assert missing["code"] == "ResourceNotFound" and missing["clientToken"] == "m"
    wrong_number = only(call(two_jobs, T + "/Job1/get", {"executionNumber": 2}),
                        T + "/Job1/get/rejected")
    assert wrong_number["code"] == "ResourceNotFound"
    call(two_jobs, T + "/Job1/update", {"status": "REJECTED"})
    terminal = only(call(two_jobs, T + "/Job1/get"), T + "/Job1/get/rejected")
    assert terminal["code"] == "TerminalStateReached"
    idle = JobsService(Clock())
    assert "execution" not in only(call(idle, T + "/$next/get"), T + "/$next/get/accepted")


def test_update_options_and_versions(two_jobs, clock):
    replies = call(two_jobs, T + "/Job1/update", {
        "status": "IN_PROGRESS", "expectedVersion": 1, "statusDetails": {"progress": "10%"},
        "includeJobExecutionState": True, "includeJobDocument": True})
    accepted = only(replies, T + "/Job1/update/accepted")
    assert accepted == {"executionState": {"status": "IN_PROGRESS",
                                           "statusDetails": {"progress": "10%"},
                                           "versionNumber": 2},
                        "jobDocument": DOC1, "timestamp": clock.now}
    call(two_jobs, T + "/Job1/update", {"status": "IN_PROGRESS"})
    assert two_jobs.execution("Gw1", "Job1")["statusDetails"] == {"progress": "10%"}
    assert two_jobs.execution("Gw1", "Job1")["versionNumber"] == 3

    mismatch = only(call(two_jobs, T + "/Job1/update", {"status": "SUCCEEDED",
                                                         "expectedVersion": 2,
                                                         "clientToken": "v"}),
                    T + "/Job1/update/rejected")
    assert mismatch == {"code": "VersionMismatch", "message": mismatch["message"],
                        "clientToken": "v", "timestamp": clock.now,
                        "executionState": {"status": "IN_PROGRESS",
                                           "statusDetails": {"progress": "10%"},
                                           "versionNumber": 3}}
    call(two_jobs, T + "/Job1/update", {"status": "SUCCEEDED", "expectedVersion": 3})
    illegal = only(call(two_jobs, T + "/Job1/update", {"status": "IN_PROGRESS"}),
                   T + "/Job1/update/rejected")
    assert illegal["code"] == "InvalidStateTransition"
    assert illegal["executionState"] == {"status": "SUCCEEDED",
                                         "statusDetails": {"progress": "10%"},
                                         "versionNumber": 4}


@pytest.mark.parametrize("topic, payload, code", [
    (T + "/Job1/update", {}, "InvalidRequest"),
    (T + "/Job1/update", {"status": "QUEUED"}, "InvalidRequest"),
    (T + "/Job1/update", {"status": "CANCELED"}, "InvalidRequest"),
    (T + "/Job1/update", {"status": "SUCCEEDED", "statusDetails": {"k": 1}}, "InvalidRequest"),
    (T + "/Job1/update", {"status": "SUCCEEDED", "statusDetails": {"bad key": "v"}},
     "InvalidRequest"),
    (T + "/Job1/update", {"status": "SUCCEEDED", "statusDetails": {"k": ""}}, "InvalidRequest"),
    (T + "/Job1/update", {"status": "IN_PROGRESS", "stepTimeoutInMinutes": 0}, "InvalidRequest"),
    (T + "/Job1/update", {"status": "IN_PROGRESS", "expectedVersion": "1"}, "InvalidRequest"),
    (T + "/Job1/update", b"{nope", "InvalidJson"),
    (T + "/Job1/update", b"\xff", "InvalidJson"),
    (T + "/start-next", {"stepTimeoutInMinutes": -1}, "InvalidRequest"),
    (T + "/Job1/get", {"includeJobDocument": "yes"}, "InvalidRequest"),
    (T + "/Nope/update", {"status": "SUCCEEDED"}, "ResourceNotFound"),
    (T + "/bogus", {}, "InvalidTopic"),
    (T + "/Job1/start", {}, "InvalidTopic"),
])
def test_rejections_use_string_codes(two_jobs, topic, payload, code):
    replies = call(two_jobs, topic, payload)
    assert [t for t, _ in replies] == [topic + "/rejected"]
    assert replies[0][1]["code"] == code
    assert isinstance(replies[0][1]["message"], str)
    assert two_jobs.execution("Gw1", "Job1")["versionNumber"] == 1


def test_step_timeout_times_out_and_minus_one_clears(two_jobs, clock):
    call(two_jobs, T + "/start-next", {"stepTimeoutInMinutes": 1})
    clock.now += 59
    assert two_jobs.expire() == []
    clock.now += 1
    replies = two_jobs.expire()
    assert [t for t, _ in replies] == [T + "/notify", T + "/notify-next"]
    assert two_jobs.execution("Gw1", "Job1")["status"] == "TIMED_OUT"
    assert two_jobs.execution("Gw1", "Job1")["versionNumber"] == 3
    call(two_jobs, T + "/start-next", {"stepTimeoutInMinutes": 1})
    call(two_jobs, T + "/Job2/update", {"status": "IN_PROGRESS", "stepTimeoutInMinutes": -1})
    clock.now += 3600
    assert two_jobs.expire() == []
    assert two_jobs.execution("Gw1", "Job2")["status"] == "IN_PROGRESS"


def test_in_progress_timeout_runs_from_in_progress_whatever_the_step_timer(jobs, clock):
    jobs.queue_job("Gw1", "Slow", DOC1, in_progress_timeout=2)
    clock.now += 1000  # queued time does not count
    assert jobs.expire() == []
    started = only(call(jobs, T + "/start-next", {"stepTimeoutInMinutes": 5}),
                   T + "/start-next/accepted")["execution"]
    assert started["approximateSecondsBeforeTimedOut"] == 120  # the sooner of the two timers
    clock.now += 30
    call(jobs, T + "/Slow/update", {"status": "IN_PROGRESS", "stepTimeoutInMinutes": -1})
    assert jobs.execution("Gw1", "Slow")["approximateSecondsBeforeTimedOut"] == 90
    clock.now += 89
    assert jobs.expire() == []
    clock.now += 1
    replies = jobs.expire()
    assert [t for t, _ in replies] == [T + "/notify", T + "/notify-next"]
    assert replies[1][1] == {"timestamp": clock.now}  # nothing pending any more
    e = jobs.execution("Gw1", "Slow")
    assert e["status"] == "TIMED_OUT" and "approximateSecondsBeforeTimedOut" not in e
    # What the device hears when it reports afterwards, or asks.
    rejected = only(call(jobs, T + "/Slow/update", {"status": "SUCCEEDED", "expectedVersion": 4}),
                    T + "/Slow/update/rejected")
    assert rejected["code"] == "InvalidStateTransition"
    assert rejected["executionState"] == {"status": "TIMED_OUT", "versionNumber": 4}
    assert only(call(jobs, T + "/Slow/get"), T + "/Slow/get/rejected")["code"] == \
        "TerminalStateReached"


@pytest.mark.parametrize("minutes", [0, 10081, 1.5, True, "5"])
def test_in_progress_timeout_is_1_to_10080_minutes(jobs, minutes):
    with pytest.raises(ValueError):
        jobs.queue_job("Gw1", "J", DOC1, in_progress_timeout=minutes)


def test_a_timer_minute_can_be_shortened_for_tests(clock):
    jobs = JobsService(clock, minute=0.5)
    jobs.queue_job("Gw1", "Quick", DOC1, in_progress_timeout=3)
    call(jobs, T + "/start-next", {"stepTimeoutInMinutes": 1})
    clock.now += 0.4
    assert jobs.expire() == []
    clock.now += 0.1
    assert jobs.expire() and jobs.execution("Gw1", "Quick")["status"] == "TIMED_OUT"


def test_cancel_job(two_jobs, clock):
    replies = two_jobs.cancel_job("Gw1", "Job1")
    assert [t for t, _ in replies] == [T + "/notify", T + "/notify-next"]
    assert two_jobs.execution("Gw1", "Job1")["status"] == "CANCELED"
    with pytest.raises(ValueError):
        two_jobs.cancel_job("Gw1", "Job1")


def test_remove_and_delete_job(two_jobs):
    replies = two_jobs.cancel_job("Gw1", "Job1", "REMOVED")
    assert [t for t, _ in replies] == [T + "/notify", T + "/notify-next"]
    assert two_jobs.execution("Gw1", "Job1")["status"] == "REMOVED"
    with pytest.raises(ValueError):
        two_jobs.delete_job("Gw1", "Job2")  # pending: only with force
    call(two_jobs, T + "/start-next")
    replies = two_jobs.delete_job("Gw1", "Job2", force=True)
    assert [p for t, p in replies if t == T + "/notify"][0]["jobs"] == {}
    assert two_jobs.execution("Gw1", "Job2") is None
    rejected = only(call(two_jobs, T + "/Job2/update", {"status": "SUCCEEDED"}),
                    T + "/Job2/update/rejected")
    assert rejected["code"] == "ResourceNotFound"
    assert two_jobs.delete_job("Gw1", "Job1") == []  # terminal: no force needed, no news
    assert two_jobs.execution("Gw1", "Job1") is None


def test_notify_lists_at_most_ten(jobs):
    for i in range(12):
        jobs.queue_job("Gw1", "J%02d" % i, {"n": i})
    replies = call(jobs, T + "/J05/update", {"status": "IN_PROGRESS"})
    assert replies == [(T + "/J05/update/accepted", replies[0][1]), replies[1]]
    notify = jobs.cancel_job("Gw1", "J11")[0][1]["jobs"]
    assert [j["jobId"] for j in notify["IN_PROGRESS"]] == ["J05"]
    assert len(notify["QUEUED"]) == 9


# ---- through mosquitto -----------------------------------------------------

@pytest.fixture
def device(broker):
    obs = Observer(broker.plain_port, topics=("$aws/things/Gw1/#",), client_id="Gw1")
    yield obs
    obs.close()


def test_job_flow_through_broker(emulator, device):
    emulator.queue_job("Gw1", "Job1", DOC1)
    assert device.wait_topic(T + "/notify-next")[0].json()["execution"]["jobDocument"] == DOC1
    device.publish(T + "/start-next", {"clientToken": "s"})
    started = device.wait_topic(T + "/start-next/accepted")[0].json()
    assert started["execution"]["status"] == "IN_PROGRESS" and started["clientToken"] == "s"
    device.publish(T + "/Job1/update", {"status": "SUCCEEDED", "expectedVersion": 2})
    device.wait_topic(T + "/Job1/update/accepted")
    assert device.wait_topic(T + "/notify", count=2)[1].json()["jobs"] == {}
    device.publish(T + "/Job1/update", {"status": "FAILED", "clientToken": "late"})
    rejected = device.wait_topic(T + "/Job1/update/rejected")[0].json()
    assert rejected["code"] == "InvalidStateTransition" and rejected["clientToken"] == "late"
    assert emulator.job_execution("Gw1", "Job1")["status"] == "SUCCEEDED"


def test_step_timeout_through_broker(broker, device):
    clock = Clock()
    with Emulator(broker.plain_port, clock=clock, tick_interval=0.05).start() as emulator:
        emulator.queue_job("Gw1", "Slow", DOC1)
        device.publish(T + "/start-next", {"stepTimeoutInMinutes": 1})
        device.wait_topic(T + "/start-next/accepted")
        clock.now += 61
        assert device.wait_topic(T + "/notify", count=2)[1].json()["jobs"] == {}
        assert emulator.job_execution("Gw1", "Slow")["status"] == "TIMED_OUT"


def test_open_tunnel_notifies_the_destination(emulator, device):
    token = emulator.open_tunnel("Gw1", ["SSH"])
    notify = device.wait_topic("$aws/things/Gw1/tunnels/notify")[0].json()
    assert notify == {"clientAccessToken": token, "clientMode": "destination",
                      "region": "us-east-1", "services": ["SSH"]}
    assert emulator.open_tunnel("Gw1", "SSH,VNC", region="eu-west-1", token="tok") == "tok"
    second = device.wait_topic("$aws/things/Gw1/tunnels/notify", count=2)[1].json()
    assert (second["services"], second["region"]) == (["SSH", "VNC"], "eu-west-1")
    with pytest.raises(ValueError):
        emulator.open_tunnel("Gw1", [])
