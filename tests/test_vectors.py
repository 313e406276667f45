"""The pure helpers' shared vectors (tests/vectors/) under CPython.

The same vectors run under MicroPython in tests/test_micropython.py. Here
each runs twice: as written, and with every object's keys in the reverse
order, since MicroPython's dicts keep no order and a helper must not
depend on one.
"""

import ast
import os

import pytest
from vectors import check

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VECTORS = os.path.join(ROOT, "tests", "vectors")
# The MicroPython-safe modules (the README lists them) and what they may import.
PURE = ["lib/awslimits.py", "lib/formats/__init__.py", "lib/formats/json_format.py",
        "lib/formats/plaintext.py", "lib/formats/shell.py", "lib/formats/shellnames.py",
        "lib/jsliteral.py", "lib/messageorder.py", "lib/shadowdoc.py"]
PURE_IMPORTS = {"json"}

CASES = [(name, i, case) for name in check.FILES
         for i, case in enumerate(check.load(VECTORS, name))]


def reversed_keys(value):
    if isinstance(value, dict):
        return {k: reversed_keys(value[k]) for k in reversed(list(value))}
    if isinstance(value, list):
        return [reversed_keys(v) for v in value]
    return value


@pytest.mark.parametrize("order", ["as written", "keys reversed"])
@pytest.mark.parametrize("name,index,case", CASES,
                         ids=["%s-%d" % (name, i) for name, i, _ in CASES])
def test_vector(name, index, case, order):
    if order == "keys reversed":
        case = dict(case, args=reversed_keys(case["args"]))
    assert check.failure(case, check.modules()) is None, check.describe(name, index, case)


@pytest.mark.parametrize("path", PURE)
def test_pure_helpers_import_only_json(path):
    with open(os.path.join(ROOT, path)) as f:
        tree = ast.parse(f.read())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            names = set() if node.level else {node.module}
        else:
            continue
        assert names <= PURE_IMPORTS, "%s:%d imports %s" % (path, node.lineno, names)
