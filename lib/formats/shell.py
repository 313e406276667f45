"""SHELL outfile format: variables for ``. FILE`` in sh, dash, bash and ash.

``dump`` writes one ``NAME=VALUE`` assignment per line, sorted by name.
Nested objects join their keys with ``_``; every scalar becomes a
single-quoted string (numbers as their JSON text, booleans as ``true`` /
``false``).  None values are omitted; ``dump(None)`` is an empty file.

Arrays are bash arrays, the NodeJS daemon's ``NAME=('a' 'b')``, but a
POSIX shell cannot even parse that line: sh, dash and BusyBox ash stop
sourcing with a syntax error there (a non-interactive shell exits), and
every scalar after it is lost.  So an array's line hands that text to
``eval`` behind a bash guard::

    [ -z "${BASH_VERSION-}" ] || eval 'NAME=('\\''a'\\'' '\\''b'\\'')'

A POSIX shell sees a test and one single-quoted word, skips the ``eval``
and goes on with status 0 (safe under ``set -eu``; the array name stays
unset); bash evaluates exactly ``NAME=('a' 'b')``.  Only bash (also as /bin/sh)
reads arrays; ksh and zsh skip them like the POSIX shells.

Safety is the point of this module.  A value is wrapped in single quotes and
each embedded ``'`` is written as ``'\\''`` (close, escaped quote, reopen);
nothing else is special inside single quotes, newlines included, so sourcing
yields exactly the stored string and never runs anything (an array's text is
quoted that way twice: once as bash will read it, once for ``eval``).
Whatever cannot be written faithfully raises FormatError instead of
producing a broken file: a name that is not ``[A-Za-z_][A-Za-z0-9_]*``, two
keys that flatten to the same name (``a_b`` and ``{a: {b}}``), a NUL
character (shell strings cannot hold one), a non-object config, an array
holding objects, arrays or null.  Nor is a name ever written that the
shell, the dynamic loader or a common child program acts on (PATH, IFS,
BASH_ENV, LD_PRELOAD, ...; the list and its sources are in shellnames.py),
also when it is made by joining nested keys: the error names every such
name, sorted.

``load`` reads what ``dump`` writes, multi-line values and guarded arrays
included, into a flat ``{name: value}`` dict, plus the looser forms of the
NodeJS chariotd and of hand-written files: bare ``NAME=(...)`` arrays,
unquoted values, double quotes with POSIX backslash escapes, ``\\'``
inside single quotes meaning a literal quote (what the NodeJS daemon
writes), blank lines, ``#`` comments, ``export`` prefixes, a trailing ``;``
and CRLF line ends.  It never expands anything: ``$name``, ``${...}``,
``$(...)`` and backquotes outside single quotes are refused rather than
silently read as different text than a shell would see.  It does not refuse
the names ``dump`` refuses: reading a file is not writing one.

Conversion on load: ``'true'``/``'false'`` become booleans; a string becomes
a number only when it is a canonical JSON number, i.e. it reads as an int or
float whose JSON text is exactly the string again ("5", "-3", "1.5",
"100000.0", "1e+16").  So "007", "-0", "1.50", "1e5", "+1", " 1", "nan",
"0x10" and "" stay strings, and a dump->load round trip converts a string
only when no text is lost.  Everything else stays a string.
No I/O.
"""

import json

from . import FormatError, kind, shellnames

NAME = "SHELL"
# What an array's line starts with: bash evaluates the rest, other shells skip it.
ARRAY_GUARD = '[ -z "${BASH_VERSION-}" ] || eval '

_LETTERS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_"
_DIGITS = "0123456789"
_NAME_CHARS = _LETTERS + _DIGITS
# After an unquoted or double-quoted "$", these start an expansion.
_EXPANSION_STARTS = _NAME_CHARS + "{(@*#?$!-"
# Unquoted, these are shell syntax (pipes, redirections, subshells).
_OPERATORS = "|&<>()`"


# --- writing -------------------------------------------------------------


def dump(cfg):
    if cfg is None:
        return ""
    if not isinstance(cfg, dict):
        raise FormatError("SHELL config must be an object, not %s" % kind(cfg))
    assignments = {}
    _flatten(cfg, "", assignments)
    names = sorted(assignments)
    reserved = [n for n in names if shellnames.acted_on(n)]
    if reserved:
        if len(reserved) == 1:
            what = "key %r is a name" % reserved[0]
        else:
            what = "keys %s are names" % ", ".join(repr(n) for n in reserved)
        raise FormatError("%s the shell, the dynamic loader or the programs they start act on;"
                          " not written" % what)
    return "".join(_line(n, assignments[n]) for n in names)


