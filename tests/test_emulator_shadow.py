"""Device Shadow emulation: the ShadowService class directly, then through mosquitto.

Test vectors are the live-service output quoted by AWS's Python SDK samples
(aws-iot-device-sdk-python-v2, samples/service_clients/shadow.md); the rules
behind them are in docs/aws-facts.md#device-shadow.
"""

import json

import pytest
from observer import Observer

from emulator.shadow import ShadowError, ShadowService, compute_delta, parse_topic

CLASSIC = "$aws/things/HelloWorld/shadow"
NAMED = "$aws/things/HelloWorld/shadow/name/net"


class Clock:
    def __init__(self, now=1747329779):
        self.now = now

    def __call__(self):
        return self.now


def call(service, topic, payload=b""):
    """Run one request; {reply topic: payload}."""
    if not isinstance(payload, (bytes, str)):
        payload = json.dumps(payload)
    if isinstance(payload, str):
        payload = payload.encode()
    return dict(service.handle(topic, payload))


def update(service, state, prefix=CLASSIC, **fields):
    return call(service, prefix + "/update", dict(fields, state=state))


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def service(clock):
    return ShadowService(clock=clock)


# ---- topics --------------------------------------------------------------

def test_parse_topic_accepts_requests_only():
    assert parse_topic(CLASSIC + "/update") == ("HelloWorld", None, "update")
    assert parse_topic(NAMED + "/get") == ("HelloWorld", "net", "get")
    assert parse_topic("$aws/things/T/shadow/name/get/delete") == ("T", "get", "delete")
    for topic in (CLASSIC + "/update/accepted", CLASSIC + "/get/rejected", NAMED + "/update/delta",
                  "$aws/things/T/shadow/name/update", "$aws/things/T/jobs/get", "a/b"):
        assert parse_topic(topic) is None, topic


# ---- the SDK samples' examples ---------------------------------------------

def test_reference_walkthrough_accepted_delta_and_get(service, clock):
    """The sequence behind the samples' update/accepted, get/accepted and delta output,
    same timestamps."""
    steps = [(1747329779, {"reported": {"Color": "green"}}),
             (1747329882, {"desired": {"Color": "green"}}),
             (1747329945, {"desired": {"Color": "red"}}),
             (1747330109, {"reported": {"Color": "red"}}),
             (1747330176, {"reported": {"Status": "Great"}}),
             (1747330183, {"desired": {"Status": "Great"}})]
    for clock.now, state in steps:
        update(service, state)
    clock.now = 1747330244
    token = "17c3e551-afd9-4951-bdba-fc9425e86a08"
    replies = update(service, {"reported": {"Status": "Awful"}}, clientToken=token)
    assert replies[CLASSIC + "/update/accepted"] == {
        "state": {"reported": {"Status": "Awful"}},
        "metadata": {"reported": {"Status": {"timestamp": 1747330244}}},
        "version": 7, "timestamp": 1747330244, "clientToken": token}
    assert replies[CLASSIC + "/update/delta"] == {
        "state": {"Status": "Great"}, "metadata": {"Status": {"timestamp": 1747330183}},
        "version": 7, "timestamp": 1747330244, "clientToken": token}
    clock.now = 1747330300
    got = call(service, CLASSIC + "/get", {"clientToken": "get-1"})
    assert got[CLASSIC + "/get/accepted"] == {
        "state": {"desired": {"Color": "red", "Status": "Great"},
                  "reported": {"Color": "red", "Status": "Awful"},
                  "delta": {"Status": "Great"}},
        "metadata": {"desired": {"Color": {"timestamp": 1747329945},
                                 "Status": {"timestamp": 1747330183}},
                     "reported": {"Color": {"timestamp": 1747330109},
                                  "Status": {"timestamp": 1747330244}}},
        "version": 7, "timestamp": 1747330300, "clientToken": "get-1"}


