# chariotd: `make demo`, `make test`, `make bench`, `make lint`.
# Everything the targets need is set up here: a venv in .venv (paho-mqtt 2.x
# and the test tools), a second one in .venv-paho1 with paho-mqtt 1.6.1, and
# mosquitto, busybox, dash, bash and openssl from apt when they are missing
# (the SHELL format's tests source files in each shell).

PYTHON ?= python3
VENV := .venv
VENV1 := .venv-paho1
PY := $(VENV)/bin/python
PY1 := $(VENV1)/bin/python
# command:package (just the name when they are the same)
APT_PACKAGES := mosquitto busybox dash bash openssl runsv:runit shellcheck node:nodejs npm
# The tests that exercise paho directly (test_footprint: which of the modules
# paho imports load), run again against paho-mqtt 1.6.
PAHO1_TESTS := tests/test_connection.py tests/test_messages.py tests/test_messages_delivery.py tests/test_subscriptions.py \
	tests/test_corpus.py tests/test_footprint.py

.PHONY: all test test-paho1 lint demo bench bench-armv7 tools clean micropython fuzz soak

all: test

$(VENV)/.stamp: tests/requirements.txt requirements.txt
	@$(PYTHON) -m venv $(VENV) || { echo "make: cannot create a venv; on Debian/Ubuntu: apt-get install python3-venv" >&2; exit 1; }
	$(VENV)/bin/pip install -q --disable-pip-version-check -r tests/requirements.txt
	@touch $@

$(VENV1)/.stamp: tests/requirements.txt
	@$(PYTHON) -m venv $(VENV1)
	$(VENV1)/bin/pip install -q --disable-pip-version-check 'paho-mqtt==1.6.1' pytest hypothesis
	@touch $@

tools:
	@missing=""; \
	for p in $(APT_PACKAGES); do \
		c=$${p%%:*}; \
		command -v $$c >/dev/null 2>&1 || [ -x /usr/sbin/$$c ] || missing="$$missing $${p#*:}"; \
	done; \
	$(PYTHON) -c "import ensurepip" 2>/dev/null || missing="$$missing python3-venv"; \
	if [ -n "$$missing" ]; then \
		echo "make: installing$$missing with apt-get"; \
		if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
		{ $$SUDO apt-get update -q && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q --no-install-recommends$$missing; } >/dev/null \
		|| { echo "make: could not install$$missing; install it by hand (apt-get install$$missing)" >&2; exit 1; }; \
	fi

# oelint-adv on the Yocto layer, for the current LTS; info-level hints are
# not shown, errors and warnings fail. homepageping is off: it needs the
# network (and HOMEPAGE is a placeholder until chariotd has a public home).
OELINT := $(VENV)/bin/oelint-adv --quiet --hide info --release scarthgap \
	--suppress oelint.vars.homepageping
