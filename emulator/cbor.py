"""Minimal CBOR (RFC 8949) for fleet provisioning's `cbor` payload format.

Encodes and decodes the data model JSON has (maps, arrays, text, numbers,
booleans, null) plus byte strings, which is all the provisioning topics
carry. Decoding accepts definite and indefinite lengths, half/single/double
floats and skips tags. It does not do canonical/deterministic encoding,
big numbers, or any tag semantics (a tagged item decodes to the bare item).
"""

import struct

_MAX_UINT64 = (1 << 64) - 1
_BREAK = object()


class CborError(ValueError):
    """The bytes are not CBOR this module can read, or the value cannot be encoded."""


def dumps(value):
    """Encode VALUE (dict, list, tuple, str, bytes, int, float, bool, None) as CBOR."""
    out = bytearray()
    _encode(value, out)
    return bytes(out)


def loads(data):
    """Decode one CBOR item that must span all of DATA."""
    reader = _Reader(bytes(data))
    value = reader.item()
    if value is _BREAK:
        raise CborError("unexpected break code")
    if reader.pos != len(reader.data):
        raise CborError("%d trailing bytes after the CBOR item" % (len(reader.data) - reader.pos))
    return value


def _head(major, number, out):
    if number < 24:
        out.append(major << 5 | number)
    elif number <= 0xFF:
        out += struct.pack(">BB", major << 5 | 24, number)
    elif number <= 0xFFFF:
        out += struct.pack(">BH", major << 5 | 25, number)
    elif number <= 0xFFFFFFFF:
        out += struct.pack(">BI", major << 5 | 26, number)
    else:
        out += struct.pack(">BQ", major << 5 | 27, number)


def _encode(value, out):
    if value is None:
        out.append(0xF6)
    elif value is True:
        out.append(0xF5)
    elif value is False:
        out.append(0xF4)
    elif isinstance(value, int):
        _encode_int(value, out)
    elif isinstance(value, float):
        out += b"\xfb" + struct.pack(">d", value)
    elif isinstance(value, str):
        raw = value.encode("utf-8")
        _head(3, len(raw), out)
        out += raw
    elif isinstance(value, (bytes, bytearray)):
        _head(2, len(value), out)
        out += value
    elif isinstance(value, (list, tuple)):
        _head(4, len(value), out)
        for item in value:
            _encode(item, out)
    elif isinstance(value, dict):
        _head(5, len(value), out)
        for key, item in value.items():
            _encode(key, out)
            _encode(item, out)
    else:
        raise CborError("cannot encode %s as CBOR" % type(value).__name__)


def _encode_int(value, out):
    if 0 <= value <= _MAX_UINT64:
        _head(0, value, out)
    elif -_MAX_UINT64 - 1 <= value < 0:
        _head(1, -1 - value, out)
    else:
        raise CborError("integer %d does not fit in 64 bits" % value)


class _Reader:
    def __init__(self, data):
        self.data = data
        self.pos = 0

    def take(self, count):
        if self.pos + count > len(self.data):
            raise CborError("CBOR data ends in the middle of an item")
        chunk = self.data[self.pos:self.pos + count]
        self.pos += count
        return chunk

    def argument(self, info):
        """The head's argument; None for an indefinite length (info 31)."""
        if info < 24:
            return info
        if info == 31:
            return None
        sizes = {24: ">B", 25: ">H", 26: ">I", 27: ">Q"}
        if info not in sizes:
            raise CborError("reserved additional information %d" % info)
        fmt = sizes[info]
        return struct.unpack(fmt, self.take(struct.calcsize(fmt)))[0]

    def item(self):
        initial = self.take(1)[0]
        major, info = initial >> 5, initial & 0x1F
        if major == 7:
            return self.simple(info)
        number = self.argument(info)
        if number is None and major in (0, 1, 6):
            raise CborError("indefinite length is not allowed for major type %d" % major)
        return _MAJOR[major](self, number)

    def simple(self, info):
        if info == 31:
            return _BREAK
        if info in (25, 26, 27):
            fmt = {25: ">e", 26: ">f", 27: ">d"}[info]
            return struct.unpack(fmt, self.take(struct.calcsize(fmt)))[0]
        values = {20: False, 21: True, 22: None, 23: None}
        if info not in values:
            raise CborError("unsupported simple value %d" % info)
        return values[info]

    def string(self, number, major):
        if number is not None:
            return self.take(number)
        chunks = []
        while True:
            chunk = self.item()
            if chunk is _BREAK:
                return b"".join(chunks)
            if not isinstance(chunk, (bytes, str)) or (major == 3) != isinstance(chunk, str):
                raise CborError("bad chunk in an indefinite-length string")
            chunks.append(chunk.encode("utf-8") if isinstance(chunk, str) else chunk)

    def text(self, number):
        try:
            return self.string(number, 3).decode("utf-8")
        except UnicodeDecodeError as e:
            raise CborError("text string is not UTF-8: %s" % e) from None

    def array(self, number):
        items = []
        while number is None or len(items) < number:
            value = self.item()
            if value is _BREAK:
                if number is None:
                    return items
                raise CborError("unexpected break code in an array")
            items.append(value)
        return items

    def map(self, number):
        result = {}
        while number is None or len(result) < number:
            key = self.item()
            if key is _BREAK and number is None:
                return result
            value = self.item()
            if key is _BREAK or value is _BREAK:
                raise CborError("unexpected break code in a map")
            try:
                result[key] = value
            except TypeError:
                raise CborError("unsupported map key type %s" % type(key).__name__) from None
        return result


_MAJOR = {
    0: lambda r, n: n,
    1: lambda r, n: -1 - n,
    2: lambda r, n: r.string(n, 2),
    3: lambda r, n: r.text(n),
    4: lambda r, n: r.array(n),
    5: lambda r, n: r.map(n),
    6: lambda r, n: r.item(),  # tag: keep the tagged item, drop the tag
}
