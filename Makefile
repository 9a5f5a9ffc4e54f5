# outboxkit: the two commands a newcomer needs are `make demo` and `make test`.
SHELL := /bin/bash
export DATABASE_URL ?= postgres://postgres:postgres@127.0.0.1:5432/postgres?sslmode=disable
export KAFKA_BROKERS ?= 127.0.0.1:9092
GO ?= go

.PHONY: test services services-down check unit fault-tests bench-outbox bench-relay bench-inbox demo chaos

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

.PHONY: bench-relay bench-relay-quick

## bench-relay: relay throughput vs a bare kafka-go ceiling, latency, drain rate, RSS (docs/benchmarks.md); BENCH_RELAY_FLAGS adds flags
bench-relay: services
	$(GO) run ./bench/relay -events 1000000 -small-backlog 10000 -steady-duration 20s -rates 1000,5000 -rate-duration 20s -partitions 12 $(BENCH_RELAY_FLAGS)

## bench-relay-quick: the same at tiny sizes (20k backlog, 5s phases), a smoke run
bench-relay-quick: services
	$(GO) run ./bench/relay -quick $(BENCH_RELAY_FLAGS)
