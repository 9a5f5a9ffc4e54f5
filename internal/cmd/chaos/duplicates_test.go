package main

import (
	"maps"
	"testing"
	"time"
)

func TestAttributeDuplicates(t *testing.T) {
	t0 := time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)
	at := func(s int) time.Time { return t0.Add(time.Duration(s) * time.Second) }
	faults := []injectedFault{
		{faultKillRelay, at(40)}, // recorded out of order: sorted first
		{faultKillLeader, at(0)},
		{faultPauseRelay, at(20)},
	}
	redelivered := []time.Time{
		at(-1),  // before any fault
		at(0),   // the leader kill's first instant
		at(5),   // leader kill alone
		at(25),  // leader kill and pause
		at(30),  // the leader kill's window is over: pause alone
		at(45),  // pause and relay kill
		at(100), // no fault in the 30 s before
	}
	d := attributeDuplicates(redelivered, faults)
	wantBy := map[string]int{faultKillLeader: 3, faultPauseRelay: 3, faultKillRelay: 1}
	wantAlone := map[string]int{faultKillLeader: 2, faultPauseRelay: 1}
	if !maps.Equal(d.byKind, wantBy) {
		t.Errorf("byKind: got %v, want %v", d.byKind, wantBy)
	}
	if !maps.Equal(d.alone, wantAlone) {
		t.Errorf("alone: got %v, want %v", d.alone, wantAlone)
	}
	if d.none != 2 {
		t.Errorf("none: got %d, want 2", d.none)
	}
}
