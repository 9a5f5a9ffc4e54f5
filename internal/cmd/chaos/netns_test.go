package main

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// TestMain lets the test binary stand in for the chaos binary as the
// forwarder process inside a namespace.
func TestMain(m *testing.M) {
	if os.Getenv(envRole) == "forwarder" {
		os.Exit(runForwarder())
	}
	os.Exit(m.Run())
}

// A process in a relay's namespace reaches a loopback service at its usual
// address through the forwarders; a slow link delays each round trip by
// twice the delay; a cut link silences it until restored.
func TestNetnsForwardsSlowsAndCuts(t *testing.T) {
	if why := netnsAvailable(); why != "" {
		t.Skip(why)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				r := bufio.NewReader(c)
				for {
					line, err := r.ReadString('\n')
					if err != nil {
						return
					}
					fmt.Fprint(c, "echo "+line)
				}
			}()
		}
	}()
	ns, err := newNetns(os.Args[0], t.TempDir(), []string{l.Addr().String()}, t.Logf)
	if err != nil {
		t.Fatal(err)
	}
	defer ns.close()

	_, port, _ := net.SplitHostPort(l.Addr().String())
	// One connection, three round trips, from inside the namespace.
	roundTrips := func() (string, time.Duration, error) {
		script := fmt.Sprintf(`exec 3<>/dev/tcp/127.0.0.1/%s; for i in 1 2 3; do echo hi$i >&3; read -t 3 l <&3 || exit 1; echo "$l"; done`, port)
		cmd := ns.command("bash", "-c", script)
		t0 := time.Now()
		out, err := cmd.CombinedOutput()
		return strings.TrimSpace(string(out)), time.Since(t0), err
	}
	out, fast, err := roundTrips()
	if err != nil || out != "echo hi1\necho hi2\necho hi3" {
		t.Fatalf("through the forwarders: got %q, %v; want three echoes", out, err)
	}

	ns.slow(100 * time.Millisecond)
	out, slow, err := roundTrips()
	if err != nil || !strings.HasSuffix(out, "echo hi3") {
		t.Fatalf("slow link: got %q, %v; want three echoes", out, err)
	}
	// The connection's handshake and three round trips, 200ms each.
	if slow < fast+500*time.Millisecond {
		t.Errorf("slow link: three round trips took %s (%s without the delay), want at least 600ms more", slow, fast)
	}
	ns.slow(0)

	if err := ns.cut(); err != nil {
		t.Fatal(err)
	}
	if out, _, err := roundTrips(); err == nil {
		t.Errorf("cut link: round trips succeeded: %q", out)
	}
	if err := ns.restore(); err != nil {
		t.Fatal(err)
	}
	if out, _, err := roundTrips(); err != nil || !strings.HasSuffix(out, "echo hi3") {
		t.Errorf("restored link: got %q, %v; want three echoes", out, err)
	}
	if err := exec.Command("ip", "netns", "exec", ns.name, "true").Run(); err != nil {
		t.Fatalf("namespace %s gone before close: %v", ns.name, err)
	}
}
