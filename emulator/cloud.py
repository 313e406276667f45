"""The emulator's cloud-side MQTT client, and the app-side Python API.

`Emulator` connects to the broker's plain listener as an ordinary MQTT
client and subscribes to `#`, `$aws/#` (mosquitto's `#` does not match
`$` topics) and its private control topics. It records every message it
sees, hands `$aws/...` requests to the shadow, jobs and provisioning
services and publishes their answers, and reconnects when the broker
restarts. Its methods (set_desired, get_shadow, queue_job, open_tunnel,
publish, wait_for, ...) are what a cloud application would do through
AWS's APIs. `control_request` lets another process (the command line)
call those methods through the broker on `$emulator/control/...`.

It does not run or configure the broker (emulator.broker does), deliver a
reply to the requesting client only, or keep state across its own restarts.
"""

import itertools
import json
import logging
import os
import secrets
import socket
import threading
import time

import paho.mqtt.client as mqtt

from . import cbor, provisioning
from .defender import MIN_INTERVAL as DEFENDER_INTERVAL
from .defender import DefenderService
from .jobs import JobsService
from .provisioning import ProvisioningService, load_templates
from .shadow import DEFAULT_MAX_DEPTH, DEFAULT_MAX_STATE_BYTES, ShadowError, ShadowService

log = logging.getLogger("emulator")

CONTROL_REQUESTS = "$emulator/control/request/"
CONTROL_RESPONSES = "$emulator/control/response/"
SUBSCRIPTIONS = ("#", "$aws/#", CONTROL_REQUESTS + "+")
DEFAULT_REGION = "us-east-1"
_ids = itertools.count(1)


class EmulatorError(RuntimeError):
    """The emulator could not connect, or a control request failed."""


def new_client(client_id):
    """A paho client for either paho-mqtt 1.6 or 2.x, MQTT 3.1.1."""
    if hasattr(mqtt, "CallbackAPIVersion"):
        return mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                           protocol=mqtt.MQTTv311)
    return mqtt.Client(client_id=client_id, protocol=mqtt.MQTTv311)


def _failed(reason):
    """True if a CONNACK/SUBACK reason (an int in paho 1.6, ReasonCode in 2.x) is a failure."""
    return getattr(reason, "is_failure", reason != 0)


def encode_payload(topic, payload):
    """Bytes for PAYLOAD on TOPIC: str/bytes as they are, else JSON or, on cbor provisioning
    topics, CBOR."""
    if isinstance(payload, (bytes, bytearray)):
        return bytes(payload)
    if isinstance(payload, str):
        return payload.encode("utf-8")
    return provisioning.encode(payload, provisioning.encoding_of(topic))


class Message:
    """One message seen on the broker, with its arrival time."""

    __slots__ = ("topic", "payload", "qos", "retain", "time", "wall_time")

    def __init__(self, topic, payload, qos=0, retain=False):
        self.topic = topic
        self.payload = bytes(payload)
        self.qos = qos
        self.retain = retain
        self.time = time.monotonic()
        self.wall_time = time.time()

    def json(self):
        return json.loads(self.payload)

    def data(self):
        """The payload decoded as JSON, or as CBOR on cbor provisioning topics."""
        if provisioning.encoding_of(self.topic) == "cbor":
            return cbor.loads(self.payload)
        return self.json()

    def __repr__(self):
        return "Message(%r, %r)" % (self.topic, self.payload[:200])


