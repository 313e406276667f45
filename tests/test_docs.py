"""The contract lives in docs/: every pointer to it leads somewhere, and
docs/interface.md lists exactly the options `chariotd --help` shows.

A pointer is `docs/NAME.md` or `docs/NAME.md#section` in any file of the
tree (code, tests, READMEs), any relative Markdown link inside docs/, and a
file of the tree docs/ names (`tests/test_docs.py`).
A section is a Markdown heading, named the way GitHub names its anchors.
Notes outside the repository (the design notes docs/ was written from) are
not to be pointed at: someone who clones the project does not have them.
"""

import os
import re
import subprocess
import sys

import pytest
from process import CHARIOTD, ROOT

DOCS = os.path.join(ROOT, "docs")
INTERFACE = os.path.join(DOCS, "interface.md")

# docs/NAME.md[#anchor], also as ../docs/..., not as part of a longer path.
DOCS_POINTER = re.compile(r"(?<![\w/.-])(?:\.\./)*docs/([\w.-]+\.md)(?:#([\w-]+))?")
# [text](target) in Markdown.
MD_LINK = re.compile(r"\]\(([^)\s]+)\)")
# A file of the tree named in docs/ as `lib/...`, `tests/...` and the like.
TREE_PATH = re.compile(r"`((?:lib|tests|emulator|examples|init)/[\w./-]+)`")
# The notes that lived outside the repository, and bare names of them.
OUTSIDE = re.compile(r"shared/reference|aws-iot-core\.md|(?<![\w/])interface\.md"
                     r"|\breference (?:section )?\d|\bcontract section \d")
LONG_OPTION = re.compile(r"--[a-z][a-z0-9-]*")
# Outside a checkout: what is not the project's (venvs, caches, build output).
SKIPPED_DIRS = {"__pycache__", "build", "dist", "node_modules"}


def project_dir(name):
    """Whether a directory met walking the tree outside a checkout is the project's."""
    if name in SKIPPED_DIRS or name.endswith(".egg-info") or name.startswith("venv"):
        return False
    return name == ".ci" or not name.startswith(".")


def tree_files():
    """Relative paths of the project's text files, as git sees the tree
    (tracked and not ignored), or by walking it outside a checkout; not this
    file, whose examples of broken pointers are broken on purpose."""
    try:
        listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others",
                                 "--exclude-standard"], cwd=ROOT, capture_output=True,
                                check=True, timeout=30).stdout.decode().split("\0")
    except (OSError, subprocess.CalledProcessError):
        listed = []
        for top, dirs, files in os.walk(ROOT):
            dirs[:] = [d for d in dirs if project_dir(d)]
            listed += [os.path.relpath(os.path.join(top, f), ROOT) for f in files]
    for rel in sorted(set(filter(None, listed)) - {"tests/test_docs.py"}):
        path = os.path.join(ROOT, rel)
        if not os.path.isfile(path):  # deleted but not yet committed
            continue
        with open(path, "rb") as f:
            data = f.read()
        if b"\0" in data:
            continue
        yield rel, data.decode("utf-8", "replace")


def anchors(text):
    """The anchors GitHub gives the headings of Markdown text."""
    names, seen, fenced = set(), {}, False
    for line in text.splitlines():
        if line.lstrip().startswith(("```", "~~~")):
            fenced = not fenced
        match = None if fenced else re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line)
        if match:
            slug = re.sub(r"[^\w\- ]", "", match.group(1).lower()).replace(" ", "-")
            count = seen.get(slug, 0)
            seen[slug] = count + 1
            names.add(slug if count == 0 else "%s-%d" % (slug, count))
    return names


def file_anchors(path):
    with open(path, encoding="utf-8") as f:
        return anchors(f.read())


def broken(target, anchor, where, names=None):
    """Why a pointer to target (a path) and anchor (or None) from where is broken,
    or None; names: target's anchors, when they are known already."""
    if names is None:
        if not os.path.isfile(target):
            return "%s: no such file %s" % (where, os.path.relpath(target, ROOT))
        names = file_anchors(target) if anchor else ()
    if anchor and anchor not in names:
        return "%s: %s has no section #%s" % (where, os.path.relpath(target, ROOT), anchor)
    return None


