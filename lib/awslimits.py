"""AWS IoT Core's limits on what a device publishes and subscribes to, and the
checks against them: the one home of those facts in chariotd.

AWS answers a publish it will not take by closing the connection (a payload
over 128 KiB, a reserved topic the device may not use), or rejects it; a
daemon that sends it again after each reconnect never gets anything else
through. So everything is checked here before it is sent. The figures and
the reserved topics are AWS's own (the developer guide's "MQTT", "Topics",
"Reserved topics" and "AWS IoT Core message broker limits" pages; see
docs/aws-facts.md#topics-payloads-and-rates). Control characters are
refused too: MQTT says a topic should not hold them and mosquitto drops
the connection of a client that sends one.

Pure code without imports or I/O, so that it runs under MicroPython too;
callers cache the answers if they need to.
"""

PAYLOAD_LIMIT = 128 * 1024  # bytes of a PUBLISH payload
CLIENTID_LIMIT = 128  # bytes of a client id, UTF-8
TOPIC_BYTES_LIMIT = 256  # bytes of a topic name or filter, UTF-8
TOPIC_SLASH_LIMIT = 7  # slashes in a topic or filter, i.e. at most 8 levels
BASIC_INGEST = "$aws/rules/"  # its "$aws/rules/RULE/" prefix is not counted
SHARED = "$share/"  # nor is a shared subscription's "$share/NAME/"

# The reserved topics a device may publish to, level by level; "*" is any
# one level, a trailing "**" any number of levels (at least one). Anything
# else starting with "$" is reserved (AWS's answers such as .../accepted,
# the lifecycle events, tunnel notifications, $SYS, ...).
DEVICE_PUBLISH = (
    "$aws/rules/*/**",  # Basic Ingest
    "$aws/rules/*",
    "$aws/things/*/shadow/get",
    "$aws/things/*/shadow/update",
    "$aws/things/*/shadow/delete",
    "$aws/things/*/shadow/name/*/get",
    "$aws/things/*/shadow/name/*/update",
    "$aws/things/*/shadow/name/*/delete",
    "$aws/things/*/jobs/get",
    "$aws/things/*/jobs/start-next",
    "$aws/things/*/jobs/*/get",
    "$aws/things/*/jobs/*/update",
    "$aws/certificates/create/*",
    "$aws/certificates/create-from-csr/*",
    "$aws/provisioning-templates/*/provision/*",
    "$aws/things/*/defender/metrics/*",  # Device Defender
    "$aws/things/*/streams/*/get/*",  # MQTT-based file delivery
    "$aws/things/*/streams/*/describe/*",
    "$aws/device_location/*/get_position_estimate",  # Device Location
    "$aws/commands/things/*/executions/*/response/*",  # Commands
    "$aws/commands/clients/*/executions/*/response/*",
)
_PATTERNS = tuple(p.split("/") for p in DEVICE_PUBLISH)


def topic_problem(topic):
    """Why AWS IoT Core would refuse a PUBLISH to topic (a str), or None."""
    problem = _name_problem(topic)
    if problem:
        return problem
    if "+" in topic or "#" in topic:
        return "contains a wildcard (+ or #)"
    if topic[0] == "$" and not _device_may_publish(topic):
        return "a reserved topic a device may not publish to"
    return _size_problem(topic)


def filter_problem(topic_filter):
    """Why AWS IoT Core would refuse a SUBSCRIBE to topic_filter, or None:
    `#` only alone in the last level, `+` only alone in its level."""
    problem = _name_problem(topic_filter)
    if problem:
        return problem
    levels = topic_filter.split("/")
    last = len(levels) - 1
    for i, level in enumerate(levels):
        if "#" in level and (level != "#" or i != last):
            return "# is allowed only alone in the last level"
        if "+" in level and level != "+":
            return "+ is allowed only alone in its level"
    return _size_problem(topic_filter)


def payload_problem(size):
    """Why AWS IoT Core would refuse a payload of size bytes, or None."""
    if size > PAYLOAD_LIMIT:
        return "%d bytes, over AWS's %d byte limit" % (size, PAYLOAD_LIMIT)
    return None


def character_problem(text):
    """Why text holds a character that MQTT says a topic must or should not
    (C0 and C1 controls, DEL, surrogates, noncharacters), or None."""
    for ch in text:
        c = ord(ch)
        if c < 0x20 or 0x7F <= c <= 0x9F:
            return "contains the control character U+%04X" % c
        if 0xD800 <= c <= 0xDFFF or 0xFDD0 <= c <= 0xFDEF or (c & 0xFFFE) == 0xFFFE:
            return "contains U+%04X, which is not a character" % c
    return None


def _name_problem(name):
    if not name:
        return "empty"
    return character_problem(name)


def _size_problem(name):
    size = len(name.encode("utf-8"))
    if size > TOPIC_BYTES_LIMIT:
        return "%d bytes, over AWS's %d byte limit" % (size, TOPIC_BYTES_LIMIT)
    counted = name
    for prefix in (BASIC_INGEST, SHARED):
        if name.startswith(prefix):
            counted = name[len(prefix):].partition("/")[2]
            break
    slashes = counted.count("/")
    if slashes > TOPIC_SLASH_LIMIT:
        return "%d slashes, over AWS's limit of %d" % (slashes, TOPIC_SLASH_LIMIT)
    return None


def _device_may_publish(topic):
    levels = topic.split("/")
    for pattern in _PATTERNS:
        if pattern[-1] == "**":
            if len(levels) < len(pattern):
                continue
            fixed = pattern[:-1]
        elif len(levels) != len(pattern):
            continue
        else:
            fixed = pattern
        if all(p == "*" and level or p == level for p, level in zip(fixed, levels)):
            return True
    return False