def test_lights_delta_example(service):
    update(service, {"reported": {"lights": {"color": {"r": 255, "g": 0, "b": 255}}}})
    replies = update(service, {"desired": {"lights": {"color": {"r": 255, "g": 255, "b": 255}}}})
    delta = replies[CLASSIC + "/update/delta"]
    assert delta["state"] == {"lights": {"color": {"g": 255}}}
    assert delta["metadata"] == {"lights": {"color": {"g": {"timestamp": 1747329779}}}}
    assert delta["version"] == 2


def test_documents_previous_omitted_on_creation_then_full_snapshots(service, clock):
    first = update(service, {"reported": {"Color": "green"}}, clientToken="t1")
    assert first[CLASSIC + "/update/documents"] == {
        "current": {"state": {"reported": {"Color": "green"}},
                    "metadata": {"reported": {"Color": {"timestamp": 1747329779}}},
                    "version": 1},
        "timestamp": 1747329779, "clientToken": "t1"}
    clock.now += 10
    second = update(service, {"desired": {"Color": "red"}})
    documents = second[CLASSIC + "/update/documents"]
    assert documents["previous"] == first[CLASSIC + "/update/documents"]["current"]
    assert documents["current"]["version"] == documents["previous"]["version"] + 1 == 2
    assert documents["current"]["state"] == {"desired": {"Color": "red"},
                                             "reported": {"Color": "green"}}
    assert "clientToken" not in documents


# ---- delta -----------------------------------------------------------------

@pytest.mark.parametrize("desired, reported, delta", [
    ({"a": 1}, {"a": 1}, {}),
    ({"a": 1}, {"a": 2}, {"a": 1}),
    ({"a": 1}, {}, {"a": 1}),
    ({}, {"only_reported": 1}, {}),
    ({"a": 1, "b": 2}, {"a": 1}, {"b": 2}),
    ({"list": [1, 2, 3]}, {"list": [1, 2]}, {"list": [1, 2, 3]}),
    ({"list": [1, {"x": 1}]}, {"list": [1, {"x": 1}]}, {}),
    ({"on": True}, {"on": 1}, {"on": True}),
    ({"n": 1}, {"n": 1.0}, {}),
    ({"o": {"x": 1, "y": 2}}, {"o": "scalar"}, {"o": {"x": 1, "y": 2}}),
    ({"o": {"x": {"y": 1, "z": 2}}}, {"o": {"x": {"y": 1, "z": 3}}}, {"o": {"x": {"z": 2}}}),
    ({"o": {}}, {}, {}),
    ({"s": None}, {}, {"s": None}),
])
def test_compute_delta(desired, reported, delta):
    assert compute_delta(desired, reported) == delta


def test_reported_only_update_republishes_full_delta(service):
    update(service, {"desired": {"a": 1, "b": 2}})
    replies = update(service, {"reported": {"a": 1, "other": "x"}}, clientToken="dev-1")
    assert replies[CLASSIC + "/update/delta"] == {
        "state": {"b": 2}, "metadata": {"b": {"timestamp": 1747329779}},
        "version": 2, "timestamp": 1747329779, "clientToken": "dev-1"}
    replies = update(service, {"reported": {"unrelated": 5}})
    assert replies[CLASSIC + "/update/delta"]["state"] == {"b": 2}
    replies = update(service, {"reported": {"b": 2}})
    assert CLASSIC + "/update/delta" not in replies
    assert set(replies) == {CLASSIC + "/update/accepted", CLASSIC + "/update/documents"}


def test_deleting_a_reported_key_brings_it_back_into_delta(service):
    update(service, {"desired": {"a": 1}, "reported": {"a": 1}})
    replies = update(service, {"reported": {"a": None}})
    assert replies[CLASSIC + "/update/delta"]["state"] == {"a": 1}


# ---- merge, null deletion, metadata ----------------------------------------

