"""AWS IoT Device Shadow logic, classic and named, with no MQTT in it.

`ShadowService` takes a request (topic + payload, or an app-side call) and
returns the messages AWS IoT Core would publish in answer, as a list of
(topic, payload dict). It keeps documents in memory, timestamps them from
an injectable clock and applies AWS's rules for merging, metadata, delta,
versions and errors (docs/aws-facts.md#device-shadow;
where that is unclear, the source of a rule is named beside it).

It does not talk to a broker, persist anything, limit request rates (429),
check that a thing is registered (404 "Thing not found") or validate thing
and shadow names.
"""

import copy
import json
import re
import time

SECTIONS = ("desired", "reported")
MAX_TOKEN_BYTES = 64
DEFAULT_MAX_DEPTH = 6
DEFAULT_MAX_STATE_BYTES = 8 * 1024

_TOPIC = re.compile(r"^\$aws/things/([^/]+)/shadow(?:/name/([^/]+))?/(get|update|delete)$")
_MISSING = object()


class ShadowError(Exception):
    """A rejected shadow request: HTTP-like CODE and AWS's MESSAGE text."""

    def __init__(self, code, message):
        super().__init__("%d %s" % (code, message))
        self.code = code
        self.message = message


def parse_topic(topic):
    """(thing, shadow name or None, "get"|"update"|"delete") for a request topic, else None."""
    match = _TOPIC.match(topic)
    return match.groups() if match else None


def topic_prefix(thing, name=None):
    """`$aws/things/THING/shadow` or `$aws/things/THING/shadow/name/NAME`."""
    prefix = "$aws/things/%s/shadow" % thing
    return prefix + "/name/" + name if name else prefix


# ---- pure document operations -------------------------------------------