class Emulator:
    """AWS IoT Core's cloud side on a broker; see the module docstring."""

    def __init__(self, port, host="127.0.0.1", ca=None, templates=None, clock=time.time,
                 client_id=None, max_depth=DEFAULT_MAX_DEPTH,
                 max_state_bytes=DEFAULT_MAX_STATE_BYTES, workdir=None, tick_interval=1.0,
                 max_messages=100000, defender_interval=DEFENDER_INTERVAL, job_minute=60.0):
        """CA: an emulator.pki.Pki or its directory; TEMPLATES: a templates file path or
        {name: Template}; CLOCK: seconds since the epoch, for all timestamps and expiry;
        JOB_MINUTE: seconds in a minute of a job's step and in-progress timers."""
        if isinstance(templates, str):
            templates = load_templates(templates)
        self.host, self.port = host, port
        self.clock = clock
        self.shadows = ShadowService(clock, max_depth, max_state_bytes)
        self.jobs = JobsService(clock, job_minute)
        self.defender = DefenderService(clock, defender_interval)
        self.provisioning = ProvisioningService(ca, templates, clock, workdir)
        self.messages = []
        self.max_messages = max_messages
        self.tick_interval = tick_interval
        self.ready = threading.Event()
        self._cond = threading.Condition()
        self._lock = threading.RLock()
        self._stopping = threading.Event()
        self._ticker = threading.Thread(target=self._tick_loop, name="emulator-ticker",
                                        daemon=True)
        self._subscribe_mid = None
        self._intercepts = {}  # request topic -> [(before, answer)], one per next request
        self._client = new_client(client_id or "iot-core-emulator-%d-%d" % (os.getpid(),
                                                                            next(_ids)))
        self._client.on_connect = self._on_connect
        self._client.on_subscribe = self._on_subscribe
        self._client.on_disconnect = self._on_disconnect
        self._client.on_message = self._on_message

    # ---- lifecycle ----

    def start(self, wait=True, timeout=10):
        """Connect (retrying until stopped); with WAIT, until subscribed or TIMEOUT."""
        self._client.reconnect_delay_set(min_delay=0.1, max_delay=2)
        self._client.connect_async(self.host, self.port, keepalive=30)
        self._client.loop_start()
        self._ticker.start()
        if wait and not self.wait_ready(timeout):
            self.stop()
            raise EmulatorError("could not connect to the broker at %s:%d within %g s"
                                % (self.host, self.port, timeout))
        return self

    def wait_ready(self, timeout=10):
        """Wait until connected and subscribed (again, after a broker restart)."""
        return self.ready.wait(timeout)

    def stop(self):
        self._stopping.set()
        if self._ticker.is_alive():
            self._ticker.join()
        self._client.disconnect()
        self._client.loop_stop()
        self.ready.clear()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()

    # ---- shadows (UpdateThingShadow, GetThingShadow, DeleteThingShadow) ----

    def update_shadow(self, thing, state, shadow=None, version=None):
        """Apply STATE ({"desired":..., "reported":...}) as UpdateThingShadow does:
        publishes accepted/delta/documents; returns the accepted payload; raises
        ShadowError (and publishes nothing) if AWS would reject the update."""
        request = {"state": state}
        if version is not None:
            request["version"] = version
        with self._lock:
            replies = self.shadows.update(thing, shadow, request)
            topic, payload = replies[0]
            if topic.endswith("/rejected"):
                raise ShadowError(payload["code"], payload["message"])
            self._publish_all(replies)
        return payload

    def set_desired(self, thing, desired, shadow=None):
        return self.update_shadow(thing, {"desired": desired}, shadow)

    def update_reported(self, thing, reported, shadow=None):
        return self.update_shadow(thing, {"reported": reported}, shadow)

    def update_shadow_unheard(self, thing, state, shadow=None):
        """Apply STATE as update_shadow does, but publish nothing: a change the
        device does not hear of (it missed it, or it raced with a request)."""
        with self._lock:
            self.shadows.update(thing, shadow, {"state": state})

    def intercept(self, topic, before=None, answer=True):
        """The next request on TOPIC not yet intercepted: BEFORE() runs just
        before it is handled (a cloud change racing with it, say); without
        ANSWER it is handled but nothing is published in answer (lost on the
        way, as when the device's connection drops right after it published)."""
        with self._lock:
            self._intercepts.setdefault(topic, []).append((before, answer))

    def get_shadow(self, thing, shadow=None):
        """The full shadow document (as /get/accepted shows it), or None."""
        with self._lock:
            return self.shadows.document(thing, shadow)

    def delete_shadow(self, thing, shadow=None):
        """Delete the shadow, publishing /delete/accepted; False if it did not exist."""
        with self._lock:
            if self.shadows.document(thing, shadow) is None:
                return False
            self._publish_all(self.shadows.delete(thing, shadow))
        return True

    # ---- jobs, tunnels, provisioning records ----

    def queue_job(self, thing, job_id, document, in_progress_timeout=None):
        """Queue a job execution for THING (CreateJob, with timeoutConfig's
        inProgressTimeoutInMinutes if given); publishes notify/notify-next."""
        with self._lock:
            self._publish_all(self.jobs.queue_job(thing, job_id, document, in_progress_timeout))

    def cancel_job(self, thing, job_id):
        """Cancel a pending execution (CancelJobExecution); publishes notify/notify-next."""
        with self._lock:
            self._publish_all(self.jobs.cancel_job(thing, job_id))

    def remove_job(self, thing, job_id):
        """End a pending execution as REMOVED (the thing left a continuous job's targets)."""
        with self._lock:
            self._publish_all(self.jobs.cancel_job(thing, job_id, "REMOVED"))

    def delete_job(self, thing, job_id, force=False):
        """DeleteJobExecution (a pending one only with FORCE); publishes notify/notify-next."""
        with self._lock:
            self._publish_all(self.jobs.delete_job(thing, job_id, force))

    def throttle_jobs(self, thing, count):
        """Answer THING's next COUNT Jobs requests with RequestThrottled."""
        with self._lock:
            self.jobs.throttle(thing, count)

    def job_execution(self, thing, job_id):
        """The execution as DescribeJobExecution shows it, or None."""
        with self._lock:
            return self.jobs.execution(thing, job_id)

    def tick(self):
        """Time out job executions whose step or in-progress timer ran out (the ticker
        thread calls this)."""
        with self._lock:
            self._publish_all(self.jobs.expire())

    def open_tunnel(self, thing, services, region=DEFAULT_REGION, token=None):
        """Simulate OpenTunnel with THING as destination; returns the access token."""
        if isinstance(services, str):
            services = [s.strip() for s in services.split(",")]
        services = list(services)
        if not services or not all(isinstance(s, str) and s for s in services):
            raise ValueError("a tunnel needs at least one service name")
        token = token or "AQGAAX" + secrets.token_urlsafe(90)
        self.publish("$aws/things/%s/tunnels/notify" % thing,
                     {"clientAccessToken": token, "clientMode": "destination",
                      "region": region, "services": services})
        return token

    def defender_report(self, thing):
        """THING's latest Device Defender report and its verdict ("accepted" or
        "rejected: CODE: MESSAGE"), as (document, verdict); None before any."""
        with self._lock:
            return self.defender.last_report(thing)

    @property
    def things(self):
        """Provisioned things: {thingName: {certificateId, template, parameters, ...}}."""
        with self._lock:
            return {k: dict(v) for k, v in self.provisioning.things.items()}

    @property
    def certificates(self):
        """Certificates issued by provisioning: {certificateId: {status, thingName, ...}}."""
        with self._lock:
            return {k: dict(v) for k, v in self.provisioning.certificates.items()}

    # ---- raw MQTT ----

    def publish(self, topic, payload, qos=1, retain=False):
        """Publish PAYLOAD (str/bytes as they are, anything else as JSON)."""
        return self._client.publish(topic, encode_payload(topic, payload), qos=qos, retain=retain)

    def on(self, topic):
        """Messages seen on exactly TOPIC."""
        with self._cond:
            return [m for m in self.messages if m.topic == topic]

    def wait_for(self, predicate, timeout=10, what="condition"):
        """Wait until predicate(messages) is truthy and return its value;
        AssertionError after TIMEOUT seconds."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                result = predicate(self.messages)
                if result:
                    return result
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError("timed out waiting for %s; last messages: %r"
                                         % (what, self.messages[-10:]))
                self._cond.wait(min(left, 0.5))

    def wait_topic(self, topic, count=1, timeout=10):
        """Wait for COUNT messages on TOPIC; returns all messages on it."""
        def enough(messages):
            found = [m for m in messages if m.topic == topic]
            return found if len(found) >= count else None
        return self.wait_for(enough, timeout, "%d message(s) on %s" % (count, topic))

    # ---- paho callbacks (network thread) ----

    def _on_connect(self, client, userdata, flags, reason, *rest):
        if _failed(reason):
            log.warning("broker refused the connection: %s", reason)
            return
        # One request is answered by several small publishes in a row
        # (accepted, delta, documents); with Nagle's algorithm the second
        # waits for the broker's delayed ACK (10 to 40 ms): a delay of this
        # stand-in's socket, not of the device it answers.
        sock = client.socket()
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        _, self._subscribe_mid = client.subscribe([(t, 1) for t in SUBSCRIPTIONS])

    def _on_subscribe(self, client, userdata, mid, *rest):
        if mid == self._subscribe_mid:
            log.info("connected to %s:%d and subscribed", self.host, self.port)
            self.ready.set()

    def _on_disconnect(self, client, *args):
        self.ready.clear()
        if not self._stopping.is_set():
            log.warning("lost the broker connection; reconnecting")

    def _on_message(self, client, userdata, msg):
        try:
            if msg.topic.startswith(CONTROL_REQUESTS):
                self._on_control(msg)
                return
            self._record(Message(msg.topic, msg.payload, msg.qos, msg.retain))
            self._dispatch(msg.topic, msg.payload)
        except Exception:  # one bad message must not kill paho's network thread
            log.exception("failed to handle a message on %s", msg.topic)

    def _record(self, message):
        with self._cond:
            self.messages.append(message)
            if len(self.messages) > self.max_messages:
                del self.messages[:len(self.messages) - self.max_messages]
            self._cond.notify_all()

    def _dispatch(self, topic, payload):
        if topic.startswith("$aws/things/"):
            services = (self.shadows, self.jobs, self.defender)
        elif topic.startswith(("$aws/certificates/", "$aws/provisioning-templates/")):
            services = (self.provisioning,)
        else:
            return
        with self._lock:
            before, answer = (self._intercepts.get(topic) or [(None, True)]).pop(0)
            if before:
                before()
            for service in services:
                replies = service.handle(topic, payload)
                if replies:
                    names = " ".join(t.rsplit("/", 1)[-1] for t, _ in replies)
                    log.info("%s -> %s%s", topic, names,
                             "" if answer else " (not published: intercepted)")
                    if answer:
                        self._publish_all(replies)
                    return

    def _publish_all(self, replies):
        for topic, payload in replies:
            self.publish(topic, payload)

    def _tick_loop(self):
        while not self._stopping.wait(self.tick_interval):
            try:
                self.tick()
            except Exception:  # keep ticking whatever happened
                log.exception("job timer tick failed")

    # ---- control requests from `python3 -m emulator` app commands ----

    def _on_control(self, msg):
        token = msg.topic[len(CONTROL_REQUESTS):]
        try:
            request = json.loads(msg.payload)
            operation = self._operations().get(request.get("op"))
            if operation is None:
                raise ValueError("unknown operation %r" % request.get("op"))
            reply = {"ok": True, "result": operation(request.get("args") or {})}
        except KeyError as e:
            reply = {"ok": False, "error": "missing argument %s" % e}
        except (ValueError, TypeError, AttributeError, ShadowError) as e:
            reply = {"ok": False, "error": str(e)}
        self._client.publish(CONTROL_RESPONSES + token, json.dumps(reply), qos=1)

    def _operations(self):
        return {
            "ping": lambda a: "pong",
            "desired": lambda a: self.set_desired(a["thing"], a["desired"], a.get("shadow")),
            "reported": lambda a: self.update_reported(a["thing"], a["reported"], a.get("shadow")),
            "get": lambda a: self.get_shadow(a["thing"], a.get("shadow")),
            "delete": lambda a: self.delete_shadow(a["thing"], a.get("shadow")),
            "publish": lambda a: self._publish_operation(a["topic"], a["payload"], a.get("qos", 1)),
            "tunnel": lambda a: self.open_tunnel(a["thing"], a["services"],
                                                 a.get("region", DEFAULT_REGION), a.get("token")),
            "job": lambda a: self.queue_job(a["thing"], a["job_id"], a["document"],
                                            a.get("in_progress_timeout")),
            "cancel-job": lambda a: self.cancel_job(a["thing"], a["job_id"]),
            "job-execution": lambda a: self.job_execution(a["thing"], a["job_id"]),
            "things": lambda a: self.things,
            "defender": lambda a: self.defender_report(a["thing"]),
        }

    def _publish_operation(self, topic, payload, qos):
        self.publish(topic, payload, qos)


def control_request(operation, args=None, port=1883, host="127.0.0.1", timeout=5.0):
    """Ask the emulator serving on the broker at HOST:PORT to do OPERATION; its result.

    Raises EmulatorError when the broker is unreachable, no emulator answers
    within TIMEOUT, or the emulator reports an error.
    """
    token = secrets.token_hex(8)
    answered = threading.Event()
    box = {}
    client = new_client("emulator-cli-" + token)

    def on_connect(client, userdata, flags, reason, *rest):
        if _failed(reason):
            box["error"] = "broker refused the connection: %s" % reason
            answered.set()
        else:
            client.subscribe(CONTROL_RESPONSES + token, qos=1)

    def on_subscribe(client, *rest):
        client.publish(CONTROL_REQUESTS + token, json.dumps({"op": operation, "args": args or {}}),
                       qos=1)

    def on_message(client, userdata, msg):
        box["reply"] = msg.payload
        answered.set()

    client.on_connect, client.on_subscribe, client.on_message = on_connect, on_subscribe, on_message
    try:
        client.connect(host, port, keepalive=30)
    except OSError as e:
        raise EmulatorError("cannot reach the broker at %s:%d: %s" % (host, port, e)) from None
    client.loop_start()
    try:
        if not answered.wait(timeout):
            raise EmulatorError("no emulator answered on %s:%d within %g s (is `serve` running?)"
                                % (host, port, timeout))
    finally:
        client.disconnect()
        client.loop_stop()
    return _control_result(box)


def _control_result(box):
    if "error" in box:
        raise EmulatorError(box["error"])
    try:
        reply = json.loads(box["reply"])
    except ValueError:
        raise EmulatorError("the emulator sent an unreadable answer") from None
    if not reply.get("ok"):
        raise EmulatorError(reply.get("error") or "the emulator reported an error")
    return reply.get("result")
