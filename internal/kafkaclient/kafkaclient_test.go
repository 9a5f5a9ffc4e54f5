package kafkaclient

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/outboxkit/outboxkit/broker"
)

// A broker that accepts connections and never answers (frozen by SIGSTOP,
// a hung VM) fails a partition leader lookup within ReadTimeout, although
// kafka-go sends it without a deadline and under a context that never ends.
func TestDialerBoundsReadsWithoutDeadline(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	// Connections are accepted and held open; nothing is read or written.
	go func() {
		var held []net.Conn
		defer func() {
			for _, c := range held {
				c.Close()
			}
		}()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			held = append(held, c)
		}
	}()

	d, err := Dialer(broker.Config{Brokers: []string{ln.Addr().String()}}, "test")
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	done := make(chan error, 1)
	go func() {
		_, err := d.LookupPartition(context.Background(), "tcp", ln.Addr().String(), "topic", 0)
		done <- err
	}()
	select {
	case err := <-done:
		took := time.Since(start)
		if err == nil {
			t.Fatal("LookupPartition on a silent broker succeeded")
		}
		if took < ReadTimeout-time.Second {
			t.Errorf("LookupPartition failed after %s, before ReadTimeout (%s): %v", took, ReadTimeout, err)
		}
		t.Logf("LookupPartition on a silent broker failed after %s: %v", took.Round(100*time.Millisecond), err)
	case <-time.After(ReadTimeout + 5*time.Second):
		t.Fatalf("LookupPartition on a silent broker still waiting after %s", ReadTimeout+5*time.Second)
	}
}