def test_merge_is_recursive_and_null_deletes_keys(service, clock):
    update(service, {"reported": {"a": 1, "b": {"c": 1, "d": 2}}})
    clock.now += 5
    replies = update(service, {"reported": {"b": {"c": None, "e": 3}}})
    accepted = replies[CLASSIC + "/update/accepted"]
    assert accepted["state"] == {"reported": {"b": {"c": None, "e": 3}}}
    assert accepted["metadata"] == {"reported": {"b": {"c": {"timestamp": clock.now},
                                                       "e": {"timestamp": clock.now}}}}
    document = service.document("HelloWorld")
    assert document["state"] == {"reported": {"a": 1, "b": {"d": 2, "e": 3}}}
    assert document["metadata"] == {"reported": {
        "a": {"timestamp": clock.now - 5},
        "b": {"d": {"timestamp": clock.now - 5}, "e": {"timestamp": clock.now}}}}


def test_object_of_nulls_creates_nothing(service):
    update(service, {"reported": {"a": 1}})
    update(service, {"reported": {"gone": {"x": None}, "empty": {}}})
    assert service.document("HelloWorld")["state"] == {"reported": {"a": 1, "empty": {}}}


def test_value_can_change_type(service, clock):
    update(service, {"reported": {"a": 1}})
    update(service, {"reported": {"a": {"x": 1}}})
    assert service.document("HelloWorld")["metadata"] == {
        "reported": {"a": {"x": {"timestamp": clock.now}}}}
    update(service, {"reported": {"a": "flat"}})
    assert service.document("HelloWorld")["metadata"] == {
        "reported": {"a": {"timestamp": clock.now}}}


def test_arrays_replace_whole_with_per_element_metadata(service, clock):
    update(service, {"reported": {"colors": ["RED", "GREEN", "BLUE"]}})
    clock.now += 1
    replies = update(service, {"reported": {"colors": ["RED", {"x": 1}]}})
    assert replies[CLASSIC + "/update/accepted"]["metadata"] == {"reported": {"colors": [
        {"timestamp": clock.now}, {"x": {"timestamp": clock.now}}]}}
    assert service.document("HelloWorld")["state"]["reported"] == {"colors": ["RED", {"x": 1}]}


def test_null_section_and_null_state_clear_without_deleting(service, clock):
    update(service, {"desired": {"a": 1}, "reported": {"b": 2}})
    replies = update(service, {"desired": None})
    accepted = replies[CLASSIC + "/update/accepted"]
    assert accepted["metadata"] == {"desired": {"timestamp": clock.now}}
    assert service.document("HelloWorld")["state"] == {"reported": {"b": 2}}
    replies = update(service, None)
    assert replies[CLASSIC + "/update/accepted"] == {
        "state": None, "metadata": {"timestamp": clock.now}, "version": 3,
        "timestamp": clock.now}
    got = call(service, CLASSIC + "/get")[CLASSIC + "/get/accepted"]
    assert got == {"state": {}, "metadata": {}, "version": 3, "timestamp": clock.now}


def test_get_omits_empty_sections_and_empty_delta(service):
    update(service, {"reported": {"a": 1}})
    got = call(service, CLASSIC + "/get")[CLASSIC + "/get/accepted"]
    assert got["state"] == {"reported": {"a": 1}}
    assert set(got["metadata"]) == {"reported"}
    update(service, {"desired": {"a": 1}})
    got = call(service, CLASSIC + "/get")[CLASSIC + "/get/accepted"]
    assert set(got["state"]) == {"desired", "reported"}


# ---- versions and delete ---------------------------------------------------

def test_versions_start_at_one_and_survive_delete(service):
    assert update(service, {"reported": {"a": 1}})[CLASSIC + "/update/accepted"]["version"] == 1
    assert update(service, {"reported": {"a": 2}})[CLASSIC + "/update/accepted"]["version"] == 2
    deleted = call(service, CLASSIC + "/delete", {"clientToken": "del"})
    assert deleted == {CLASSIC + "/delete/accepted": {"version": 2, "timestamp": 1747329779,
                                                      "clientToken": "del"}}
    assert CLASSIC + "/get/rejected" in call(service, CLASSIC + "/get")
    recreated = update(service, {"reported": {"b": 1}})
    assert recreated[CLASSIC + "/update/accepted"]["version"] == 3
    assert "previous" not in recreated[CLASSIC + "/update/documents"]
    assert service.document("HelloWorld")["state"] == {"reported": {"b": 1}}


