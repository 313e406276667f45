"""What a message file means: its bytes to a document, the document over its
letterhead, and that to the (topic, payload, qos) AWS IoT Core will take.

Pure work without I/O (the spool in lib/messages.py reads the files, runs
the letterhead generator and sends): `parse` reads a file's bytes,
`priority_of` its place in the order, `over_letterhead` lays it over a
letterhead (`letterhead` reads one), and `build` makes the `Message` to
publish, with the topic prefix and suffix, compression and AWS's limits
(lib/awslimits.py) applied. Everything refused raises `BadMessage`, whose
text says why, for the spool's one log line; nothing else escapes.
"""

import collections
import functools
import json
import math
import zlib

from . import awslimits, shadowdoc

FILE_LIMIT = 1024 * 1024  # a message file (or letterhead) bigger than this is refused unread


def _compress(data, wbits):
    compressor = zlib.compressobj(wbits=wbits)
    return compressor.compress(data) + compressor.flush()


COMPRESSORS = {
    "gzip": lambda data: _compress(data, 31),  # wbits 16+15: gzip header and trailer
    "deflate": lambda data: _compress(data, 15),  # zlib stream
}

# What json.dumps(payload, separators=(",", ":"), ensure_ascii=False,
# allow_nan=False) would build on every call. NaN, Infinity and numbers
# beyond a double (1e400 reads as infinity) are not JSON: refused.
_PAYLOAD_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False,
                                    allow_nan=False)

# A spool's messages mostly share a few topics: check each once.
topic_problem = functools.lru_cache(maxsize=256)(awslimits.topic_problem)

Message = collections.namedtuple("Message", "topic payload qos")


class BadMessage(Exception):
    """A message that cannot be sent; the text says why, for the log line."""


def parse(data):
    """The JSON object a message file's bytes hold; BadMessage when they hold none."""
    try:
        doc = json.loads(data)
    except (ValueError, RecursionError) as e:
        raise BadMessage("not JSON (%s)" % e) from None
    if not isinstance(doc, dict):
        raise BadMessage("not a JSON object")
    return doc


def priority_of(doc):
    """(priority, priority_slot) of a message document, each None when not given."""
    priority = doc.get("priority")
    slot = doc.get("priority_slot")
    if priority is not None and (isinstance(priority, bool) or
                                 not isinstance(priority, (int, float)) or
                                 not _finite(priority)):
        raise BadMessage("priority %s is not a number" % _shown(priority))
    if slot is not None and not isinstance(slot, str):
        raise BadMessage("priority_slot %s is not a string" % _shown(slot))
    return priority, slot


def _finite(number):
    try:
        return math.isfinite(number)
    except OverflowError:  # an integer of hundreds of digits
        return False


def letterhead(data, what):
    """The JSON object of a letterhead's bytes; what names it in the error."""
    try:
        head = json.loads(data)
    except (ValueError, RecursionError) as e:
        raise BadMessage("%s is not JSON (%s)" % (what, e)) from None
    if not isinstance(head, dict):
        raise BadMessage("%s is not a JSON object" % what)
    return head


def over_letterhead(head, doc):
    """doc deep-merged onto its letterhead: objects merge key by key, anything
    else replaces (a null too: a message deletes nothing of its letterhead)."""
    return shadowdoc.deep_merge(head, doc, share=True)


def generator_env(doc, prefix, suffix, filename, mtime_ns, was_prioritised):
    """The MESSAGE_* variables a letterhead generator gets for doc (before its
    letterhead), the topic between prefix and suffix."""
    topic = doc.get("topic")
    priority = doc.get("priority")
    slot = doc.get("priority_slot")
    if priority is None and slot is not None:
        priority = 1
    env = {"MESSAGE_TOPIC": prefix + topic + suffix if isinstance(topic, str) else "",
           "MESSAGE_FILENAME": filename,
           "MESSAGE_TIMESTAMP": "%d.%06d" % divmod(mtime_ns, 1000000),
           "MESSAGE_TIMESTAMP_S": str(mtime_ns // 1000000000),
           "MESSAGE_PRIORITY": "" if priority is None else json.dumps(priority),
           "MESSAGE_WAS_PRIORITISED": "1" if was_prioritised else ""}
    if slot is not None:
        env["MESSAGE_PRIORITY_SLOT"] = str(slot)
    return env


def build(doc, prefix="", suffix=""):
    """The Message to publish for doc (over its letterhead already), its topic
    between prefix and suffix; BadMessage for what AWS would not take."""
    topic = doc.get("topic")
    if topic is None:
        raise BadMessage("missing topic")
    if not isinstance(topic, str):
        raise BadMessage("topic is not a string")
    topic = prefix + topic + suffix
    problem = topic_problem(topic)
    if problem:
        raise BadMessage("topic %r: %s" % (topic[:300], problem))
    qos = doc.get("qos", 1)
    if isinstance(qos, bool) or qos not in (0, 1):
        raise BadMessage("qos %s is not 0 or 1" % _shown(qos))
    return Message(topic, _payload(doc), int(qos))


def unknown_compress(doc):
    """The compress value of doc as JSON (for a warning) when it names no
    known method, else None; such a message is sent uncompressed."""
    method = doc.get("compress")
    if method is None or isinstance(method, str) and method in COMPRESSORS:
        return None
    return _shown(method)


def _shown(value):
    """value as JSON for a log line, cut at 50 characters."""
    try:
        return json.dumps(value)[:50]
    except (ValueError, RecursionError):  # nested about as deep as json.loads goes
        return "(a %s nested too deeply to show)" % type(value).__name__


def _payload(doc):
    payload = doc.get("payload")
    if payload is None:
        raise BadMessage("missing payload")
    try:
        if isinstance(payload, str):
            data = payload.encode("utf-8")
        else:
            data = _PAYLOAD_ENCODER.encode(payload).encode()
    except UnicodeEncodeError:
        raise BadMessage("payload is not valid UTF-8 text") from None
    except RecursionError:
        raise BadMessage("payload is nested too deeply") from None
    except ValueError:  # allow_nan=False
        raise BadMessage("payload holds NaN, Infinity or a number beyond a double "
                         "(such as 1e400), which JSON cannot carry") from None
    method = doc.get("compress")
    compress = COMPRESSORS.get(method) if isinstance(method, str) else None
    if compress is not None:
        data = compress(data)
    if awslimits.payload_problem(len(data)):
        raise BadMessage("payload is %d bytes%s, over AWS's %d byte limit"
                         % (len(data), " compressed" if compress else "",
                            awslimits.PAYLOAD_LIMIT))
    return data
