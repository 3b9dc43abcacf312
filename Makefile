# The two commands of the README: `make demo` and `make test`. Both build .venv first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test lint servers bench proof clean systemd-check container-test systemd-test

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "inboxbot needs Python 3.11 or newer"'
	@$(PYTHON) -m venv $(VENV) 2>/dev/null || { \
	  echo "python3-venv is missing; installing it (needs root)"; \
	  apt-get update -qq && apt-get install -y -qq python3-venv && $(PYTHON) -m venv $(VENV); }
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test,sentry]'
	@touch $(STAMP)

demo: $(STAMP)
	$(BIN)/inboxbot demo $(if $(DURATION),--duration $(DURATION))

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/hadolint Dockerfile

servers:                    # Mosquitto (apt, root) and Synapse (own venv) for the sink tests
	tests/servers/install.sh

test: lint servers
	$(BIN)/pytest -q -rs

bench: $(STAMP)
	$(BIN)/python bench/poll_overhead.py
	$(BIN)/python bench/burst.py
	$(BIN)/python bench/idle.py
	$(BIN)/python bench/scale.py --seconds 30
	$(BIN)/python bench/digest.py
	$(BIN)/python bench/push_latency.py rocketchat
	$(BIN)/python bench/push_latency.py imap

proof: $(STAMP)             # the proof suite (~35 min; not part of `make test`): proof/RESULTS.md
	$(BIN)/python -m proof.run $(PROOF_ARGS)

systemd-check: $(STAMP)     # systemd-analyze verify (silent) and security (exposure ≤ 1.5)
	systemd/check.sh

container-test: $(STAMP)    # the image under podman (root; ~1 min cached, ~3 min cold)
	tests/container/run.sh

systemd-test: $(STAMP)      # the unit under real systemd as PID 1 in podman (root; ~1.5 min)
	tests/container/systemd.sh

clean:
	rm -rf $(VENV) .cache build *.egg-info .pytest_cache .mypy_cache .ruff_cache