def pointer_problems(files):
    problems = []
    for rel, text in files:
        in_docs = rel.startswith("docs/")
        for number, line in enumerate(text.splitlines(), 1):
            where = "%s:%d" % (rel, number)
            for match in DOCS_POINTER.finditer(line):
                problems.append(broken(os.path.join(DOCS, match.group(1)), match.group(2),
                                       where))
            if in_docs:
                problems += ["%s: no such file %s" % (where, path)
                             for path in TREE_PATH.findall(line)
                             if not os.path.exists(os.path.join(ROOT, path))]
            if in_docs and rel.endswith(".md"):
                for link in MD_LINK.findall(line):
                    if re.match(r"[a-z]+:", link):  # https:, mailto:
                        continue
                    path, _, anchor = link.partition("#")
                    if path:
                        target = os.path.join(ROOT, os.path.dirname(rel), path)
                        problems.append(broken(os.path.normpath(target), anchor or None, where))
                    else:  # a section of this same file
                        problems.append(broken(os.path.join(ROOT, rel), anchor, where,
                                               anchors(text)))
            if not in_docs:
                for match in OUTSIDE.finditer(DOCS_POINTER.sub("", line)):
                    problems.append("%s: points outside the repository (%s); point at docs/"
                                    % (where, match.group(0)))
    return [p for p in problems if p]


def documented_options():
    """The long options named in the first column of docs/interface.md's tables."""
    found = set()
    with open(INTERFACE, encoding="utf-8") as f:
        for line in f:
            if line.startswith("| `-"):
                found.update(LONG_OPTION.findall(line.split("|")[1]))
    return found


def help_options():
    proc = subprocess.run([sys.executable, CHARIOTD, "--help"], capture_output=True, text=True,
                          timeout=20)
    assert proc.returncode == 0, proc.stderr
    return set(LONG_OPTION.findall(proc.stdout))


def test_every_docs_pointer_leads_to_a_file_and_section():
    assert pointer_problems(tree_files()) == []


def test_the_tree_points_at_docs_at_all():
    # A pointer pattern that matched nothing would pass the test above vacuously.
    pointers = sum(len(DOCS_POINTER.findall(text)) for rel, text in tree_files()
                   if not rel.startswith("docs/"))
    assert pointers >= 20


@pytest.mark.parametrize("text, problem", [
    ("see docs/interface.md#no-such-section", "has no section #no-such-section"),
    ("see docs/nothing.md", "no such file docs/nothing.md"),
    ("see interface.md section 6", "points outside the repository"),
    ("facts: aws-iot-core.md 1.6", "points outside the repository"),
    ("in ../shared/reference/", "points outside the repository"),
    ("deltas (reference 2.5)", "points outside the repository"),
    ("the supervisor policy (contract section 2)", "points outside the repository"),
])
def test_a_broken_pointer_is_reported(text, problem):
    problems = pointer_problems([("lib/example.py", "# " + text + "\n")])
    assert len(problems) == 1 and problem in problems[0], problems


def test_a_missing_file_named_in_docs_is_reported():
    problems = pointer_problems([("docs/example.md", "see `tests/test_docs.py` and "
                                  "`tests/test_nothing.py`\n")])
    assert problems == ["docs/example.md:1: no such file tests/test_nothing.py"], problems


def test_a_broken_link_inside_docs_is_reported():
    problems = pointer_problems([("docs/example.md", "[a](aws-facts.md#jobs) [b](#nowhere) "
                                  "[c](../README.md#the-contract) [d](https://example.com)\n")])
    assert len(problems) == 1 and "docs/example.md has no section #nowhere" in problems[0], \
        problems


def test_anchors_are_named_as_github_names_them():
    names = file_anchors(os.path.join(ROOT, "README.md"))
    assert {"the-contract", "aws-iot-jobs---jobsthingdir", "--defenderthingseconds"} <= names


def test_interface_lists_every_option_of_the_command_line():
    shown = help_options()
    documented = documented_options()
    assert "--clientid" in shown and "--status-file" in shown
    assert sorted(shown - documented) == [], "options missing from docs/interface.md"
    assert sorted(documented - shown) == [], "docs/interface.md lists options chariotd lacks"
