# outboxkit: the two commands a newcomer needs are `make demo` and `make test`.
SHELL := /bin/bash
export DATABASE_URL ?= postgres://postgres:postgres@127.0.0.1:5432/postgres?sslmode=disable
GO ?= go

# Tests, benchmarks and the chaos run use the real broker `make services`
# starts; the demo uses KAFKA_BROKERS only when you set it, and otherwise
# an in-process broker.
test fault-tests bench-outbox bench-relay bench-relay-quick bench-inbox chaos chaos-short: export KAFKA_BROKERS ?= 127.0.0.1:9092

.PHONY: test services services-down check fault-tests bench-outbox bench-inbox demo

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

## check: gofmt and go vet
check:
	@unformatted=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$unformatted" ]; then echo "gofmt needed: $$unformatted"; exit 1; fi
	$(GO) vet ./...

## test: everything, against the real services
test: services check
	$(GO) test -race -count=1 -timeout 20m ./...
	$(MAKE) fault-tests

## fault-tests: tests that stop and restart the shared broker; run alone, one package at a time
fault-tests:
	OUTBOXKIT_BROKER_CONTROL=1 $(GO) test -race -count=1 -p 1 -timeout 20m -run 'BrokerRestart' ./...

## bench-outbox: outbox.Write cost against hand-written INSERTs
bench-outbox: services
	$(GO) test -run '^$$' -bench . -benchtime 3s ./outbox/

## bench-inbox: consumer throughput with the inbox, without it, and a bare kafka-go reader
bench-inbox: services
	$(GO) test -run '^$$' -bench Consumer -benchtime 1x ./inbox/

.PHONY: bench-relay bench-relay-quick

## bench-relay: relay throughput vs a bare kafka-go ceiling, latency, drain rate, RSS (docs/benchmarks.md); BENCH_RELAY_FLAGS adds flags
bench-relay: services
	$(GO) run ./bench/relay -events 1000000 -small-backlog 10000 -steady-duration 20s -rates 1000,5000 -rate-duration 20s -partitions 12 $(BENCH_RELAY_FLAGS)

## bench-relay-quick: the same at tiny sizes (20k backlog, 5s phases), a smoke run
bench-relay-quick: services
	$(GO) run ./bench/relay -quick $(BENCH_RELAY_FLAGS)
