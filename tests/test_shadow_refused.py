"""Reports the shadow cannot hold, end to end: an update the emulator
refuses for what it carries (413: the document over 8 KB; 400: nested too
deep) is not retried as it is. Its keys are sent one at a time, the one
refused alone is logged once and left out of reported until it changes, and
everything else (other services, desired clearing, update files) goes on,
in a bounded number of update requests."""

import json
import os
import re
import time

from process import wait_until
from shadowhelpers import (
    PREFIX,
    THING,
    assert_quiet,
    device_updates,
    drop_update,
    json_service,
    read_file,
    shadow_state,
    wait_synced,
    write_file,
)

# A fix-up that makes a config bigger than the shadow's 8 KB state can hold
# (the desired change itself is small, so the shadow took it).
BIG_PY = '''
key = "big"
outfile = %(outfile)r
outformat = "JSON"
notifycmd = ""


def validate(cfg):
    if isinstance(cfg, dict) and cfg.get("expand"):
        return {"blob": "x" * 9000}
    return cfg
'''

TOO_LARGE = "413 The payload exceeds the maximum size allowed"
TOO_DEEP = "400 JSON contains too many levels of nesting; maximum is 6"
REFUSED = "shadow Gw1: %s: the shadow cannot take its reported config (%s); left out of reported " \
          "until it changes"


def settled_updates(emulator, since, quiet=4.0, timeout=30.0):
    """The device's updates after the first SINCE, once none has come for QUIET
    seconds (a device that keeps retrying fails the TIMEOUT)."""
    deadline = time.monotonic() + timeout
    count, last = len(device_updates(emulator)), time.monotonic()
    while time.monotonic() - last < quiet:
        assert time.monotonic() < deadline, "still updating: %r" % device_updates(emulator)
        time.sleep(0.05)
        if len(device_updates(emulator)) != count:
            count, last = len(device_updates(emulator)), time.monotonic()
    return device_updates(emulator)[since:]


def test_a_report_the_shadow_cannot_hold_is_left_out_and_the_rest_goes_on(
        tmp_path, emulator, certstore, daemon_factory):
    services = tmp_path / "services"
    json_service(services, "good", key="good", outfile=str(tmp_path / "good.json"),
                 outformat="JSON", notifycmd="")
    big = str(tmp_path / "big.json")
    write_file(services / "big.py", BIG_PY % {"outfile": big})
    d = daemon_factory("--services=%s:%s" % (THING, services), certstore=certstore)
    wait_synced(d)
    before = len(device_updates(emulator))

    # One delta for both: the update reporting both is refused (413).
    emulator.set_desired(THING, {"good": {"n": 1}, "big": {"expand": True}})
    wait_until(lambda: (shadow_state(emulator).get("reported", {}).get("good") == {"n": 1}
                        and not shadow_state(emulator).get("desired")),
               what="good reported and desired cleared of both")
    d.wait_log(re.escape(REFUSED % ("big", TOO_LARGE)))
    assert json.loads(read_file(big)) == {"blob": "x" * 9000}  # applied on the device
    assert "big" not in shadow_state(emulator)["reported"]
    # Both together, each alone, then big's desired clearing (once more if the
    # delta that good's update left came after it): big's report went twice.
    sent = settled_updates(emulator, before)
    assert 4 <= len(sent) <= 5, sent
    assert [u for u in sent if "big" in u["state"].get("reported", {})] == sent[:2], sent
    assert sent[-1]["state"] == {"desired": {"big": None}}
    assert d.log().count(REFUSED % ("big", TOO_LARGE)) == 1

    # Another change of good goes alone; big's unchanged config is not sent again.
    before = len(device_updates(emulator))
    emulator.set_desired(THING, {"good": {"n": 2}})
    wait_until(lambda: not shadow_state(emulator).get("desired"), what="desired good cleared")
    assert_quiet(emulator, seconds=1)
    assert [u["state"] for u in device_updates(emulator)[before:]] == [
        {"desired": {"good": None}, "reported": {"good": {"n": 2}}}]

    # Once big's config changes to one the shadow can hold, it is reported.
    emulator.set_desired(THING, {"big": {"blob": "DELETE", "small": 1}})
    wait_until(lambda: shadow_state(emulator)["reported"].get("big") == {"small": 1},
               what="big reported")
    assert json.loads(read_file(big)) == {"small": 1}
    assert shadow_state(emulator)["reported"]["good"] == {"n": 2}
    assert d.log().count("the shadow cannot take its reported config") == 1