def test_version_check(service):
    update(service, {"reported": {"a": 1}})
    rejected = update(service, {"reported": {"a": 2}}, version=5, clientToken="c")
    assert rejected == {CLASSIC + "/update/rejected": {
        "code": 409, "message": "Version conflict", "timestamp": 1747329779, "clientToken": "c"}}
    assert update(service, {"reported": {"a": 2}}, version=1)[
        CLASSIC + "/update/accepted"]["version"] == 2
    assert service.document("HelloWorld")["version"] == 2


def test_version_on_a_new_shadow(service):
    rejected = update(service, {"reported": {"a": 1}}, version=3)
    assert rejected[CLASSIC + "/update/rejected"]["message"] == "Invalid version"
    assert update(service, {"reported": {"a": 1}}, version=0)[
        CLASSIC + "/update/accepted"]["version"] == 1


def test_missing_shadow_404_texts(service):
    assert call(service, CLASSIC + "/get", {"clientToken": "x"}) == {
        CLASSIC + "/get/rejected": {"code": 404, "timestamp": 1747329779, "clientToken": "x",
                                    "message": "No shadow exists with name: 'HelloWorld'"}}
    rejected = call(service, NAMED + "/delete")[NAMED + "/delete/rejected"]
    assert (rejected["code"], rejected["message"]) == (404, "No shadow exists with name: 'net'")


def test_named_and_classic_shadows_are_separate(service):
    update(service, {"reported": {"where": "classic"}})
    named = update(service, {"reported": {"where": "named"}}, prefix=NAMED)
    assert named[NAMED + "/update/accepted"]["version"] == 1
    assert service.document("HelloWorld")["state"]["reported"] == {"where": "classic"}
    assert service.document("HelloWorld", "net")["state"]["reported"] == {"where": "named"}
    assert service.names() == [("HelloWorld", None), ("HelloWorld", "net")]


# ---- rejections ------------------------------------------------------------

DEEP_7 = {"desired": {"a": {"b": {"c": {"d": {"e": {"f": 1}}}}}}}
DEEP_6 = {"desired": {"a": {"b": {"c": {"d": {"e": 1}}}}}}


@pytest.mark.parametrize("payload, code, message", [
    (b"{not json", 400, "Invalid JSON"),
    (b"[1, 2]", 400, "Invalid JSON"),
    (b'{"state": {"desired": {"x": NaN}}}', 400, "Invalid JSON"),
    (b"\xff\xfe", 415, "Unsupported documented encoding; supported encoding is UTF-8"),
    ({"clientToken": "t"}, 400, "Missing required node: state"),
    ({"state": "on"}, 400, "State node must be an object"),
    ({"state": {"desired": 1}}, 400, "Desired node must be an object"),
    ({"state": {"reported": [1]}}, 400, "Reported node must be an object"),
    ({"state": {"delta": {"a": 1}}}, 400, "State contains an invalid node: 'delta'"),
    ({"state": {}, "version": "1"}, 400, "Invalid version"),
    ({"state": {}, "version": -1}, 400, "Invalid version"),
    ({"state": {}, "version": True}, 400, "Invalid version"),
    ({"state": {}, "clientToken": "x" * 65}, 400, "Invalid clientToken"),
    ({"state": {}, "clientToken": 7}, 400, "Invalid clientToken"),
    ({"state": DEEP_7}, 400, "JSON contains too many levels of nesting; maximum is 6"),
    ({"state": {"desired": {"a": [1, None]}}}, 400, "Invalid JSON"),
    ({"state": {"reported": {"a": [[None]]}}}, 400, "Invalid JSON"),
])
def test_update_rejections(service, payload, code, message):
    replies = call(service, CLASSIC + "/update", payload)
    assert list(replies) == [CLASSIC + "/update/rejected"]
    rejected = replies[CLASSIC + "/update/rejected"]
    assert (rejected["code"], rejected["message"]) == (code, message)
    assert "clientToken" not in rejected or rejected["clientToken"] == "t"
    assert service.document("HelloWorld") is None


