package kafkaclient

import (
	"context"
	"errors"
	"net"
	"strings"
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

// TestMechanismAgreesWithValidate checks that broker.Config.Validate
// refuses exactly the SCRAM credentials the SCRAM client refuses, and that
// the client's refusal, for a Config that skipped Validate, does not quote
// the password.
func TestMechanismAgreesWithValidate(t *testing.T) {
	t.Parallel()
	const secret = "hunter2-Sekr1t"
	passwords := []string{
		secret, secret + "\n", secret + "\r\n", "\t" + secret, secret + "\u00a0", secret + "\u00ad",
		"pässwörd", secret + "\U0001F600", secret + "\xff", secret + "\ufffd", secret + "\x7f",
		"\u05d0" + secret + "\u05d1", "\u05d0\u05d1", "\u05d0\u05d11", "\u0627\u0644", "", secret + "\u2028",
		secret + "\ue000", secret + "\u200e",
	}
	for _, mech := range []broker.Mechanism{broker.SCRAMSHA256, broker.SCRAMSHA512} {
		for _, pw := range passwords {
			cfg := broker.Config{Brokers: []string{"k:9092"}, SASL: broker.SASL{Mechanism: mech, Username: "relay", Password: pw}}
			verr := cfg.Validate()
			_, merr := Mechanism(cfg)
			if (verr == nil) != (merr == nil) {
				t.Errorf("%s, password %+q: Validate() = %v but Mechanism() = %v; want both to accept or both to refuse", mech, pw, verr, merr)
			}
			if merr != nil {
				if !errors.Is(merr, ErrSCRAMCredentials) {
					t.Errorf("%s, password %+q: Mechanism() = %v, want ErrSCRAMCredentials", mech, pw, merr)
				}
				if pw != "" && strings.Contains(merr.Error(), pw) || strings.Contains(merr.Error(), secret) {
					t.Errorf("%s: Mechanism() error %q quotes the password", mech, merr)
				}
			}
		}
	}
}