def test_an_update_file_the_shadow_cannot_hold_goes_to_failed(tmp_path, emulator, certstore,
                                                              daemon_factory):
    services = tmp_path / "services"
    app = str(tmp_path / "app.json")
    json_service(services, "app", key="app", outfile=app, outformat="JSON", notifycmd="")
    updates = tmp_path / "updates"
    # Waiting before the start, so that the first update carries both.
    drop_update(updates, "app.1", '{"mode": "eco"}')
    drop_update(updates, "stats.1", json.dumps({"a": {"b": {"c": {"d": {"e": 1}}}}}))
    drop_update(updates, "blob.1", json.dumps({"data": "x" * 9000}))
    d = daemon_factory("--services=%s:%s" % (THING, services),
                       "--updates=%s:%s" % (THING, updates), certstore=certstore)
    d.wait_log(re.escape("new/blob.1: the shadow cannot take it: %s; moved to failed/" % TOO_LARGE))
    d.wait_log(re.escape("new/stats.1: the shadow cannot take it: %s; moved to failed/" % TOO_DEEP))
    wait_until(lambda: (shadow_state(emulator) or {}).get("reported") == {"app": {"mode": "eco"}},
               what="app reported")
    wait_until(lambda: os.listdir(str(updates / "new")) == [], what="app.1 deleted")
    assert sorted(os.listdir(str(updates / "failed"))) == ["blob.1", "stats.1"]
    assert json.loads(read_file(app)) == {"mode": "eco"}
    log = d.log()
    assert log.count(REFUSED % ("blob", TOO_LARGE)) == 1
    assert log.count(REFUSED % ("stats", TOO_DEEP)) == 1
    # All three together, then each alone.
    assert len(settled_updates(emulator, 0)) == 4, device_updates(emulator)

    # The next file of a key starts from what the shadow reports, not from the refused one.
    drop_update(updates, "stats.2", '{"uptime": 5}')
    wait_until(lambda: shadow_state(emulator)["reported"].get("stats") == {"uptime": 5},
               what="stats reported")
    wait_until(lambda: os.listdir(str(updates / "new")) == [], what="stats.2 deleted")
    assert sorted(os.listdir(str(updates / "failed"))) == ["blob.1", "stats.1"]


HUGE_PY = BIG_PY.replace('"big"', '"huge"').replace('"x" * 9000', '"x" * 140000')


def test_a_report_over_the_payload_limit_is_never_sent(tmp_path, emulator, certstore,
                                                       daemon_factory):
    services = tmp_path / "services"
    json_service(services, "good", key="good", outfile=str(tmp_path / "good.json"),
                 outformat="JSON", notifycmd="")
    write_file(services / "huge.py", HUGE_PY % {"outfile": str(tmp_path / "huge.json")})
    d = daemon_factory("--services=%s:%s" % (THING, services), certstore=certstore)
    wait_synced(d)
    before = len(device_updates(emulator))
    emulator.set_desired(THING, {"good": {"n": 1}, "huge": {"expand": True}})
    refused = REFUSED % ("huge", r"\d+ bytes, over AWS's message size limit")
    d.wait_log(refused.replace("(", r"\(").replace(")", r"\)"))
    wait_until(lambda: (shadow_state(emulator).get("reported", {}).get("good") == {"n": 1}
                        and not shadow_state(emulator).get("desired")),
               what="good reported and desired cleared of both")
    sent = settled_updates(emulator, before)
    assert all(len(m.payload) < 128 * 1024 for m in emulator.on(PREFIX + "/update"))
    assert all("huge" not in u["state"].get("reported", {}) for u in sent), sent
    assert 2 <= len(sent) <= 3, sent  # good alone, huge's desired clearing (twice at most)
    assert len(re.findall(refused.replace("(", r"\(").replace(")", r"\)"), d.log())) == 1
    assert "connection to" not in d.log()  # never disconnected for it
