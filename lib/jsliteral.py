"""Read a NodeJS chariotd service definition, ``module.exports = {...};``,
as a data literal.

Accepted: an optional ``'use strict';``, then ``module.exports =`` and one
object literal, optionally followed by ``;``.  Values may be single- or
double-quoted strings with JS escapes, numbers (decimal, float, exponent,
signed, 0x/0o/0b), true, false, null, arrays and nested objects; keys may be
identifiers or quoted strings; trailing commas, ``//`` and ``/* */`` comments
are allowed.

Nothing is ever executed.  Anything beyond a literal (a function, ``=>``, an
identifier used as a value, ``require(...)``, a template string, arithmetic,
a method, another statement) raises CodeError, a LiteralError whose message
contains the word "code", so the caller can tell the user to port the
definition to Python.  Malformed text raises plain LiteralError.  Messages
start with the line number.  No I/O; MicroPython-friendly (no imports).
"""


class LiteralError(ValueError):
    """The text is not a valid ``module.exports = {...}`` literal."""


class CodeError(LiteralError):
    """The text holds JavaScript code, which is never run."""


_MAX_DEPTH = 64
_ID_START = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_$"
_DIGITS = "0123456789"
_KEYWORDS = {"true": True, "false": False, "null": None}
_SIMPLE_ESCAPES = {
    "n": "\n",
    "t": "\t",
    "r": "\r",
    "b": "\b",
    "f": "\f",
    "v": "\v",
    "'": "'",
    '"': '"',
    "\\": "\\",
}
_RADIX = {"x": 16, "o": 8, "b": 2}
# After a complete value, these continue a JavaScript expression.
_OPERATORS = "=+-*/%?.([|&<>!^~`"


def parse(text):
    """The object assigned to ``module.exports`` in ``text``, as a dict."""
    return _Parser(text).document()


def _is_id_start(c):
    return c != "" and (c in _ID_START or (c > "\x7f" and c.isalpha()))


def _is_id_char(c):
    return _is_id_start(c) or (c != "" and c in _DIGITS)