def test_rejection_echoes_a_valid_client_token(service):
    replies = update(service, {"delta": {}}, clientToken="abc")
    assert replies[CLASSIC + "/update/rejected"]["clientToken"] == "abc"


def test_token_of_exactly_64_bytes_is_fine(service):
    token = "é" * 32
    replies = update(service, {"reported": {"a": 1}}, clientToken=token)
    assert replies[CLASSIC + "/update/accepted"]["clientToken"] == token


def test_depth_limit_is_six_levels_and_configurable(clock):
    assert CLASSIC + "/update/accepted" in update(ShadowService(clock), DEEP_6)
    assert CLASSIC + "/update/rejected" in update(ShadowService(clock), DEEP_7)
    deeper = ShadowService(clock, max_depth=8)
    assert CLASSIC + "/update/accepted" in update(deeper, DEEP_7)
    rejected = update(ShadowService(clock, max_depth=4), DEEP_6)[CLASSIC + "/update/rejected"]
    assert rejected["message"] == "JSON contains too many levels of nesting; maximum is 4"


def test_size_limit_counts_desired_plus_reported(clock):
    service = ShadowService(clock, max_state_bytes=1000)
    update(service, {"reported": {"blob": "r" * 500}})
    rejected = update(service, {"desired": {"blob": "d" * 500}})[CLASSIC + "/update/rejected"]
    assert (rejected["code"], rejected["message"]) == (
        413, "The payload exceeds the maximum size allowed")
    assert service.document("HelloWorld")["version"] == 1
    replies = update(ShadowService(clock), {"reported": {"blob": "x" * 9000}})
    assert replies[CLASSIC + "/update/rejected"]["code"] == 413


# ---- through mosquitto -----------------------------------------------------

@pytest.fixture
def device(broker):
    obs = Observer(broker.plain_port, topics=("$aws/#",), client_id="HelloWorld")
    yield obs
    obs.close()


def test_device_requests_answered_to_every_subscriber(emulator, device, broker):
    other = Observer(broker.plain_port, topics=("$aws/things/HelloWorld/shadow/#",))
    try:
        device.publish(CLASSIC + "/update", {"state": {"reported": {"Color": "green"}},
                                            "clientToken": "c1"})
        accepted = device.wait_topic(CLASSIC + "/update/accepted")[0].json()
        assert accepted["state"] == {"reported": {"Color": "green"}}
        assert accepted["clientToken"] == "c1" and accepted["version"] == 1
        assert other.wait_topic(CLASSIC + "/update/accepted")[0].json() == accepted
        other.wait_topic(CLASSIC + "/update/documents")
        device.publish(NAMED + "/update", {"state": {"desired": {"dhcp": True}}})
        delta = device.wait_topic(NAMED + "/update/delta")[0].json()
        assert delta["state"] == {"dhcp": True} and delta["version"] == 1
        device.publish(NAMED + "/get", "")
        got = device.wait_topic(NAMED + "/get/accepted")[0].json()
        assert got["state"]["delta"] == {"dhcp": True}
        device.publish("$aws/things/Nobody/shadow/get", {"clientToken": "g"})
        rejected = device.wait_topic("$aws/things/Nobody/shadow/get/rejected")[0].json()
        assert rejected["code"] == 404 and rejected["clientToken"] == "g"
    finally:
        other.close()