def same_value(a, b):
    """JSON equality: 1 == 1.0, but true != 1 (Python's == says otherwise)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same_value(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same_value(x, y) for x, y in zip(a, b))
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b
    return type(a) is type(b) and a == b


def metadata_for(value, timestamp):
    """Metadata mirroring VALUE: each leaf (and null) becomes {"timestamp": T}.

    Arrays get one entry per element, as AWS's Greengrass shadow manager
    (ShadowStateMetadata.createMetadataPatch) does; AWS's own pages leave
    array metadata unsaid.
    """
    if isinstance(value, dict):
        return {k: metadata_for(v, timestamp) for k, v in value.items()}
    if isinstance(value, list):
        return [metadata_for(v, timestamp) for v in value]
    return {"timestamp": timestamp}


def without_nulls(patch):
    """PATCH with null members dropped, recursively; None if it held only nulls.

    An object whose members were all null is not created (Greengrass shadow
    manager JsonMerger.createMergeTree); an empty object `{}` is kept.
    """
    result = {}
    dropped = False
    for key, value in patch.items():
        if isinstance(value, dict):
            value = without_nulls(value)
        if value is None:
            dropped = True
        else:
            result[key] = value
    return None if dropped and not result else result


def merge(state, meta, patch, timestamp):
    """Merge PATCH into STATE in place, keeping META (its metadata) in step.

    Objects merge recursively, anything else (arrays included) replaces the
    old value whole, null deletes the key.
    """
    for key, value in patch.items():
        if value is None:
            state.pop(key, None)
            meta.pop(key, None)
        elif isinstance(value, dict) and isinstance(state.get(key), dict):
            if not isinstance(meta.get(key), dict):
                meta[key] = {}
            merge(state[key], meta[key], value, timestamp)
        elif isinstance(value, dict):
            created = without_nulls(value)
            if created is not None:
                state[key] = created
                meta[key] = metadata_for(created, timestamp)
        else:
            state[key] = value
            meta[key] = metadata_for(value, timestamp)


def compute_delta(desired, reported):
    """Desired keys whose value differs from reported (docs/aws-facts.md#device-shadow).

    Walks desired only (keys only in reported never appear), recurses into
    objects keeping the path to differing leaves, compares arrays whole.
    Empty desired objects contribute nothing (Greengrass shadow manager
    JsonUtil.calculateDelta treats them as missing).
    """
    delta = {}
    for key, want in desired.items():
        have = reported.get(key, _MISSING) if isinstance(reported, dict) else _MISSING
        if isinstance(want, dict):
            if not want:
                continue
            sub = compute_delta(want, have) if isinstance(have, dict) else want
            if sub:
                delta[key] = sub
        elif have is _MISSING or not same_value(want, have):
            delta[key] = want
    return delta


def delta_metadata(delta, desired_meta):
    """The desired-side metadata of the keys in DELTA (docs/aws-facts.md#device-shadow)."""
    result = {}
    for key, value in delta.items():
        meta = desired_meta.get(key, {})
        result[key] = delta_metadata(value, meta) if isinstance(value, dict) else meta
    return result


def nesting_depth(value):
    """Levels of objects/arrays in VALUE; a scalar is 0, `{}` is 1."""
    if isinstance(value, dict):
        return 1 + max((nesting_depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((nesting_depth(v) for v in value), default=0)
    return 0


def has_null_in_array(value, in_array=False):
    if value is None:
        return in_array
    if isinstance(value, dict):
        return any(has_null_in_array(v) for v in value.values())
    if isinstance(value, list):
        return any(has_null_in_array(v, True) for v in value)
    return False


def state_size(sections):
    """Bytes of desired + reported as compact JSON (metadata is not counted)."""
    return sum(len(_compact(sections[s]).encode("utf-8")) for s in SECTIONS if sections[s])


def _compact(value):
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


# ---- request parsing and validation --------------------------------------

def parse_payload(payload, empty_ok=False):
    """The request object from PAYLOAD (bytes/str/dict); ShadowError if unusable."""
    if isinstance(payload, dict):
        return json.loads(json.dumps(payload))  # private copy; fails on non-JSON values
    if isinstance(payload, (bytes, bytearray)):
        try:
            payload = bytes(payload).decode("utf-8")
        except UnicodeDecodeError:
            raise ShadowError(415, "Unsupported documented encoding; supported encoding is UTF-8"
                              ) from None
    if empty_ok and not payload.strip():
        return {}
    try:
        request = json.loads(payload, parse_constant=_reject_constant)
    except ValueError:
        raise ShadowError(400, "Invalid JSON") from None
    if not isinstance(request, dict):
        raise ShadowError(400, "Invalid JSON")
    return request


def _reject_constant(name):
    raise ValueError("%s is not JSON" % name)


def client_token(request):
    """The request's clientToken, or None; ShadowError if it is not a short string."""
    token = request.get("clientToken")
    if token is None:
        return None
    if not isinstance(token, str) or len(token.encode("utf-8")) > MAX_TOKEN_BYTES:
        raise ShadowError(400, "Invalid clientToken")
    return token


def validate_update(request, max_depth):
    """Raise ShadowError unless REQUEST is a valid update (docs/aws-facts.md#device-shadow)."""
    if "version" in request:
        version = request["version"]
        if isinstance(version, bool) or not isinstance(version, int) or version < 0:
            raise ShadowError(400, "Invalid version")
    if "state" not in request:
        raise ShadowError(400, "Missing required node: state")
    state = request["state"]
    if state is None:
        return  # {"state": null} clears the whole document (moto issue #9237, live AWS output)
    if not isinstance(state, dict):
        raise ShadowError(400, "State node must be an object")
    for key in state:
        if key not in SECTIONS:
            raise ShadowError(400, "State contains an invalid node: '%s'" % key)
    for section in SECTIONS:
        if state.get(section) is not None and not isinstance(state[section], dict):
            raise ShadowError(400, "%s node must be an object" % section.capitalize())
    # The state node itself counts as a level, as in the Greengrass shadow
    # manager (JsonUtil.calculateDepth, limit 6); that leaves 5 levels inside
    # desired/reported, matching the older AWS quota page.
    if nesting_depth(state) > max_depth:
        raise ShadowError(400, "JSON contains too many levels of nesting; maximum is %d"
                          % max_depth)
    if has_null_in_array(state):
        # AWS rejects nulls inside arrays; its exact message is not documented.
        raise ShadowError(400, "Invalid JSON")


# ---- the service ----------------------------------------------------------

class _Shadow:
    """One shadow document: sections, their metadata and the version counter."""

    def __init__(self):
        self.exists = False
        self.version = 0
        self.clear()

    def clear(self):
        self.state = {s: {} for s in SECTIONS}
        self.meta = {s: {} for s in SECTIONS}

    def snapshot(self):
        """{"state", "metadata", "version"} with empty sections left out."""
        return {"state": {s: copy.deepcopy(self.state[s]) for s in SECTIONS if self.state[s]},
                "metadata": {s: copy.deepcopy(self.meta[s]) for s in SECTIONS if self.meta[s]},
                "version": self.version}

    def delta(self):
        return compute_delta(self.state["desired"], self.state["reported"])


class ShadowService:
    """All shadows of all things; requests in, (topic, payload) lists out."""

    def __init__(self, clock=time.time, max_depth=DEFAULT_MAX_DEPTH,
                 max_state_bytes=DEFAULT_MAX_STATE_BYTES):
        self.clock = clock
        self.max_depth = max_depth
        self.max_state_bytes = max_state_bytes
        self._shadows = {}

    def handle(self, topic, payload):
        """Answer an MQTT request on TOPIC; [] if TOPIC is not a shadow request."""
        parsed = parse_topic(topic)
        if parsed is None:
            return []
        thing, name, operation = parsed
        return getattr(self, operation)(thing, name, payload)

    # -- queries for the app side and tests --

    def document(self, thing, name=None):
        """The full document as /get/accepted shows it (no clientToken), or None."""
        shadow = self._shadows.get((thing, name))
        if shadow is None or not shadow.exists:
            return None
        document = shadow.snapshot()
        delta = shadow.delta()
        if delta:
            document["state"]["delta"] = delta
        document["timestamp"] = self._now()
        return document

    def names(self):
        """(thing, shadow name or None) of every existing shadow."""
        return sorted((k for k, s in self._shadows.items() if s.exists),
                      key=lambda k: (k[0], k[1] or ""))

    # -- the three operations --

    def get(self, thing, name=None, payload=b""):
        prefix = topic_prefix(thing, name)
        token = None
        try:
            token = client_token(parse_payload(payload, empty_ok=True))
            document = self.document(thing, name)
            if document is None:
                raise self._not_found(thing, name)
        except ShadowError as e:
            return [(prefix + "/get/rejected", self._error(e, token))]
        return [(prefix + "/get/accepted", _with_token(document, token))]

    def delete(self, thing, name=None, payload=b""):
        prefix = topic_prefix(thing, name)
        token = _lenient_token(payload)  # the body is ignored apart from clientToken
        shadow = self._shadows.get((thing, name))
        if shadow is None or not shadow.exists:
            return [(prefix + "/delete/rejected",
                     self._error(self._not_found(thing, name), token))]
        shadow.exists = False
        shadow.clear()  # the version counter stays (docs/aws-facts.md#device-shadow)
        reply = {"version": shadow.version, "timestamp": self._now()}
        return [(prefix + "/delete/accepted", _with_token(reply, token))]

    def update(self, thing, name=None, payload=b""):
        prefix = topic_prefix(thing, name)
        token = None
        try:
            request = parse_payload(payload)
            token = client_token(request)
            validate_update(request, self.max_depth)
            shadow = self._shadows.get((thing, name)) or _Shadow()
            _check_version(shadow, request)
            state, meta = self._apply(shadow, request["state"])
        except ShadowError as e:
            return [(prefix + "/update/rejected", self._error(e, token))]
        return self._commit(thing, name, shadow, state, meta, request, token)

    # -- update internals --

    def _apply(self, shadow, patch):
        """New (state, metadata) with PATCH applied; the shadow is untouched."""
        state, meta = copy.deepcopy(shadow.state), copy.deepcopy(shadow.meta)
        timestamp = self._now()
        for section in SECTIONS:
            if patch is None or (section in patch and patch[section] is None):
                state[section], meta[section] = {}, {}
            elif section in patch:
                merge(state[section], meta[section], patch[section], timestamp)
        if state_size(state) > self.max_state_bytes:
            raise ShadowError(413, "The payload exceeds the maximum size allowed")
        return state, meta

    def _commit(self, thing, name, shadow, state, meta, request, token):
        created = not shadow.exists
        previous = None if created else shadow.snapshot()
        shadow.state, shadow.meta = state, meta
        shadow.exists = True
        shadow.version += 1
        self._shadows[(thing, name)] = shadow
        now = self._now()
        prefix = topic_prefix(thing, name)
        accepted = {"state": request["state"], "metadata": metadata_for(request["state"], now),
                    "version": shadow.version, "timestamp": now}
        replies = [(prefix + "/update/accepted", _with_token(accepted, token))]
        delta = shadow.delta()
        if delta:
            event = {"state": delta, "metadata": delta_metadata(delta, shadow.meta["desired"]),
                     "version": shadow.version, "timestamp": now}
            replies.append((prefix + "/update/delta", _with_token(event, token)))
        documents = {"current": shadow.snapshot(), "timestamp": now}
        if previous is not None:
            documents["previous"] = previous
        replies.append((prefix + "/update/documents", _with_token(documents, token)))
        return replies

    # -- helpers --

    def _now(self):
        return int(self.clock())

    def _error(self, error, token):
        return _with_token({"code": error.code, "message": error.message,
                            "timestamp": self._now()}, token)

    @staticmethod
    def _not_found(thing, name):
        # The classic shadow's message quotes the thing name (docs/aws-facts.md#device-shadow).
        return ShadowError(404, "No shadow exists with name: '%s'" % (name or thing))


def _check_version(shadow, request):
    if "version" not in request:
        return
    if not shadow.exists:
        # A shadow being created accepts only version 0 (Greengrass shadow
        # manager JsonUtil.validatePayload); AWS's answer is unconfirmed.
        if request["version"] != 0:
            raise ShadowError(400, "Invalid version")
    elif request["version"] != shadow.version:
        raise ShadowError(409, "Version conflict")


def _with_token(payload, token):
    if token is not None:
        payload["clientToken"] = token
    return payload


def _lenient_token(payload):
    try:
        return client_token(parse_payload(payload, empty_ok=True))
    except ShadowError:
        return None