class _Parser:
    def __init__(self, text):
        self.text = text
        self.pos = 0

    # --- low level ---------------------------------------------------------

    def fail(self, message, pos=None, cls=LiteralError):
        where = self.pos if pos is None else pos
        line = self.text.count("\n", 0, where) + 1
        return cls("line %d: %s" % (line, message))

    def code(self, message, pos=None):
        return self.fail(message + " is code, not a literal", pos, CodeError)

    def peek(self, offset=0):
        i = self.pos + offset
        return self.text[i] if i < len(self.text) else ""

    def take(self):
        c = self.text[self.pos]
        self.pos += 1
        return c

    def skip(self):
        """Skip whitespace and comments."""
        while self.pos < len(self.text):
            c = self.peek()
            if c.isspace() or c == "\ufeff":
                self.pos += 1
            elif c == "/" and self.peek(1) == "/":
                end = self.text.find("\n", self.pos)
                self.pos = len(self.text) if end < 0 else end
            elif c == "/" and self.peek(1) == "*":
                end = self.text.find("*/", self.pos + 2)
                if end < 0:
                    raise self.fail("unterminated /* comment")
                self.pos = end + 2
            else:
                return

    def identifier(self):
        start = self.pos
        while _is_id_char(self.peek()):
            self.pos += 1
        return self.text[start : self.pos]

    def expect(self, token, what):
        self.skip()
        if not self.text.startswith(token, self.pos):
            raise self.fail("expected %s" % what)
        self.pos += len(token)

    # --- document ----------------------------------------------------------

    def document(self):
        self.skip()
        self.use_strict()
        self.skip()
        start = self.pos
        if self.identifier() != "module":
            self.pos = start
            if _is_id_start(self.peek()):
                raise self.code("a statement other than module.exports = {...}")
            raise self.fail("expected module.exports = {...}")
        self.expect(".", "'.exports' after 'module'")
        self.skip()
        if self.identifier() != "exports":
            raise self.code("a statement other than module.exports = {...}", start)
        self.expect("=", "'=' after module.exports")
        self.skip()
        value_pos = self.pos
        value = self.value(0)
        if not isinstance(value, dict):
            raise self.fail("module.exports must be an object", value_pos)
        self.skip()
        if self.peek() == ";":
            self.pos += 1
            self.skip()
        if self.pos < len(self.text):
            c = self.peek()
            if c in _OPERATORS or _is_id_start(c):
                raise self.code("text after the module.exports object")
            raise self.fail("unexpected %r after the module.exports object" % c)
        return value

    def use_strict(self):
        for directive in ("'use strict'", '"use strict"'):
            if self.text.startswith(directive, self.pos):
                self.pos += len(directive)
                self.skip()
                if self.peek() == ";":
                    self.pos += 1
                return

    # --- values ------------------------------------------------------------

    def value(self, depth):
        if depth > _MAX_DEPTH:
            raise self.fail("nested more than %d deep" % _MAX_DEPTH)
        self.skip()
        c = self.peek()
        if c == "{":
            return self.object(depth)
        if c == "[":
            return self.array(depth)
        if c in ("'", '"'):
            return self.string()
        if c != "" and c in _DIGITS + "-+.":
            return self.number()
        if _is_id_start(c):
            return self.word()
        if c == "`":
            raise self.code("a template string")
        if c == "(":
            raise self.code("an expression in parentheses (or arrow function)")
        if c == "":
            raise self.fail("unexpected end of text, expected a value")
        raise self.fail("unexpected %r, expected a value" % c)

    def word(self):
        start = self.pos
        name = self.identifier()
        if name in _KEYWORDS:
            return _KEYWORDS[name]
        if name == "function":
            raise self.code("a function", start)
        raise self.code("the identifier '%s' used as a value" % name, start)

    def after_value(self, closer):
        """Consume ',' or leave ``closer``; anything else is an error."""
        self.skip()
        c = self.peek()
        if c == ",":
            self.pos += 1
        elif c != closer:
            self.bad_follower("',' or '%s'" % closer)

    def bad_follower(self, expected):
        c = self.peek()
        if c == "":
            raise self.fail("unexpected end of text, expected %s" % expected)
        if c in _OPERATORS or _is_id_start(c):
            raise self.code("an expression ('%s' after a value)" % c)
        raise self.fail("unexpected %r, expected %s" % (c, expected))

    def object(self, depth):
        self.pos += 1  # "{"
        result = {}
        while True:
            self.skip()
            if self.peek() == "}":
                self.pos += 1
                return result
            key = self.key()
            self.skip()
            if self.peek() != ":":
                self.bad_member(key)
            self.pos += 1
            result[key] = self.value(depth + 1)
            self.after_value("}")

    def key(self):
        c = self.peek()
        if c in ("'", '"'):
            return self.string()
        if _is_id_start(c):
            return self.identifier()
        if c == "[":
            raise self.code("a computed key")
        if c == ".":
            raise self.code("a spread (...)")
        if c == "":
            raise self.fail("unexpected end of text, expected a key or '}'")
        raise self.fail("unexpected %r, expected a key or '}'" % c)

    def bad_member(self, key):
        c = self.peek()
        if c == "(":
            raise self.code("the method '%s'" % key)
        if c in (",", "}"):
            raise self.code("the shorthand property '%s' (a variable)" % key)
        if _is_id_start(c):
            raise self.code("'%s %s...' (a getter, setter or async method)" % (key, c))
        raise self.fail("expected ':' after the key '%s'" % key)

    def array(self, depth):
        self.pos += 1  # "["
        result = []
        while True:
            self.skip()
            c = self.peek()
            if c == "]":
                self.pos += 1
                return result
            if c == ",":
                raise self.fail("empty array element")
            if c == "." and self.peek(1) == ".":
                raise self.code("a spread (...)")
            result.append(self.value(depth + 1))
            self.after_value("]")

    # --- strings -----------------------------------------------------------

    def string(self):
        start = self.pos
        quote = self.take()
        parts = []
        while True:
            c = self.peek()
            if c in ("", "\n", "\r"):
                raise self.fail("unterminated string", start)
            self.pos += 1
            if c == quote:
                return "".join(parts)
            parts.append(self.escape() if c == "\\" else c)

    def escape(self):
        c = self.peek()
        if c == "":
            raise self.fail("unterminated string")
        self.pos += 1
        if c in _SIMPLE_ESCAPES:
            return _SIMPLE_ESCAPES[c]
        if c == "\r":  # line continuation, CRLF
            if self.peek() == "\n":
                self.pos += 1
            return ""
        if c in ("\n", "\u2028", "\u2029"):  # line continuation
            return ""
        if c == "0" and not (self.peek() != "" and self.peek() in _DIGITS):
            return "\0"
        if c in _DIGITS:
            raise self.fail("octal escape '\\%s' in a string" % c, self.pos - 2)
        if c == "x":
            return chr(self.hex_digits(2))
        if c == "u":
            return self.unicode_escape()
        return c  # JS: any other escaped character stands for itself

    def hex_digits(self, count):
        digits = self.text[self.pos : self.pos + count]
        if len(digits) != count or not _is_hex(digits):
            raise self.fail("bad escape: expected %d hex digits" % count)
        self.pos += count
        return int(digits, 16)

    def unicode_escape(self):
        start = self.pos - 2
        if self.peek() == "{":
            end = self.text.find("}", self.pos)
            digits = self.text[self.pos + 1 : end] if end > 0 else ""
            if not digits or not _is_hex(digits) or int(digits, 16) > 0x10FFFF:
                raise self.fail("bad \\u{...} escape", start)
            self.pos = end + 1
            code = int(digits, 16)
        else:
            code = self.hex_digits(4)
        if 0xD800 <= code <= 0xDBFF and self.text.startswith("\\u", self.pos):
            # A surrogate pair, as JSON.stringify and editors write astral
            # characters: combine into one code point.
            saved = self.pos
            self.pos += 2
            low = self.hex_digits(4)
            if 0xDC00 <= low <= 0xDFFF:
                return chr(0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00))
            self.pos = saved
        if 0xD800 <= code <= 0xDFFF:
            # A lone surrogate cannot be written to a UTF-8 file later.
            raise self.fail("lone surrogate \\u%04X in a string" % code, start)
        return chr(code)

    # --- numbers -----------------------------------------------------------

    def number(self):
        start = self.pos
        sign = 1
        if self.peek() in ("-", "+"):
            sign = -1 if self.take() == "-" else 1
        if self.peek() == "0" and self.peek(1) != "" and self.peek(1).lower() in _RADIX:
            value = self.radix_number()
        else:
            value = self.decimal_number(start)
        if _is_id_char(self.peek()):
            raise self.fail("bad number", start)
        return sign * value

    def radix_number(self):
        radix = _RADIX[self.text[self.pos + 1].lower()]
        self.pos += 2
        digits = self.identifier()  # letters and digits, checked by int()
        try:
            return int(digits, radix)
        except ValueError:
            raise self.fail("bad base-%d number" % radix) from None

    def decimal_number(self, start):
        body = self.pos
        while self.peek() != "" and self.peek() in _DIGITS + ".":
            self.pos += 1
        if self.peek() in ("e", "E"):
            self.pos += 1
            if self.peek() in ("-", "+"):
                self.pos += 1
            while self.peek() != "" and self.peek() in _DIGITS:
                self.pos += 1
        text = self.text[body : self.pos]
        if not text or text[0] not in _DIGITS + ".":
            if _is_id_start(self.peek()):  # -Infinity, -x
                raise self.code("a signed identifier", start)
            raise self.fail("bad number", start)
        if len(text) > 1 and text[0] == "0" and text[1] in _DIGITS:
            raise self.fail("legacy octal number %r" % text, start)
        try:
            return int(text) if text.isdigit() else float(text)
        except ValueError:
            raise self.fail("bad number %r" % text, start) from None


def _is_hex(text):
    return all(c in "0123456789abcdefABCDEF" for c in text)
