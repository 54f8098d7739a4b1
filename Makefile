# Reinado's developer entry points. GNU make; every target is phony (cargo does its own dependency tracking).

SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

CARGO ?= cargo

# Simulator: `make sim` runs SEEDS seeds starting at SEED_START; `make sim SEED=S [VERBOSE=1]` replays one.
SEEDS ?= 1000
SEED_START ?= 1
SEED ?=
VERBOSE ?=

# The compose tool for the container targets that arrive with the node service: the plugin if present,
# else the standalone binary, else empty.
COMPOSE := $(shell if docker compose version >/dev/null 2>&1; then echo "docker compose"; elif command -v docker-compose >/dev/null 2>&1; then echo docker-compose; fi)

SIM_RUN := $(CARGO) run --release -p reinado-sim --bin reinado-sim --

.PHONY: help toolchain fmt fmt-check clippy build test sim sim-bugs

help: ## List the targets.
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{ printf "  %-10s %s\n", $$1, $$2 }'

toolchain: ## Install rustfmt and clippy if they are missing.
	@if ! $(CARGO) fmt --version >/dev/null 2>&1 || ! $(CARGO) clippy --version >/dev/null 2>&1; then \
		rustup component add rustfmt clippy; \
	fi

fmt: toolchain ## Format the workspace.
	$(CARGO) fmt --all

fmt-check: toolchain ## Fail if the workspace is not formatted.
	$(CARGO) fmt --all -- --check

clippy: toolchain ## Lint every crate and target, warnings as errors.
	$(CARGO) clippy --workspace --all-targets -- -D warnings

build: ## Release build of the workspace.
	$(CARGO) build --workspace --release

test: toolchain ## Format check, clippy, unit and integration tests, 1,500 simulator seeds, injected bugs caught.
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	$(CARGO) test --workspace
	$(MAKE) sim SEEDS=1000
	$(SIM_RUN) --seeds 500 --profile leader-churn
	$(MAKE) sim-bugs

# Each known bug must be caught within a bounded number of seeds, or the checkers have lost their teeth.
sim-bugs: ## Prove the simulator's checkers catch each deliberately injected bug.
	$(SIM_RUN) --bug vote-without-log-check --expect-violation --seeds 50
	$(SIM_RUN) --bug read-without-read-index --expect-violation --seeds 50
	$(SIM_RUN) --bug commit-previous-term --expect-violation --seeds 3000

sim: ## Run the simulator: SEEDS=N SEED_START=S, or SEED=S [VERBOSE=1] to replay one seed.
ifneq ($(strip $(SEED)),)
	$(SIM_RUN) --seed $(SEED)$(if $(filter 1,$(VERBOSE)), --verbose)
else
	$(SIM_RUN) --seeds $(SEEDS) --seed-start $(SEED_START)
endif
