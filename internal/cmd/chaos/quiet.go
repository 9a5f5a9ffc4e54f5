package main

import (
	"syscall"
	"time"
)

// The quiet faults: a process that stops answering without exiting, as a
// paused VM, a long GC pause or a network partition makes it. PostgreSQL
// and Kafka see its connections as alive (docs/design.md §6); only the
// relay's lock-session timeout and lease, Kafka's session timeout and the
// inbox's idle-in-transaction timeout end its hold. Each fault ends on its
// own after the planned time, in a goroutine finish waits for, and the
// member is left alone by other faults meanwhile (fleet.quietBegin).

// pause SIGSTOPs m's process and SIGCONTs it after d.
func (in *injector) pause(kind string, m *member, d time.Duration) {
	cmd, ok := in.fleet.quietBegin(m, kind, syscall.SIGSTOP)
	if !ok {
		in.skip(kind, "%s exited meanwhile", m.name)
		return
	}
	pid := cmd.Process.Pid
	in.record(kind, "%s pid %d SIGSTOP, SIGCONT in %s", m.name, pid, d)
	in.wg.Go(func() {
		time.Sleep(d)
		in.fleet.quietEnd(m, cmd, syscall.SIGCONT)
		in.logf("%s pid %d resumed (SIGCONT) after %s", m.name, pid, d)
	})
}

// cut takes the link of m's namespace down and brings it back after d.
func (in *injector) cut(kind string, m *member, d time.Duration) {
	cmd, ok := in.fleet.quietBegin(m, kind, 0)
	if !ok {
		in.skip(kind, "%s exited meanwhile", m.name)
		return
	}
	if err := m.netns.cut(); err != nil {
		in.fleet.quietEnd(m, cmd, 0)
		in.skip(kind, "%s: %v", m.name, err)
		return
	}
	in.record(kind, "%s (pid %d, namespace %s) link down for %s", m.name, cmd.Process.Pid, m.netns.name, d)
	in.wg.Go(func() {
		time.Sleep(d)
		// A restore that fails would leave the relay cut off for good;
		// retry it, the drain needs the relay back.
		for attempt := 1; ; attempt++ {
			err := m.netns.restore()
			if err == nil {
				break
			}
			in.logf("%s: restore the link (attempt %d): %v", m.name, attempt, err)
			if attempt == 5 {
				break
			}
			time.Sleep(time.Second)
		}
		in.fleet.quietEnd(m, cmd, 0)
		in.logf("%s link up again after %s", m.name, d)
	})
}

// slow delays m's traffic by delay each way for d.
func (in *injector) slow(kind string, m *member, delay, d time.Duration) {
	cmd, ok := in.fleet.quietBegin(m, kind, 0)
	if !ok {
		in.skip(kind, "%s exited meanwhile", m.name)
		return
	}
	m.netns.slow(delay)
	in.record(kind, "%s (pid %d, namespace %s) %s each way for %s", m.name, cmd.Process.Pid, m.netns.name, delay, d)
	in.wg.Go(func() {
		time.Sleep(d)
		m.netns.slow(0)
		in.fleet.quietEnd(m, cmd, 0)
		in.logf("%s link fast again after %s", m.name, d)
	})
}
