package testenv

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"testing"
	"time"
)

// A process in the namespace reaches a loopback service through the
// forwarders; while the link is cut its connection hangs without an error,
// and after Restore the same connection carries on.
func TestNetnsCutAndRestore(t *testing.T) {
	n := NewNetns(t)
	// An echo server on the host's loopback.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); _, _ = io.Copy(c, c) }()
		}
	}()
	hostSide := n.Forward(l.Addr().String())

	// This test binary, inside the namespace, relays stdin lines to the
	// echo server through its own forwarder on the namespace's loopback.
	cmd := n.Command(os.Args[0], "-test.run=^TestNetnsHelperProcess$")
	cmd.Env = append(os.Environ(), "TESTENV_NETNS_HELPER="+hostSide)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	lines := make(chan string, 10)
	go func() {
		s := bufio.NewScanner(stdout)
		for s.Scan() {
			lines <- s.Text()
		}
		close(lines)
	}()
	echo := func(msg string, within time.Duration) bool {
		t.Helper()
		if _, err := fmt.Fprintln(stdin, msg); err != nil {
			t.Fatal(err)
		}
		select {
		case got := <-lines:
			if got != "echo "+msg {
				t.Fatalf("want %q from the helper, got %q", "echo "+msg, got)
			}
			return true
		case <-time.After(within):
			return false
		}
	}
	if !echo("before", 10*time.Second) {
		t.Fatal("no echo through the namespace before the cut")
	}
	n.Cut()
	if echo("during", time.Second) {
		t.Fatal("an echo came back while the link was cut")
	}
	n.Restore()
	// The line sent during the cut arrives once the link is back.
	select {
	case got := <-lines:
		if got != "echo during" {
			t.Fatalf("after Restore: want %q, got %q", "echo during", got)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the connection did not carry on after Restore")
	}
}

// TestNetnsHelperProcess is the process TestNetnsCutAndRestore runs inside
// its namespace.
func TestNetnsHelperProcess(t *testing.T) {
	target := os.Getenv("TESTENV_NETNS_HELPER")
	if target == "" {
		t.Skip("subprocess of TestNetnsCutAndRestore")
	}
	l, err := ListenAndForward("127.0.0.1:0", target)
	if err != nil {
		t.Fatal(err)
	}
	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	in := bufio.NewScanner(os.Stdin)
	back := bufio.NewScanner(c)
	for in.Scan() {
		if _, err := fmt.Fprintln(c, in.Text()); err != nil {
			t.Fatal(err)
		}
		if !back.Scan() {
			t.Fatal(back.Err())
		}
		fmt.Println("echo " + strings.TrimSpace(back.Text()))
	}
}
