package main

import (
	"fmt"
	"os"
	"time"
)

// startFleet starts -relays relay processes and -consumers consumer
// processes, and readies the fault injector that will break them.
func (r *chaosRun) startFleet() error {
	o := r.o
	r.fleet = newFleet(fleetConfig{
		relayBin: r.relayBin, selfBin: r.selfBin, dbURL: r.dbURL, brokers: r.brokersEnv,
		topic: r.topic, group: r.group, logDir: r.dir, logf: r.logf,
	})
	in := newInjector(o.seed)
	in.fleet, in.admin, in.dbName, in.every, in.broker, in.logf = r.fleet, r.admin, r.dbName, o.faultEvery, r.broker, r.logf
	in.minConsumers, in.maxConsumers = max(1, o.consumers-1), o.consumers+1
	r.faults = in
	// Whatever happens, the broker is up again and the processes are gone
	// before the database is dropped.
	r.atExit(func() {
		if err := in.finish(); err != nil {
			fmt.Fprintf(os.Stderr, "chaos: broker: %v\n", err)
		}
		r.fleet.stopAll(15 * time.Second)
	})
	for range o.relays {
		if _, err := r.fleet.add(roleRelay); err != nil {
			return failf(1, "%v", err)
		}
	}
	for range o.consumers {
		if _, err := r.fleet.add(roleConsumer); err != nil {
			return failf(1, "%v", err)
		}
	}
	r.logf("started %d relays and %d consumers", o.relays, o.consumers)
	return nil
}
