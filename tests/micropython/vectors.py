"""Under MicroPython: the shared vectors (tests/vectors/) against the pure
helpers. sys.argv holds the files run.mjs copied in; the source tree is the
directory above the first one's lib/."""

import sys

root = sys.argv[1][: sys.argv[1].rindex("/lib/")]
sys.path.insert(0, root + "/tests/vectors")
sys.path.insert(0, root)

import check  # noqa: E402

check.main(root + "/tests/vectors")