def _line(name, rendered):
    if rendered[0] == "(":  # an array: bash only, see the module docstring
        return ARRAY_GUARD + quote(name + "=" + rendered) + "\n"
    return name + "=" + rendered + "\n"


def _flatten(obj, prefix, out):
    for key, value in obj.items():
        if not isinstance(key, str):
            raise FormatError("key %r is not a string" % (key,))
        name = prefix + key
        if value is None:
            continue
        if isinstance(value, dict):
            _flatten(value, name + "_", out)
            continue
        if not valid_name(name):
            raise FormatError("key %r is not a valid shell variable name" % name)
        if name in out:
            raise FormatError("two keys flatten to the same shell variable name %r" % name)
        out[name] = _render(name, value)


def _render(name, value):
    if isinstance(value, (list, tuple)):
        return "(" + " ".join(_render_element(name, i, v) for i, v in enumerate(value)) + ")"
    text = _scalar_text(value)
    if text is None:
        raise FormatError("%r is %s, which SHELL cannot write" % (name, kind(value)))
    return quote(text)


def _render_element(name, index, value):
    text = _scalar_text(value)
    if text is None:
        raise FormatError(
            "array %r element %d is %s; SHELL arrays hold only strings, numbers and booleans"
            % (name, index, kind(value))
        )
    return quote(text)


