# chariotd: `make demo`, `make test`, `make bench`, `make lint`.
# Everything the targets need is set up here: a venv in .venv (paho-mqtt 2.x
# and the test tools), a second one in .venv-paho1 with paho-mqtt 1.6.1, and
# mosquitto, busybox and openssl from apt when they are missing.

PYTHON ?= python3
VENV := .venv
VENV1 := .venv-paho1
PY := $(VENV)/bin/python
PY1 := $(VENV1)/bin/python
# command:package (just the name when they are the same)
APT_PACKAGES := mosquitto busybox openssl runsv:runit shellcheck node:nodejs npm
# The tests that exercise paho directly, run again against paho-mqtt 1.6.
PAHO1_TESTS := tests/test_connection.py tests/test_messages.py tests/test_messages_delivery.py tests/test_subscriptions.py

.PHONY: all test test-paho1 lint demo bench tools clean micropython fuzz

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

lint: $(VENV)/.stamp
	$(VENV)/bin/ruff check .

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
# a few hundred); about half an hour on one core.
FUZZ_EXAMPLES ?= 100000

fuzz: $(VENV)/.stamp
	CHARIOTD_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(PY) -m pytest tests/test_fuzz.py -q -p no:cacheprovider --durations=0

demo: tools $(VENV)/.stamp
	$(PY) examples/demo.py

bench: tools $(VENV)/.stamp
	$(PY) tests/bench/bench_messages.py
	$(PY) tests/bench/bench_idle.py

clean:
	rm -rf $(VENV) $(VENV1) .node .pytest_cache .ruff_cache .hypothesis