# Buildroot's utils/check-package on buildroot-package/ and the scripts it
# installs (init files, job handlers), when BUILDROOT_DIR names a Buildroot
# tree. It needs flake8 and python-magic, put into .venv when missing.
BUILDROOT_DIR ?=
JOB_HANDLERS := $(sort $(wildcard examples/jobs/*.sh))
SHELL_SCRIPTS := init/runit/chariotd/run init/runit/chariotd/finish \
	init/runit/chariotd/log/run init/sysvinit/S90chariotd $(JOB_HANDLERS)
CHECK_PACKAGE_FILES = $(sort $(shell find buildroot-package -type f)) $(SHELL_SCRIPTS)

lint: $(VENV)/.stamp
	$(VENV)/bin/ruff check .
	@if command -v shellcheck >/dev/null 2>&1; then \
		echo "shellcheck -s sh $(SHELL_SCRIPTS); shellcheck .ci/run"; \
		shellcheck -s sh $(SHELL_SCRIPTS) && shellcheck .ci/run; \
	else echo "lint: no shellcheck (apt-get install shellcheck): SKIPPING shellcheck"; fi
	$(OELINT) $$(find meta-chariotd -name '*.bb' -o -name '*.bbappend' -o -name '*.conf' | sort)
	@if [ -z "$(BUILDROOT_DIR)" ]; then \
		echo "lint: BUILDROOT_DIR is not set: SKIPPING Buildroot's check-package"; \
	elif [ ! -x "$(BUILDROOT_DIR)/utils/check-package" ]; then \
		echo "lint: BUILDROOT_DIR=$(BUILDROOT_DIR) has no utils/check-package" >&2; exit 1; \
	else \
		{ $(PY) -c "import flake8, magic" 2>/dev/null \
		  || $(VENV)/bin/pip install -q --disable-pip-version-check flake8 python-magic; } \
		&& echo "check-package -b $(CHECK_PACKAGE_FILES)" \
		&& top=$$(pwd) && cd "$(BUILDROOT_DIR)" \
		&& PATH="$$top/$(VENV)/bin:$$PATH" utils/check-package -b \
			$(addprefix $$top/,$(CHECK_PACKAGE_FILES)); \
	fi

test: tools $(VENV)/.stamp $(VENV1)/.stamp lint micropython
	$(PY) -m pytest tests -q -p no:cacheprovider
	$(MAKE) --no-print-directory test-paho1

test-paho1: tools $(VENV1)/.stamp
	$(PY1) -m pytest $(wildcard $(PAHO1_TESTS)) -q -p no:cacheprovider

# The npm package that runs MicroPython 1.27 under Node.js, for
# tests/test_micropython.py (the pure helpers' vectors), in .node/.
MICROPYTHON_NPM := @micropython/micropython-webassembly-pyscript@1.27.0
MICROPYTHON_MJS := .node/node_modules/@micropython/micropython-webassembly-pyscript/micropython.mjs

micropython:
	@if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then \
		echo "micropython: no Node.js/npm (apt-get install nodejs npm): SKIPPING the MicroPython run of the helper vectors"; \
	elif [ ! -e $(MICROPYTHON_MJS) ]; then \
		echo "micropython: installing $(MICROPYTHON_NPM) into .node/"; \
		npm install --prefix .node --no-audit --no-fund --silent $(MICROPYTHON_NPM) \
		|| { echo "micropython: npm install $(MICROPYTHON_NPM) failed" >&2; exit 1; }; \
	fi

# The properties of tests/test_fuzz.py, 100,000 inputs each (make test runs
# a few hundred); about an hour on one core (the message-file properties are
# half of it: some payloads are near AWS's 128 KiB).
FUZZ_EXAMPLES ?= 100000

fuzz: $(VENV)/.stamp
	CHARIOTD_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(PY) -m pytest tests/test_fuzz.py -q -p no:cacheprovider --durations=0

# The tests marked soak (fault runs over ~20 s each, the fleet of 100
# daemons) that make test skips; the real-link ones need root and iproute2.
soak: tools $(VENV)/.stamp
	$(PY) -m pytest tests -q -p no:cacheprovider --soak -m soak --durations=0 -rs -rP

demo: tools $(VENV)/.stamp
	$(PY) examples/demo.py

# One report: every figure beside a bare paho client and paho reading,
# parsing and deleting the files, in the same run (BENCH_ARGS=--quick: fewer rounds).
bench: tools $(VENV)/.stamp
	$(PY) tests/bench/bench.py $(BENCH_ARGS)

# The memory step of the report on armv7: a Debian bookworm armhf VM
# (qemu-system-arm -M virt, cortex-a15, a real kernel; python3.11 with
# Debian's paho-mqtt 1.6.1, mosquitto, openssl), built once into ARMHF_CACHE
# by the shared tools (as root: debootstrap). The tree is copied in without
# its venvs and .git. About 3 minutes on our machine once the rootfs is
# built; FOOTPRINT.md says what the figures are.
ARMHF_TOOLS ?= ../shared/tools
ARMHF_CACHE ?= /tmp/chariotd-armhf
ARMV7_TREE := $(CURDIR)/build/armv7-tree
ARMV7_ARGS ?= --timeout 300

bench-armv7:
	ARMHF_CACHE=$(ARMHF_CACHE) ARMHF_EXTRA=mosquitto,openssl $(ARMHF_TOOLS)/armhf-rootfs.sh --kernel >/dev/null
	rm -rf $(ARMV7_TREE) && mkdir -p $(ARMV7_TREE)
	tar -cf - --exclude=./.venv --exclude=./.venv-paho1 --exclude=./.git --exclude=./.node \
		--exclude=./build --exclude=__pycache__ . | tar -C $(ARMV7_TREE) -xf -
	ARMHF_CACHE=$(ARMHF_CACHE) $(ARMHF_TOOLS)/armhf-run.sh --vm --mem 512 --timeout 3600 \
		--bind $(ARMV7_TREE) python3 $(ARMV7_TREE)/tests/bench/bench.py --json /dev/null $(ARMV7_ARGS) memory

clean:
	rm -rf $(VENV) $(VENV1) .node .pytest_cache .ruff_cache .hypothesis
