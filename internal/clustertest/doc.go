// Package clustertest holds the end-to-end fault tests that run against the
// three-node KRaft cluster of `scripts/services.sh cluster-up`: a relay
// publishes and an inbox consumer applies while a broker is killed (the
// leader of every partition, or of one partition of three), every broker is
// restarted in turn, or a broker is paused. The package has no
// code of its own; its tests run only in `make cluster-tests`
// (OUTBOXKIT_CLUSTER=1 and KAFKA_CLUSTER_BROKERS), because they stop nodes.
//
// They check the README's "Guarantees and their limits", with topics at
// replication factor 3 and min.insync.replicas 2: nothing lost, each
// aggregate's events in commit order (first occurrences), each event applied
// once by the consumer, and a relay and a consumer that follow the new
// partition leaders without being restarted.
package clustertest
