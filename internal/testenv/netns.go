package testenv

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"
)

// Netns is a network namespace made for one test, joined to the test's own
// namespace by a veth pair on a private /30 (10.213.x.y). A process started
// with [Netns.Command] reaches the services only through forwarders
// ([Netns.Forward] on the host side, [ListenAndForward] inside), so cutting
// the link ([Netns.Cut]) silences it without a FIN or RST reaching anyone:
// to PostgreSQL and Kafka it looks alive, as a partitioned client does.
// Traffic goes only to loopback and to the namespace the test made.
type Netns struct {
	// Name is the namespace's name, for `ip netns exec`.
	Name string
	// HostAddr is the host side's address on the link.
	HostAddr string
	// NsAddr is the namespace side's address on the link.
	NsAddr string

	t      testing.TB
	hostIf string
}

// NewNetns creates a namespace and its link, brings up its loopback, and
// removes both in t.Cleanup. It skips t when the test does not run as root
// or the ip command is missing.
func NewNetns(t testing.TB) *Netns {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("testenv: network namespaces need root; run the tests as root to cut a process's network")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("testenv: the ip command (iproute2) is missing; install it to cut a process's network")
	}
	var b [3]byte
	_, _ = rand.Read(b[:])
	id := fmt.Sprintf("%02x%02x%02x", b[0], b[1], b[2])
	base := int(b[2]&0x3f) * 4
	n := &Netns{
		Name:     "okt-" + id,
		HostAddr: fmt.Sprintf("10.213.%d.%d", b[1], base+1),
		NsAddr:   fmt.Sprintf("10.213.%d.%d", b[1], base+2),
		t:        t,
		hostIf:   "okt" + id + "h",
	}
	nsIf := "okt" + id + "n"
	t.Cleanup(func() {
		// Deleting the namespace deletes its end of the pair, and so both.
		_ = exec.Command("ip", "link", "del", n.hostIf).Run()
		_ = exec.Command("ip", "netns", "del", n.Name).Run()
	})
	n.ip("netns", "add", n.Name)
	n.ip("link", "add", n.hostIf, "type", "veth", "peer", "name", nsIf)
	n.ip("link", "set", nsIf, "netns", n.Name)
	n.ip("addr", "add", n.HostAddr+"/30", "dev", n.hostIf)
	n.ip("link", "set", n.hostIf, "up")
	n.ip("-n", n.Name, "addr", "add", n.NsAddr+"/30", "dev", nsIf)
	n.ip("-n", n.Name, "link", "set", nsIf, "up")
	n.ip("-n", n.Name, "link", "set", "lo", "up")
	return n
}

func (n *Netns) ip(args ...string) {
	n.t.Helper()
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		n.t.Fatalf("testenv: ip %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
}

// Command returns a command that runs name inside the namespace.
func (n *Netns) Command(name string, args ...string) *exec.Cmd {
	return exec.Command("ip", append([]string{"netns", "exec", n.Name, name}, args...)...)
}

// Forward listens on the host side of the link and forwards every
// connection to target (a loopback service such as "127.0.0.1:5432"). It
// returns the address to dial from inside the namespace. The forwarder
// stops accepting in t.Cleanup.
func (n *Netns) Forward(target string) string {
	n.t.Helper()
	l, err := ListenAndForward(net.JoinHostPort(n.HostAddr, "0"), target)
	if err != nil {
		n.t.Fatalf("testenv: %v", err)
	}
	n.t.Cleanup(func() { _ = l.Close() })
	return l.Addr().String()
}

// Cut takes the link down: nothing passes either way, and no endpoint is
// told, until Restore.
func (n *Netns) Cut() { n.t.Helper(); n.ip("link", "set", n.hostIf, "down") }

// Restore brings the link back up; connections that outlived the cut carry on.
func (n *Netns) Restore() { n.t.Helper(); n.ip("link", "set", n.hostIf, "up") }

// ListenAndForward listens on listen and relays each accepted connection to
// target, byte for byte, in both directions, until either side closes it.
// Closing the returned listener stops accepting; relayed connections carry
// on. A process inside a [Netns] uses it to make the services' usual
// loopback addresses lead to the host side's forwarders.
func ListenAndForward(listen, target string) (net.Listener, error) {
	l, err := net.Listen("tcp", listen)
	if err != nil {
		return nil, fmt.Errorf("forward %s to %s: %w", listen, target, err)
	}
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				if errors.Is(err, net.ErrClosed) {
					return
				}
				time.Sleep(10 * time.Millisecond)
				continue
			}
			go relay(c, target)
		}
	}()
	return l, nil
}

func relay(c net.Conn, target string) {
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var d net.Dialer
	up, err := d.DialContext(ctx, "tcp", target)
	if err != nil {
		return
	}
	defer up.Close()
	var wg sync.WaitGroup
	wg.Add(2)
	pipe := func(dst, src net.Conn) {
		defer wg.Done()
		_, _ = io.Copy(dst, src)
		// Pass the end of one direction on, and end the other one too: a
		// half-open relay would keep a dead peer's session alive.
		_ = dst.Close()
		_ = src.Close()
	}
	go pipe(up, c)
	go pipe(c, up)
	wg.Wait()
}

// EnvForward names the variable that tells a test subprocess started in a
// [Netns] which forwarders to start: "listen=target" pairs, comma-separated,
// as [Netns.ForwardEnv] writes them and [StartForwards] reads them.
const EnvForward = "OUTBOXKIT_TEST_FORWARD"

// ForwardEnv forwards each of addrs (loopback services) from the host side
// of the link, and returns the EnvForward=... entry that makes a subprocess
// in the namespace reach them at the same addresses.
func (n *Netns) ForwardEnv(addrs ...string) string {
	n.t.Helper()
	pairs := make([]string, len(addrs))
	for i, a := range addrs {
		pairs[i] = a + "=" + n.Forward(a)
	}
	return EnvForward + "=" + strings.Join(pairs, ",")
}

// StartForwards starts the forwarders EnvForward lists, if any: a test
// subprocess running in a Netns calls it before it connects to anything.
func StartForwards() error {
	spec := os.Getenv(EnvForward)
	if spec == "" {
		return nil
	}
	for _, pair := range strings.Split(spec, ",") {
		listen, target, ok := strings.Cut(pair, "=")
		if !ok {
			return fmt.Errorf("testenv: %s: %q is not listen=target", EnvForward, pair)
		}
		if _, err := ListenAndForward(listen, target); err != nil {
			return err
		}
	}
	return nil
}
