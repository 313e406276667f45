"""The Python package (pyproject.toml): `pip install .` and a wheel, in a fresh venv.

lib/ is installed as the package `chariotd`, so its modules must import each
other relatively; the installed `chariotd` command must run the daemon with
paho-mqtt as its only dependency, and report the one version there is
(VERSION in lib/options.py). About 20 s: two builds and a venv.
"""

import ast
import glob
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from process import wait_until

from lib import options

ROOT = Path(__file__).resolve().parent.parent
LIB = ROOT / "lib"
PYPROJECT = ROOT / "pyproject.toml"


def lib_modules():
    return sorted(LIB.rglob("*.py"))


@pytest.mark.parametrize("path", lib_modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_lib_imports_itself_relatively(path):
    """`from lib.x import y` works in a source tree only: installed, lib/ is `chariotd`."""
    tree = ast.parse(path.read_text(), str(path))
    bad = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 0:
            names = [node.module or ""]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif (isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "import_module"
              and node.args and isinstance(node.args[0], ast.Constant)):
            names = [str(node.args[0].value)]
        else:
            continue
        bad += ["line %d: %s" % (node.lineno, n) for n in names
                if n == "lib" or n.startswith("lib.")]
    assert not bad, ("%s imports lib by name; use a relative import (from . import x, "
                     "from .x import y): %s" % (path.relative_to(ROOT), bad))


def declared_packages():
    m = re.search(r"^packages = \[(.*)\]$", PYPROJECT.read_text(), re.M)
    return set(re.findall(r'"([^"]+)"', m.group(1)))


def test_every_package_under_lib_is_declared():
    found = {"chariotd" + ("." + ".".join(p.parent.relative_to(LIB).parts)
                           if p.parent != LIB else "")
             for p in LIB.rglob("__init__.py")}
    assert declared_packages() == found


def test_version_has_one_place():
    text = PYPROJECT.read_text()
    assert 'dynamic = ["version"]' in text
    assert 'version = {attr = "chariotd.options.VERSION"}' in text
    assert re.fullmatch(r"\d+\.\d+\.\d+", options.VERSION)


def source_copy(dest):
    """What a clean checkout holds for the build: pyproject.toml and what it names."""
    dest.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE", "chariotd.py"):
        shutil.copy(ROOT / name, dest / name)
    shutil.copytree(LIB, dest / "lib", ignore=shutil.ignore_patterns("__pycache__"))
    return dest


def run(argv, **kw):
    r = subprocess.run([str(a) for a in argv], capture_output=True, text=True, timeout=300,
                       **kw)
    assert r.returncode == 0, "%s: %s%s" % (argv, r.stdout, r.stderr)
    return r.stdout


@pytest.fixture(scope="module")
def venv(tmp_path_factory):
    """A fresh venv with `pip install <source tree>` done in it."""
    try:
        import ensurepip  # noqa: F401
    except ImportError:
        pytest.skip("this Python has no ensurepip/venv (Debian: apt-get install python3-venv)")
    top = tmp_path_factory.mktemp("package")
    src = source_copy(top / "src")
    env = top / "venv"
    run([sys.executable, "-m", "venv", env])
    # a path, not a bare name, or pip takes it for a project on the index
    run([env / "bin" / "pip", "install", "-q", "--disable-pip-version-check", str(src)])
    return {"top": top, "src": src, "bin": env / "bin"}


def installed(venv, *argv, **kw):
    # from a directory without lib/, so nothing can come from a source tree
    return run(argv, cwd=str(venv["top"]), **kw)


def test_pip_install_gives_the_chariotd_command(venv):
    out = installed(venv, venv["bin"] / "chariotd", "--version")
    assert out == "chariotd %s\n" % options.VERSION
    assert installed(venv, venv["bin"] / "python", "-m", "chariotd", "--version") == out
    meta = installed(venv, venv["bin"] / "python", "-c",
                     "import importlib.metadata as m; print(m.version('chariotd'));"
                     "print(m.requires('chariotd'))")
    version, requires = meta.splitlines()
    assert version == options.VERSION
    assert [r.split("<")[0].split(">")[0].split("=")[0].strip()
            for r in ast.literal_eval(requires)] == ["paho-mqtt"]


def test_nothing_but_chariotd_lands_in_site_packages(venv):
    site = installed(venv, venv["bin"] / "python", "-c",
                     "import sysconfig; print(sysconfig.get_paths()['purelib'])").strip()
    ours = [n for n in os.listdir(site) if n.lower().startswith("chariotd")]
    assert sorted(ours) == ["chariotd", "chariotd-%s.dist-info" % options.VERSION]
    assert not os.path.exists(os.path.join(site, "lib"))
    top_level = glob.glob(os.path.join(site, "chariotd-*.dist-info", "top_level.txt"))
    if top_level:
        assert Path(top_level[0]).read_text().split() == ["chariotd"]


def test_every_installed_module_imports(venv):
    """Catches an import that only resolves in a source tree (the daemon's features
    are imported when their options are given, so --version alone would not)."""
    out = installed(venv, venv["bin"] / "python", "-c", """if 1:
        import importlib, pkgutil, chariotd
        names = [m.name for m in pkgutil.walk_packages(chariotd.__path__, 'chariotd.')
                 if m.name != 'chariotd.__main__']
        for name in names:
            importlib.import_module(name)
        print(len(names))
        """)
    assert int(out) >= len(lib_modules()) - 2


def test_wheel_holds_the_package_only(venv, tmp_path):
    installed(venv, venv["bin"] / "pip", "wheel", "-q", "--disable-pip-version-check",
              "--no-deps", "-w", tmp_path, venv["src"])
    (wheel,) = tmp_path.glob("chariotd-%s-py3-none-any.whl" % options.VERSION)
    names = zipfile.ZipFile(str(wheel)).namelist()
    assert {n.split("/")[0] for n in names} == {"chariotd",
                                                "chariotd-%s.dist-info" % options.VERSION}
    assert "chariotd/formats/shell.py" in names and "chariotd/cli.py" in names
    assert not [n for n in names if "test" in n or "emulator" in n or n.endswith(".pyc")]
    # the wheel installs and runs the same way
    installed(venv, venv["bin"] / "pip", "install", "-q", "--disable-pip-version-check",
              "--force-reinstall", "--no-deps", wheel)
    out = installed(venv, venv["bin"] / "chariotd", "--version")
    assert out == "chariotd %s\n" % options.VERSION


def test_installed_command_runs_the_daemon(venv, tmp_path, pki, broker, certstore):
    """The installed command, not ./chariotd.py: connects, and ends cleanly on SIGTERM."""
    logpath = tmp_path / "installed.log"
    (tmp_path / "spool").mkdir()
    with open(str(logpath), "wb") as log:
        proc = subprocess.Popen(
            [str(venv["bin"] / "chariotd"), "--clientid=device-1", "--cacert=" + pki.ca_cert,
             "--certstore=" + certstore, "--messages=" + str(tmp_path / "spool")],
            cwd=str(venv["top"]), stdin=subprocess.DEVNULL, stdout=log,
            stderr=subprocess.STDOUT, env=dict(os.environ, PYTHONUNBUFFERED="1"))
    try:
        wait_until(lambda: "connected to localhost" in logpath.read_text(), 15,
                   "the installed chariotd to connect")
        proc.terminate()
        assert proc.wait(15) == 0, logpath.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
