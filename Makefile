# imagebake: `make build` builds the example tree, `make test` runs the tests.
# Both set up what they need first: Debian packages (when missing) and .venv.

VENV        := .venv
BIN         := $(VENV)/bin
APT_PACKAGES := buildah skopeo docker-registry busybox-static graphviz
SUDO        := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
PYTHON      ?= python3
DOIT_ARGS   ?=

.PHONY: setup system-packages build test lint bench clean

setup: system-packages $(BIN)/.installed

system-packages:
	@missing=$$(for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:" $$missing; \
	  $(SUDO) apt-get update -q && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q $$missing; \
	fi

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $@

build: setup
	$(BIN)/doit $(DOIT_ARGS) build

lint: setup
	$(BIN)/ruff check .

test: setup lint
	$(BIN)/pytest -ra

bench: setup
	$(BIN)/python bench/run.py $(if $(QUICK),--quick)

clean:
	-$(BIN)/doit clean
	rm -rf build
