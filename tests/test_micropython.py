"""The pure helpers under MicroPython 1.27 (the WebAssembly port on Node.js).

Only the MicroPython-safe modules (tests/vectors/check.py: PURE) and the vectors are
copied into MicroPython's filesystem, so an import of anything else fails
there. `make micropython` installs the npm package into .node/; without
Node.js or the package these tests skip.
"""

import os
import shutil
import subprocess

import pytest
from process import ROOT
from vectors.check import PURE

RUN = os.path.join(ROOT, "tests", "micropython", "run.mjs")
PACKAGE = os.path.join(ROOT, ".node", "node_modules", "@micropython",
                       "micropython-webassembly-pyscript", "micropython.mjs")

pytestmark = pytest.mark.skipif(
    not (shutil.which("node") and os.path.exists(os.environ.get("MICROPYTHON_MJS", PACKAGE))),
    reason="no Node.js or no MicroPython package (make micropython installs it)")


def micropython(script, files=(), tmp_path=None):
    if tmp_path is not None:
        path = tmp_path / "script.py"
        path.write_text(script)
        script = str(path)
    return subprocess.run(["node", RUN, script] + list(files), cwd=ROOT, capture_output=True,
                          text=True, timeout=120)


def test_vectors_under_micropython():
    vectors = os.path.join("tests", "vectors")
    files = ["lib/__init__.py"] + PURE + [os.path.join(vectors, f)
                                          for f in sorted(os.listdir(os.path.join(ROOT, vectors)))
                                          if f.endswith((".json", ".py"))]
    r = micropython(os.path.join("tests", "micropython", "vectors.py"), files)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "micropython: " in r.stdout and " 0 failed" in r.stdout, r.stdout


def test_it_is_micropython(tmp_path):
    r = micropython("import sys\nprint(sys.implementation.name, sys.implementation.version[:2])\n",
                    tmp_path=tmp_path)
    assert (r.returncode, r.stdout) == (0, "micropython (1, 27)\n"), r.stderr


def test_an_exception_is_a_failure(tmp_path):
    r = micropython("print('before')\nraise ValueError('boom')\n", tmp_path=tmp_path)
    assert r.returncode == 1
    assert r.stdout == "before\n"
    assert "ValueError: boom" in r.stderr


def test_sys_exit_status_is_kept(tmp_path):
    assert micropython("import sys\nsys.exit(3)\n", tmp_path=tmp_path).returncode == 3
    assert micropython("import sys\nsys.exit()\n", tmp_path=tmp_path).returncode == 0


def test_only_the_copied_files_are_there(tmp_path):
    r = micropython("import lib.options\n", ["lib/__init__.py"], tmp_path=tmp_path)
    assert r.returncode == 1 and "ImportError" in r.stderr, r.stderr
