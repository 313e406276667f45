"""The README's "Guarantees": every promise names the tests that hold it, and
every test named (`tests/FILE.py::test_name`) in the README or docs/ exists,
so a renamed or removed test cannot leave a promise pointing at nothing."""

import ast
import os
import re

from process import ROOT

TEST_NAME = re.compile(r"`(tests/[\w/]+\.py)::(\w+)`")
PROMISES = ("At least once", "Atomic configs", "No injection", "Key handling",
            "Offline is normal", "Refused messages", "Children never outlive the daemon",
            "Disk full", "Hostile input")


def _read(path):
    with open(os.path.join(ROOT, path), encoding="utf-8") as f:
        return f.read()


def _documents():
    docs = os.path.join(ROOT, "docs")
    names = sorted(n for n in os.listdir(docs) if n.endswith(".md")) if os.path.isdir(docs) \
        else []
    return ["README.md"] + ["docs/" + n for n in names]


def _tests_in(path):
    """The names of the test functions of a test file, at module level or in a class."""
    tree = ast.parse(_read(path), path)
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and \
                node.name.startswith("test_"):
            names.add(node.name)
    return names


def guarantees_section():
    text = _read("README.md")
    match = re.search(r"^## Guarantees\n(.*?)^## ", text, re.S | re.M)
    assert match, "README.md has no Guarantees section"
    return match.group(1)


def test_every_promise_names_the_tests_that_hold_it():
    bullets = re.split(r"^- ", guarantees_section(), flags=re.M)[1:]
    promises = {}
    for bullet in bullets:
        heading = re.match(r"\*\*(.+?)\.\*\*", bullet)
        assert heading, "a bullet without a bold promise: %r" % bullet[:60]
        promises[heading.group(1)] = TEST_NAME.findall(bullet)
    assert sorted(promises) == sorted(PROMISES)
    for promise, tests in promises.items():
        assert tests, "%s names no test" % promise


def test_every_test_named_in_the_documents_exists():
    cited = [(doc, path, name) for doc in _documents()
             for path, name in TEST_NAME.findall(_read(doc))]
    assert len(cited) >= len(PROMISES)
    missing = []
    found = {}
    for doc, path, name in cited:
        if path not in found:
            found[path] = _tests_in(path) if os.path.isfile(os.path.join(ROOT, path)) else set()
        if name not in found[path]:
            missing.append("%s: %s::%s" % (doc, path, name))
    assert not missing, "tests named but not found:\n" + "\n".join(missing)


def test_a_name_that_does_not_exist_is_caught():
    # The check itself can fail: a made-up name is not among a file's tests.
    assert "test_no_such_test" not in _tests_in("tests/test_corpus.py")
    assert "test_message_file" in _tests_in("tests/test_corpus.py")
