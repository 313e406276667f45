"""Runs the shared test vectors of the pure helpers, under CPython or MicroPython.

Each file here (formats.json, shadowdoc.json, jsliteral.json, awslimits.json,
messageorder.json) is a list of
cases: {"call": "module.function", "args": [...], then either "returns":
value or "raises": exception class name with "message", the start of the
exception's text}. Arguments and results are JSON values; results compare
strictly (True is not 1, 1 is not 1.0), dicts regardless of key order. A
case may carry "micropython": why MicroPython differs there (a leniency of
its own json module); under MicroPython that case's outcome is printed as a
known difference rather than counted.

tests/test_vectors.py runs them under CPython, tests/micropython/run.mjs
under MicroPython, so this file itself imports only what MicroPython has.
It knows nothing of the helpers beyond their names (MODULES below).
"""

import json
import sys

FILES = ("formats", "shadowdoc", "jsliteral", "awslimits", "messageorder")
# The MicroPython-safe modules (the README lists them), from the tree's root.
PURE = ["lib/awslimits.py", "lib/formats/__init__.py", "lib/formats/json_format.py",
        "lib/formats/plaintext.py", "lib/formats/shell.py", "lib/formats/shellnames.py",
        "lib/jsliteral.py", "lib/messageorder.py", "lib/shadowdoc.py"]


def modules():
    """name in a vector's "call" -> the module, imported from the source tree."""
    from lib import awslimits, formats, jsliteral, messageorder, shadowdoc
    from lib.formats import shell, shellnames

    return {"formats": formats, "shell": shell, "shellnames": shellnames, "shadowdoc": shadowdoc,
            "jsliteral": jsliteral, "awslimits": awslimits, "messageorder": messageorder}


def load(directory, name):
    with open(directory + "/" + name + ".json") as f:
        return json.load(f)


def same(a, b):
    """Equal, and of the same JSON kind all the way down."""
    if isinstance(a, dict) and isinstance(b, dict):
        return len(a) == len(b) and all(k in b and same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return type(a) is type(b) and a == b


def failure(case, mods):
    """None if the case holds, else a line saying how it does not."""
    module, function = case["call"].split(".")
    fn = getattr(mods[module], function)
    try:
        result = fn(*case["args"])
    except Exception as e:  # the vector says which exception is right
        if type(e).__name__ == case.get("raises") and str(e).startswith(case["message"]):
            return None
        return "raised %s: %s" % (type(e).__name__, e)
    if "raises" in case:
        return "returned %r, expected %s" % (result, case["raises"])
    if not same(result, case["returns"]):
        return "returned %r, expected %r" % (result, case["returns"])
    return None


def describe(name, index, case):
    args = json.dumps(case["args"])
    if len(args) > 120:
        args = args[:117] + "..."
    return "%s.json case %d: %s(%s)" % (name, index, case["call"], args[1:-1])


def main(directory):
    """Run every vector; print each failure; exit 1 if there was one."""
    mods = modules()
    micropython = sys.implementation.name == "micropython"
    failed = passed = 0
    for name in FILES:
        for index, case in enumerate(load(directory, name)):
            problem = failure(case, mods)
            if micropython and "micropython" in case:
                print("KNOWN %s: %s (%s)" % (describe(name, index, case), problem or "holds",
                                            case["micropython"]))
            elif problem:
                failed += 1
                print("FAIL %s: %s" % (describe(name, index, case), problem))
            else:
                passed += 1
    print("%s: %d passed, %d failed" % (sys.implementation.name, passed, failed))
    if failed:
        sys.exit(1)
