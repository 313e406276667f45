"""The Yocto layer meta-chariotd/: its recipe's version, RDEPENDS and install steps.

There is no BitBake here, so the recipe's do_compile and do_install are run as
BitBake would run them (sh -e, with the variables they use set to the usual
values and the `bb.utils.contains` tests decided), into a scratch ${D}, with
and without the runit PACKAGECONFIG. oelint-adv checks the recipe in
`make lint`. A second or two in all.
"""

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from lib import options

ROOT = Path(__file__).resolve().parent.parent
LAYER = ROOT / "meta-chariotd"
RECIPES = sorted((LAYER / "recipes-connectivity" / "chariotd").glob("chariotd_*.bb"))

# Which OpenEmbedded (scarthgap) python3 package holds each standard module
# lib/ may import, from python3-manifest.json (modules built into the
# interpreter: core). A new import needs a line here and, when its package is
# new, a word in the recipe's RDEPENDS.
OE_PACKAGES = {
    "argparse": "core", "array": "core", "base64": "netclient", "binascii": "core",
    "bisect": "core", "calendar": "datetime", "codecs": "core", "collections": "core",
    "contextlib": "core", "copy": "core", "ctypes": "ctypes", "datetime": "datetime",
    "errno": "core", "fcntl": "fcntl", "fnmatch": "core", "functools": "core",
    "hashlib": "crypt", "heapq": "core", "importlib": "core", "io": "core", "ipaddress": "core",
    "itertools": "core", "json": "json", "logging": "logging", "math": "core",
    "operator": "core", "os": "core", "random": "math", "re": "core", "select": "core",
    "selectors": "core", "shlex": "shell", "shutil": "core", "signal": "core", "socket": "io",
    "ssl": "io", "stat": "core", "string": "stringold", "struct": "core", "subprocess": "core",
    "sys": "core", "tempfile": "io", "textwrap": "core", "threading": "core", "time": "core",
    "traceback": "core", "types": "core", "urllib": "core", "uuid": "netclient",
    "warnings": "core", "weakref": "core", "zlib": "core", "posixpath": "core", "pwd": "core",
    "secrets": "netclient", "unicodedata": "core", "grp": "core", "getpass": "unixadmin",
    "pathlib": "core", "dataclasses": "core", "enum": "core", "typing": "core",
    "queue": "threading", "gzip": "compression", "locale": "core", "glob": "shell",
    "platform": "core", "resource": "resource",
}


def recipe():
    (path,) = RECIPES
    return path.read_text()


def variable(text, name):
    m = re.search(r"^%s = \"((?:[^\"\\]|\\\n)*)\"" % re.escape(name), text, re.M)
    assert m, name
    return m.group(1).replace("\\\n", " ").split()


def test_one_recipe_named_by_the_version():
    assert [p.name for p in RECIPES] == ["chariotd_%s.bb" % options.VERSION]


def test_layer_conf_is_for_scarthgap_and_meta_python():
    conf = (LAYER / "conf" / "layer.conf").read_text()
    assert 'LAYERSERIES_COMPAT_chariotd = "scarthgap"' in conf
    assert re.search(r'^LAYERDEPENDS_chariotd = ".*\bmeta-python\b', conf, re.M)