def _scalar_text(value):
    """The text a scalar is written as, or None if it is not a scalar."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float)):
        if value != value or value in (float("inf"), float("-inf")):
            raise FormatError("%r has no JSON spelling" % (value,))
        return json.dumps(value)
    return None


def quote(text):
    """``text`` as one single-quoted shell word that yields exactly it."""
    if "\0" in text:
        raise FormatError("a value contains a NUL character, which a shell cannot hold")
    return "'" + text.replace("'", "'\\''") + "'"


def valid_name(name):
    """True if ``name`` is a portable shell variable name."""
    if not name or name[0] in _DIGITS:
        return False
    return all(c in _NAME_CHARS for c in name)


# --- reading -------------------------------------------------------------


def load(text):
    if "\0" in text:  # a shell drops or truncates at it, so we would read other text
        raise FormatError("a NUL character, which a shell cannot hold")
    try:
        return _Parser(text, False).parse()
    except FormatError as strict_error:
        # The NodeJS daemon escapes quotes as \' inside single quotes, which POSIX
        # reads differently (the backslash is literal, the quote closes).  Such a
        # file never parses the POSIX way; one that does is read as a shell would.
        if "\\'" not in text:
            raise
        try:
            return _Parser(text, True).parse()
        except FormatError:
            raise strict_error from None


def convert(word):
    """The value a shell word stands for: bool, canonical number or str."""
    if word == "true":
        return True
    if word == "false":
        return False
    number = _canonical_number(word)
    return word if number is None else number


def _canonical_number(word):
    if not word or word[0] not in "-0123456789":
        return None
    for c in word:
        if c not in "0123456789.eE+-":
            return None
    try:
        body = word[1:] if word[0] == "-" else word
        number = int(word) if body.isdigit() else float(word)
    except ValueError:  # malformed, or too many digits for int()
        return None
    return number if json.dumps(number) == word else None


class _Parser:
    """Reads assignments; ``loose`` makes ``\\'`` a quote inside '...'."""

    def __init__(self, text, loose):
        self.text = text
        self.loose = loose
        self.pos = 0
        self.line = 1

    def error(self, message, line=None):
        return FormatError("line %d: %s" % (line or self.line, message))

    def peek(self, offset=0):
        i = self.pos + offset
        return self.text[i] if i < len(self.text) else ""

    def advance(self):
        c = self.text[self.pos]
        self.pos += 1
        if c == "\n":
            self.line += 1
        return c

    def at_line_end(self):
        c = self.peek()
        return c in ("", "\n") or (c == "\r" and self.peek(1) == "\n")

    def parse(self):
        result = {}
        while True:
            self.skip_blank_lines()
            if self.pos >= len(self.text):
                return result
            name, value = self.assignment()
            result[name] = value

    def skip_blank_lines(self):
        while self.pos < len(self.text):
            c = self.peek()
            if c in " \t\n" or (c == "\r" and self.peek(1) == "\n"):
                self.advance()
            elif c == "#":
                self.skip_comment()
            else:
                return

    def skip_comment(self):
        while not self.at_line_end():
            self.advance()

    def skip_spaces(self):
        while self.peek() in (" ", "\t"):
            self.advance()

    def read_name(self):
        start = self.pos
        if self.peek() != "" and self.peek() in _LETTERS:
            while self.peek() != "" and self.peek() in _NAME_CHARS:
                self.advance()
        return self.text[start : self.pos]

    def assignment(self):
        if self.text[self.pos : self.pos + len(ARRAY_GUARD)] == ARRAY_GUARD:
            return self.guarded_array()
        name = self.read_name()
        if name == "export" and self.peek() in (" ", "\t"):
            self.skip_spaces()
            name = self.read_name()
        if not name or self.peek() != "=":
            raise self.error("expected NAME=value")
        self.advance()
        value = self.array() if self.peek() == "(" else convert(self.word(False))
        self.end_of_statement(name)
        return name, value

    def guarded_array(self):
        """``ARRAY_GUARD 'NAME=(...)'``: the eval'd word holds one array assignment."""
        line = self.line
        self.pos += len(ARRAY_GUARD)
        inner = self.word(False)
        try:
            found = _Parser(inner, False).parse()
        except FormatError as e:
            raise self.error("bad array assignment after eval: %s" % e, line) from None
        values = list(found.values())
        if len(values) != 1 or not isinstance(values[0], list):
            raise self.error("eval must hold exactly one array assignment", line)
        name = list(found)[0]
        self.end_of_statement(name)
        return name, values[0]

    def end_of_statement(self, name):
        self.skip_spaces()
        if self.peek() == ";":
            # Another assignment may follow on the same line.
            self.advance()
            return
        if self.peek() == "#":
            self.skip_comment()
        if not self.at_line_end():
            raise self.error("unexpected text after the value of %s" % name)

    def array(self):
        line = self.line
        self.advance()  # "("
        items = []
        while True:
            self.skip_blank_lines()
            c = self.peek()
            if c == "":
                raise self.error("unterminated array", line)
            if c == ")":
                self.advance()
                return items
            items.append(convert(self.word(True)))

    def word(self, in_array):
        """One shell word: a concatenation of quoted and unquoted parts."""
        parts = []
        while True:
            c = self.peek()
            if c in ("", " ", "\t", "\n", ";") or (in_array and c == ")"):
                return "".join(parts)
            if c == "\r" and self.peek(1) == "\n":
                return "".join(parts)
            if c == "'":
                parts.append(self.single_quoted())
            elif c == '"':
                parts.append(self.double_quoted())
            elif c == "\\":
                self.advance()
                parts.append(self.unquoted_escape())
            elif c in _OPERATORS:
                raise self.error("unexpected %r outside quotes" % c)
            else:
                self.check_expansion()
                parts.append(self.advance())

    def unquoted_escape(self):
        c = self.peek()
        if c == "":
            return "\\"
        self.advance()
        return "" if c == "\n" else c  # backslash-newline continues the line

    def check_expansion(self):
        c = self.peek()
        if c == "`" or (c == "$" and self.peek(1) != "" and self.peek(1) in _EXPANSION_STARTS):
            raise self.error("shell expansion (%r) is not supported; use single quotes" % c)

    def single_quoted(self):
        line = self.line
        self.advance()  # opening quote
        parts = []
        while True:
            c = self.peek()
            if c == "":
                raise self.error("unterminated single quote", line)
            if c == "'":
                self.advance()
                return "".join(parts)
            if self.loose and c == "\\" and self.peek(1) == "'":
                self.advance()
            parts.append(self.advance())

    def double_quoted(self):
        line = self.line
        self.advance()  # opening quote
        parts = []
        while True:
            c = self.peek()
            if c == "":
                raise self.error("unterminated double quote", line)
            if c == '"':
                self.advance()
                return "".join(parts)
            if c == "\\":
                parts.append(self.double_quoted_escape())
                continue
            self.check_expansion()
            parts.append(self.advance())

    def double_quoted_escape(self):
        # POSIX: inside "..." a backslash escapes only $ ` " \ and newline;
        # before anything else it is a literal backslash.
        self.advance()
        c = self.peek()
        if c == "\n":
            self.advance()
            return ""
        if c != "" and c in '$`"\\':
            return self.advance()
        return "\\"
