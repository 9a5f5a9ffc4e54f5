package kafkaconfig

import (
	"context"
	"crypto/sha256"
	"errors"
	"testing"
)

// TestSCRAMRFC7677 replays the SCRAM-SHA-256 exchange of RFC 7677 section 3.
func TestSCRAMRFC7677(t *testing.T) {
	t.Parallel()
	m := newSCRAM("SCRAM-SHA-256", sha256.New, "user", "pencil")
	m.nonce = func() (string, error) { return "rOprNGfwEbeRWgbNEkqO", nil }

	sess, first, err := m.Start(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if got, want := string(first), "n,,n=user,r=rOprNGfwEbeRWgbNEkqO"; got != want {
		t.Fatalf("client-first = %q, want %q", got, want)
	}
	done, final, err := sess.Next(context.Background(),
		[]byte("r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"))
	if err != nil || done {
		t.Fatalf("Next(server-first) = done %v, err %v; want a client-final", done, err)
	}
	want := "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
	if string(final) != want {
		t.Fatalf("client-final = %q, want %q", final, want)
	}
	done, _, err = sess.Next(context.Background(), []byte("v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="))
	if err != nil || !done {
		t.Fatalf("Next(server-final) = done %v, err %v; want done", done, err)
	}
}

func TestSCRAMRejectsBadServer(t *testing.T) {
	t.Parallel()
	const nonce = "clientnonce"
	tests := []struct {
		name        string
		serverFirst string
		serverFinal string // checked only when serverFirst is accepted
	}{
		{name: "error attribute", serverFirst: "e=unknown-user"},
		{name: "nonce not extended", serverFirst: "r=clientnonce,s=c2FsdA==,i=4096"},
		{name: "foreign nonce", serverFirst: "r=othernonce123,s=c2FsdA==,i=4096"},
		{name: "bad salt", serverFirst: "r=clientnonceXYZ,s=***,i=4096"},
		{name: "too few iterations", serverFirst: "r=clientnonceXYZ,s=c2FsdA==,i=1"},
		{name: "too many iterations", serverFirst: "r=clientnonceXYZ,s=c2FsdA==,i=999999999"},
		{name: "mandatory extension", serverFirst: "m=ext,r=clientnonceXYZ,s=c2FsdA==,i=4096"},
		{name: "wrong server signature", serverFirst: "r=clientnonceXYZ,s=c2FsdA==,i=4096", serverFinal: "v=AAAA"},
		{name: "server final error", serverFirst: "r=clientnonceXYZ,s=c2FsdA==,i=4096", serverFinal: "e=invalid-proof"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			m := newSCRAM("SCRAM-SHA-256", sha256.New, "u", "p")
			m.nonce = func() (string, error) { return nonce, nil }
			sess, _, err := m.Start(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			_, _, err = sess.Next(context.Background(), []byte(tt.serverFirst))
			if tt.serverFinal != "" {
				if err != nil {
					t.Fatalf("server-first rejected: %v", err)
				}
				_, _, err = sess.Next(context.Background(), []byte(tt.serverFinal))
			}
			if !errors.Is(err, errSCRAM) {
				t.Fatalf("got %v, want a SCRAM authentication error", err)
			}
		})
	}
}

func TestSCRAMEscapesUsername(t *testing.T) {
	t.Parallel()
	m := newSCRAM("SCRAM-SHA-256", sha256.New, "a,b=c", "p")
	m.nonce = func() (string, error) { return "n0", nil }
	_, first, err := m.Start(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if got, want := string(first), "n,,n=a=2Cb=3Dc,r=n0"; got != want {
		t.Fatalf("client-first = %q, want %q", got, want)
	}
}
