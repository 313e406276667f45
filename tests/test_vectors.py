"""The pure helpers' shared vectors (tests/vectors/) under CPython.

The same vectors run under MicroPython in tests/test_micropython.py. Here
each runs twice: as written, and with every object's keys in the reverse
order, since MicroPython's dicts keep no order and a helper must not
depend on one.
"""

import ast
import os

import pytest
from process import ROOT
from vectors import check

VECTORS = os.path.join(ROOT, "tests", "vectors")
PURE_IMPORTS = {"json"}  # all that the MicroPython-safe modules may import

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


@pytest.mark.parametrize("path", check.PURE)
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
