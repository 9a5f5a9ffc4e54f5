package main

import (
	"context"
	"fmt"
	"os"
	"strings"
	"time"
)

// startFleet starts -relays relay processes and -consumers consumer
// processes, and readies the fault injector that will break them.
func (r *chaosRun) startFleet() error {
	o := r.o
	r.fleet = newFleet(fleetConfig{
		relayBin: r.relayBin, selfBin: r.selfBin, previous: r.prevBins, dbURL: r.dbURL, brokers: r.brokersEnv,
		topic: r.topic, group: r.group, logDir: r.dir, logf: r.logf,
	})
	if o.wal {
		r.fleet.cfg.relayEnv = []string{"RELAY_SOURCE=wal", "RELAY_WAL_SLOT=" + r.slot}
	} else if r.ha != nil {
		// No phantom after a failover: an event is published only once
		// the standby has flushed its commit. In sync mode too, since a
		// commit is visible to the relay before the standby confirms it.
		r.fleet.cfg.relayEnv = []string{"RELAY_STANDBYS=" + haStandby}
	}
	in := newInjector(o.seed)
	in.fleet, in.admin, in.dbName, in.every, in.broker, in.logf = r.fleet, r.admin, r.dbName, o.faultEvery, r.broker, r.logf
	in.kinds, in.cluster, in.netnsRelays, in.wal, in.ha, in.slot = r.kinds, r.cluster, o.netnsRelays, o.wal, r.ha, r.slot
	if r.ha != nil && o.wal {
		snapCtx, stopSnap := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { defer close(done); logSnapshots(snapCtx, r.admin) }()
		r.atExit(func() { stopSnap(); <-done })
	}
	in.minConsumers, in.maxConsumers = max(1, o.consumers-1), o.consumers+1
	r.faults = in

	// The namespaces go after the processes in them (cleanups run last
	// registered first).
	namespaces := make([]*netns, o.netnsRelays)
	r.atExit(func() {
		for _, ns := range namespaces {
			if ns != nil {
				ns.close()
			}
		}
	})
	targets := append(dbHostPorts(r.adminURL), r.brokers...)
	for i := range namespaces {
		ns, err := newNetns(r.selfBin, r.dir, targets, r.logf)
		if err != nil {
			return failf(1, "network namespace for a relay: %v", err)
		}
		namespaces[i] = ns
		r.logf("namespace %s: link %s <-> %s, forwarding %s", ns.name, ns.hostAddr, ns.nsAddr, strings.Join(targets, ", "))
	}

	// Whatever happens, the broker is up again and the processes are gone
	// before the database is dropped.
	r.atExit(func() {
		if err := in.finish(); err != nil {
			fmt.Fprintf(os.Stderr, "chaos: broker: %v\n", err)
		}
		r.fleet.stopAll(15 * time.Second)
	})
	for i := range o.relays {
		var ns *netns
		if i < len(namespaces) {
			ns = namespaces[i]
		}
		if _, err := r.fleet.addIn(roleRelay, ns); err != nil {
			return failf(1, "%v", err)
		}
	}
	for range o.consumers {
		if _, err := r.fleet.add(roleConsumer); err != nil {
			return failf(1, "%v", err)
		}
	}
	r.logf("started %d relays (%d in network namespaces) and %d consumers", o.relays, o.netnsRelays, o.consumers)
	return nil
}
