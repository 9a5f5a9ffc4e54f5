package main

import (
	"context"
	"fmt"
	"strings"
	"time"
)

// verify stops the relays and consumers, checks shipping_log against
// written_events, reads the topic back for phantoms and prints the table.
// It fails on a violation (lost, applied twice, out of order, unknown,
// phantoms; acknowledged events that vanished, unless the standby is
// asynchronous), a drain that timed out, or too few faults (kinds).
func (r *chaosRun) verify(ctx context.Context) error {
	o := r.o
	// Stop the processes before verifying, so that whatever they might
	// still apply (a redelivery applied twice) is in shipping_log.
	r.logf("stopping relays and consumers")
	r.fleet.stopAll(15 * time.Second)

	vctx, cancelV := context.WithTimeout(ctx, 2*time.Minute)
	defer cancelV()
	rep, err := verifyShippingLog(vctx, r.admin, r.writers.svc.acked.snapshot())
	if err != nil {
		return failf(1, "%v", err)
	}
	survived, err := writtenEvents(vctx, r.admin)
	if err != nil {
		return failf(1, "%v", err)
	}
	kafka, kafkaErr := scanTopic(vctx, r.brokers, r.topic, survived)

	total, skipped, counts, _ := r.faults.state()
	w := r.writers
	res := result{
		o: o, rep: rep, written: r.written, last: r.last, drained: r.drained,
		load: w.loads.Load(), hot: w.hot.Load(), late: w.late.Load(),
		loadTime: r.loadTime, drainTime: r.drainTime, total: time.Since(r.con.start),
		faults: total, skipped: skipped, counts: counts, kinds: r.faults.kinds, required: r.required, unexpected: r.fleet.unexpectedExits(),
		kafka: kafka, kafkaErr: kafkaErr, brokerNote: r.brokerNote, failovers: r.failoverNotes(kafka.redelivered),
		dups: attributeDuplicates(kafka.redelivered, r.faults.faultTimes()),
	}
	res.violations = violations(o, rep, kafka, r.drained, total, len(counts))
	if kafkaErr != nil {
		res.violations = append(res.violations, fmt.Sprintf("could not read the topic back for phantoms: %v", kafkaErr))
	}
	for _, m := range r.minimums {
		if counts[m.name] < m.weight {
			res.violations = append(res.violations, fmt.Sprintf("only %d %s faults injected (-min %s=%d)", counts[m.name], m.name, m.name, m.weight))
		}
	}
	for _, k := range r.required {
		if counts[k] == 0 {
			res.violations = append(res.violations, fmt.Sprintf("no %s fault injected (-require)", k))
		}
	}
	r.con.printf("%s", res.table())
	if len(res.violations) > 0 {
		r.con.printf("FAIL (seed %d): %s\nreproduce: %s\n", o.seed, strings.Join(res.violations, "; "), r.repro)
		if !o.keep {
			r.con.printf("(add -keep to keep the database %s and the topic for inspection)\n", r.dbName)
		}
		return errViolations
	}
	r.passed = true
	return nil
}

// violations lists what fails the run.
func violations(o options, rep report, k topicScan, drained bool, faults, kinds int) []string {
	var v []string
	if !drained {
		v = append(v, fmt.Sprintf("the drain did not finish within %s", o.drainTimeout))
	}
	if rep.lost > 0 {
		v = append(v, fmt.Sprintf("%d events lost", rep.lost))
	}
	if rep.duplicates > 0 {
		v = append(v, fmt.Sprintf("%d events applied twice", rep.duplicates))
	}
	if rep.outOfOrder > 0 {
		v = append(v, fmt.Sprintf("%d events applied out of order", rep.outOfOrder))
	}
	if rep.unexpected > 0 {
		v = append(v, fmt.Sprintf("%d applied events unknown to written_events", rep.unexpected))
	}
	if k.phantoms > 0 {
		v = append(v, fmt.Sprintf("%d phantoms: events on Kafka whose transaction the final primary lacks", k.phantoms))
	}
	if rep.vanished > 0 && o.pgHA != "async" {
		// Only an asynchronous failover may lose an acknowledged commit.
		v = append(v, fmt.Sprintf("%d acknowledged events vanished from the database", rep.vanished))
	}
	if faults < o.minFaults {
		v = append(v, fmt.Sprintf("only %d faults injected (at least %d required)", faults, o.minFaults))
	}
	if kinds < o.minKinds {
		v = append(v, fmt.Sprintf("only %d kinds of faults injected (at least %d required)", kinds, o.minKinds))
	}
	return v
}