def test_app_side_changes_publish_like_update_thing_shadow(emulator, device):
    device.publish(CLASSIC + "/update", {"state": {"reported": {"mode": "eco"}}})
    device.wait_topic(CLASSIC + "/update/accepted")
    accepted = emulator.set_desired("HelloWorld", {"mode": "boost"})
    assert accepted["state"] == {"desired": {"mode": "boost"}} and accepted["version"] == 2
    delta = device.wait_topic(CLASSIC + "/update/delta")[0].json()
    assert delta["state"] == {"mode": "boost"} and delta["version"] == 2
    documents = device.wait_topic(CLASSIC + "/update/documents", count=2)[1].json()
    assert documents["previous"]["version"] == 1
    assert emulator.get_shadow("HelloWorld")["state"]["delta"] == {"mode": "boost"}
    emulator.update_reported("HelloWorld", {"mode": "boost"})
    assert "delta" not in emulator.get_shadow("HelloWorld")["state"]
    assert emulator.delete_shadow("HelloWorld") is True
    assert device.wait_topic(CLASSIC + "/delete/accepted")[0].json()["version"] == 3
    assert emulator.get_shadow("HelloWorld") is None
    assert emulator.delete_shadow("HelloWorld") is False


def test_app_side_rejection_raises_and_publishes_nothing(emulator, device):
    with pytest.raises(ShadowError) as error:
        emulator.set_desired("HelloWorld", DEEP_7["desired"])
    assert error.value.code == 400
    emulator.set_desired("HelloWorld", {"ok": 1}, shadow="net")
    device.wait_topic(NAMED + "/update/accepted")
    assert device.on(CLASSIC + "/update/accepted") == []


def test_intercepted_requests_run_a_change_first_or_go_unanswered(emulator, device):
    emulator.intercept(CLASSIC + "/update", answer=False)
    emulator.intercept(CLASSIC + "/update", before=lambda: emulator.update_shadow_unheard(
        "HelloWorld", {"desired": {"mode": "raced"}}))
    device.publish(CLASSIC + "/update", {"state": {"reported": {"mode": "eco"}}})
    emulator.wait_for(lambda ms: emulator.get_shadow("HelloWorld"), what="the update applied")
    device.publish(CLASSIC + "/update", {"state": {"reported": {"n": 1}}, "version": 1})
    rejected = device.wait_topic(CLASSIC + "/update/rejected")[0].json()
    assert rejected["code"] == 409  # the racing change came first
    device.publish(CLASSIC + "/update", {"state": {"reported": {"n": 2}}})
    assert device.wait_topic(CLASSIC + "/update/accepted")[0].json()["version"] == 3
    device.wait_topic(CLASSIC + "/update/documents")
    assert [m.topic.rsplit("/", 1)[-1] for m in device.messages] == [
        "update", "update", "rejected", "update", "accepted", "delta", "documents"]


def test_messages_are_recorded_with_arrival_time(emulator, device, observer):
    observer.publish("dt/telemetry", {"t": 21.5})
    device.publish(CLASSIC + "/update", {"state": {"reported": {"a": 1}}})
    found = emulator.wait_for(lambda ms: [m for m in ms if m.topic.endswith("/update/documents")],
                              what="documents")
    topics = [m.topic for m in emulator.messages]
    assert "dt/telemetry" in topics
    assert topics.index(CLASSIC + "/update") < topics.index(CLASSIC + "/update/accepted")
    request = emulator.on(CLASSIC + "/update")[0]
    assert request.time <= found[0].time and request.json() == {"state": {"reported": {"a": 1}}}
    assert not [t for t in topics if t.startswith("$emulator/")]


def test_state_survives_broker_restart(emulator, broker):
    emulator.update_reported("HelloWorld", {"fw": "1.0"})
    broker.restart()
    assert emulator.wait_ready(15), "emulator did not reconnect after the broker restarted"
    device = Observer(broker.plain_port, topics=("$aws/#",), client_id="HelloWorld")
    try:
        device.publish(CLASSIC + "/get", {"clientToken": "after-restart"})
        got = device.wait_topic(CLASSIC + "/get/accepted")[0].json()
        assert got["state"] == {"reported": {"fw": "1.0"}} and got["version"] == 1
        device.publish(CLASSIC + "/update", {"state": {"reported": {"fw": "1.1"}}})
        assert device.wait_topic(CLASSIC + "/update/accepted")[0].json()["version"] == 2
    finally:
        device.close()