def stdlib_imports():
    names = set()
    for path in (ROOT / "lib").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names.update(a.name.split(".")[0] for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names.add(node.module.split(".")[0])
    return names - {"paho", "lib"}


def test_rdepends_cover_every_module_lib_imports():
    modules = stdlib_imports()
    unknown = sorted(modules - set(OE_PACKAGES))
    assert not unknown, ("lib/ imports %s: add it to OE_PACKAGES (its package in "
                         "python3-manifest.json) and, if new, to the recipe's RDEPENDS"
                         % unknown)
    wanted = {"python3-" + OE_PACKAGES[m] for m in modules} | {"python3-paho-mqtt"}
    assert set(variable(recipe(), "RDEPENDS:${PN}")) == wanted


def task(text, name):
    m = re.search(r"^%s\(\) \{\n(.*?)^\}" % name, text, re.M | re.S)
    assert m, name
    return m.group(1)


def expand(body, values, features):
    def contains(m):
        var, item, yes, no = m.groups()
        return yes if item in features[var] else no

    body = re.sub(r"\$\{@bb\.utils\.contains\('(\w+)', '([\w-]+)', '([^']*)', '([^']*)', d\)\}",
                  contains, body)
    body = re.sub(r"\$\{(\w+)\}", lambda m: values[m.group(1)], body)
    assert "${" not in body, body
    return body


def install(tmp_path, packageconfig):
    d, b = tmp_path / "image", tmp_path / "build"
    b.mkdir()
    values = {"S": str(ROOT), "B": str(b), "D": str(d), "PYTHON": sys.executable,
              "nonarch_libdir": "/usr/lib", "bindir": "/usr/bin", "sysconfdir": "/etc",
              "docdir": "/usr/share/doc", "datadir": "/usr/share", "INIT_D_DIR": "/etc/init.d",
              "systemd_system_unitdir": "/usr/lib/systemd/system"}
    features = {"PACKAGECONFIG": packageconfig, "DISTRO_FEATURES": ["sysvinit", "systemd"]}
    text = recipe()
    for name in ("do_compile", "do_install"):
        r = subprocess.run(["sh", "-e", "-c", expand(task(text, name), values, features)],
                           cwd=str(b), capture_output=True, text=True)
        assert r.returncode == 0, name + ": " + r.stderr
    return d


def files(top):
    return {str(p.relative_to(top)) for p in top.rglob("*") if p.is_file() or p.is_symlink()}


def test_installs_what_the_buildroot_package_does(tmp_path):
    d = install(tmp_path, [])
    got = files(d)
    lib = {"usr/lib/chariotd/" + str(p.relative_to(ROOT)) for p in (ROOT / "lib").rglob("*.py")}
    assert lib <= got
    assert not [f for f in got if "__pycache__" in f and not f.endswith(".pyc")]
    assert "usr/lib/chariotd/lib/__pycache__/daemon.%s.pyc" % sys.implementation.cache_tag in got
    assert os.readlink(str(d / "usr/bin/chariotd")) == "/usr/lib/chariotd/chariotd.py"
    assert os.stat(str(d / "usr/lib/chariotd/chariotd.py")).st_mode & 0o777 == 0o755
    assert os.stat(str(d / "etc/init.d/chariotd")).st_mode & 0o777 == 0o755
    assert {"etc/default/chariotd", "usr/lib/systemd/system/chariotd.service",
            "usr/share/doc/chariotd/README.md"} <= got
    assert not [f for f in got if f.startswith(("etc/sv", "etc/service"))]
    jobs = {"usr/share/chariotd/jobs/" + p.name for p in (ROOT / "examples" / "jobs").glob("*.sh")}
    assert jobs and jobs <= got
    assert os.stat(str(d / sorted(jobs)[0])).st_mode & 0o777 == 0o755
    # nothing but the daemon, its init files, the jobs handlers and the README
    assert got - lib - jobs == {"usr/lib/chariotd/chariotd.py", "usr/bin/chariotd",
                         "etc/default/chariotd", "etc/init.d/chariotd",
                         "usr/lib/systemd/system/chariotd.service",
                         "usr/share/doc/chariotd/README.md"} | {
        f for f in got if f.endswith(".pyc")}
    # the installed tree runs (from its own directory, not from this checkout)
    r = subprocess.run([sys.executable, str(d / "usr/lib/chariotd/chariotd.py"), "--version"],
                       cwd=str(tmp_path), capture_output=True, text=True)
    assert r.stdout == "chariotd %s\n" % options.VERSION, r.stderr


def test_runit_packageconfig_installs_the_service_instead_of_the_rc_script(tmp_path):
    d = install(tmp_path, ["runit"])
    got = files(d)
    assert {"etc/sv/chariotd/run", "etc/sv/chariotd/finish", "etc/sv/chariotd/log/run"} <= got
    for f in ("run", "finish", "log/run"):
        assert os.stat(str(d / "etc/sv/chariotd" / f)).st_mode & 0o777 == 0o755
    assert os.readlink(str(d / "etc/sv/chariotd/supervise")) == "/run/chariotd.supervise"
    assert os.readlink(str(d / "etc/service/chariotd")) == "../sv/chariotd"
    assert "etc/init.d/chariotd" not in got
    text = recipe()
    assert re.search(r"^FILES:\$\{PN\}-runit \+?= \"\$\{sysconfdir\}/sv \$\{sysconfdir\}/service\"",
                     text, re.M)
    assert "INITSCRIPT_PACKAGES = \"${@bb.utils.contains('PACKAGECONFIG', 'runit', '', " \
        "'${PN}', d)}\"" in text


@pytest.mark.parametrize("name", ["run", "finish", "log/run"])
def test_the_recipe_installs_the_init_files_of_this_tree(name):
    assert "${S}/init/runit/chariotd/%s" % name in recipe()
