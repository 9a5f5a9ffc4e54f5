package main

import (
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/outboxkit/outboxkit/internal/testenv"
)

// envForward tells a chaos process started with OUTBOXKIT_CHAOS_ROLE=forwarder
// inside a namespace which addresses to listen on and where to forward them:
// listen=target pairs, comma-separated.
const envForward = "OUTBOXKIT_CHAOS_FORWARD"

// netns is a network namespace of the chaos run, for one relay, joined to
// the host by a veth pair on a private /30 (10.214.x.y), as
// internal/testenv's Netns does for tests (docs/design.md §6). Inside it,
// a forwarder process listens on the loopback addresses of PostgreSQL and
// the brokers, so the relay uses its usual DATABASE_URL and the brokers'
// advertised addresses; it forwards to linkForwarders on the host side of
// the link, which forward to the services. Taking the link down (cut)
// silences the relay without a FIN or RST reaching anyone; the host-side
// forwarders can also delay every chunk (slow). The delay is done here
// rather than with tc netem because sch_netem is missing from many kernels.
type netns struct {
	name     string
	hostIf   string
	nsIf     string
	hostAddr string
	nsAddr   string

	forwards  []*linkForwarder
	forwarder *exec.Cmd   // the in-namespace forwarder process
	closing   atomic.Bool // close has begun: the forwarder's exit is expected
}

// netnsAvailable says why relays cannot run in namespaces here, or "".
func netnsAvailable() string {
	if os.Geteuid() != 0 {
		return "network namespaces need root"
	}
	if _, err := exec.LookPath("ip"); err != nil {
		return "the ip command (iproute2) is missing"
	}
	return ""
}

// newNetns creates a namespace, its link and its forwarders to targets
// (loopback host:port addresses), and starts selfBin inside it as the
// forwarder process, logging to logDir. close removes it all.
func newNetns(selfBin, logDir string, targets []string, logf func(string, ...any)) (*netns, error) {
	var b [3]byte
	_, _ = rand.Read(b[:])
	id := fmt.Sprintf("%02x%02x%02x", b[0], b[1], b[2])
	base := int(b[2]&0x3f) * 4
	n := &netns{
		name:     "okc-" + id,
		hostIf:   "okc" + id + "h",
		nsIf:     "okc" + id + "n",
		hostAddr: fmt.Sprintf("10.214.%d.%d", b[1], base+1),
		nsAddr:   fmt.Sprintf("10.214.%d.%d", b[1], base+2),
	}
	nsIf := n.nsIf
	steps := [][]string{
		{"netns", "add", n.name},
		{"link", "add", n.hostIf, "type", "veth", "peer", "name", nsIf},
		{"link", "set", nsIf, "netns", n.name},
		{"addr", "add", n.hostAddr + "/30", "dev", n.hostIf},
		{"link", "set", n.hostIf, "up"},
		{"-n", n.name, "addr", "add", n.nsAddr + "/30", "dev", nsIf},
		{"-n", n.name, "link", "set", nsIf, "up"},
		{"-n", n.name, "link", "set", "lo", "up"},
	}
	for _, args := range steps {
		if err := ip(args...); err != nil {
			n.close()
			return nil, err
		}
	}
	var pairs []string
	for _, target := range targets {
		f, err := listenLink(net.JoinHostPort(n.hostAddr, "0"), target)
		if err != nil {
			n.close()
			return nil, err
		}
		n.forwards = append(n.forwards, f)
		pairs = append(pairs, target+"="+f.l.Addr().String())
	}
	logFile, err := os.OpenFile(filepath.Join(logDir, n.name+"-forwarder.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		n.close()
		return nil, err
	}
	cmd := n.command(selfBin)
	cmd.Env = append(baseEnv(), envRole+"=forwarder", envForward+"="+strings.Join(pairs, ","))
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = sysProcAttr()
	if err := cmd.Start(); err != nil {
		logFile.Close()
		n.close()
		return nil, fmt.Errorf("netns %s: start forwarder: %w", n.name, err)
	}
	n.forwarder = cmd
	go func() {
		err := cmd.Wait()
		logFile.Close()
		if !n.closing.Load() {
			logf("UNEXPECTED exit of the forwarder in %s: %v; its relay cannot reach the services", n.name, err)
		}
	}()
	// The relay's first connection must find the forwarder listening.
	deadline := time.Now().Add(10 * time.Second)
	for _, target := range targets {
		for !n.listening(target) {
			if time.Now().After(deadline) {
				n.close()
				return nil, fmt.Errorf("netns %s: the forwarder does not listen on %s", n.name, target)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	return n, nil
}

// listening reports whether something in the namespace accepts on addr.
func (n *netns) listening(addr string) bool {
	_, port, _ := net.SplitHostPort(addr)
	out, err := exec.Command("ip", "netns", "exec", n.name, "ss", "-Htln", "sport", "= :"+port).Output()
	return err == nil && strings.TrimSpace(string(out)) != ""
}

func ip(args ...string) error {
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// command returns a command that runs name inside the namespace; ip netns
// exec execs it, so the command's pid is the program's.
func (n *netns) command(name string, args ...string) *exec.Cmd {
	return exec.Command("ip", append([]string{"netns", "exec", n.name, name}, args...)...)
}

// cut takes the link down: nothing passes either way until restore.
func (n *netns) cut() error { return ip("link", "set", n.hostIf, "down") }

// restore brings the link back up and waits, up to 5s, until it carries
// traffic again (the veth takes a moment to report its carrier);
// connections that outlived the cut carry on.
func (n *netns) restore() error {
	if err := ip("link", "set", n.hostIf, "up"); err != nil {
		return err
	}
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		out, err := exec.Command("ip", "-o", "link", "show", "dev", n.hostIf).Output()
		if err == nil && strings.Contains(string(out), "LOWER_UP") && strings.Contains(string(out), "state UP") {
			// Addresses that failed to resolve during the cut would stay
			// unreachable for a while.
			_ = ip("neigh", "flush", "dev", n.hostIf)
			_ = ip("-n", n.name, "neigh", "flush", "dev", n.nsIf)
			return nil
		}
	}
	return fmt.Errorf("netns %s: link %s not up 5s after ip link set up", n.name, n.hostIf)
}

// slow delays every chunk each host-side forwarder passes on, both ways,
// by d (0: no delay).
func (n *netns) slow(d time.Duration) {
	for _, f := range n.forwards {
		f.delay.Store(int64(d))
	}
}

// close stops the forwarders and removes the link and the namespace.
func (n *netns) close() {
	n.closing.Store(true)
	if n.forwarder != nil && n.forwarder.Process != nil {
		_ = n.forwarder.Process.Kill()
	}
	for _, f := range n.forwards {
		_ = f.l.Close()
	}
	// Deleting the namespace deletes its end of the pair, and so both.
	_ = exec.Command("ip", "link", "del", n.hostIf).Run()
	_ = exec.Command("ip", "netns", "del", n.name).Run()
}

// linkForwarder relays each connection accepted on l to target, both ways,
// holding every chunk back by delay first: a slow link without tc.
type linkForwarder struct {
	l      net.Listener
	target string
	delay  atomic.Int64 // time.Duration
}

func listenLink(listen, target string) (*linkForwarder, error) {
	l, err := net.Listen("tcp", listen)
	if err != nil {
		return nil, fmt.Errorf("forward %s to %s: %w", listen, target, err)
	}
	f := &linkForwarder{l: l, target: target}
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
			go f.relay(c)
		}
	}()
	return f, nil
}

func (f *linkForwarder) relay(c net.Conn) {
	defer c.Close()
	up, err := net.DialTimeout("tcp", f.target, 10*time.Second)
	if err != nil {
		return
	}
	defer up.Close()
	var wg sync.WaitGroup
	wg.Go(func() { f.pipe(up, c) })
	f.pipe(c, up)
	wg.Wait()
}

// pipe copies src to dst, each chunk written delay after it was read; a
// reader goroutine keeps reading meanwhile, so the delay adds latency
// without capping throughput. When either side ends, both do: a half-open
// relay would keep a dead peer's session alive.
func (f *linkForwarder) pipe(dst, src net.Conn) {
	type chunk struct {
		b  []byte
		at time.Time
	}
	ch := make(chan chunk, 256)
	go func() {
		defer close(ch)
		for {
			buf := make([]byte, 32<<10)
			n, err := src.Read(buf)
			if n > 0 {
				ch <- chunk{buf[:n], time.Now()}
			}
			if err != nil {
				return
			}
		}
	}()
	for c := range ch {
		if d := time.Duration(f.delay.Load()); d > 0 {
			time.Sleep(time.Until(c.at.Add(d)))
		}
		if _, err := dst.Write(c.b); err != nil {
			break
		}
	}
	_ = dst.Close()
	_ = src.Close()
	for range ch { // let the reader goroutine end
	}
}

// runForwarder is the forwarder process inside a relay's namespace: it
// listens on the services' loopback addresses and forwards each to the
// host side of the link, until it is killed.
func runForwarder() int {
	for _, pair := range strings.Split(os.Getenv(envForward), ",") {
		listen, target, ok := strings.Cut(pair, "=")
		if !ok {
			fmt.Fprintf(os.Stderr, "chaos forwarder: bad %s pair %q\n", envForward, pair)
			return 2
		}
		if _, err := testenv.ListenAndForward(listen, target); err != nil {
			fmt.Fprintf(os.Stderr, "chaos forwarder: %v\n", err)
			return 1
		}
		fmt.Fprintf(os.Stderr, "chaos forwarder: %s -> %s\n", listen, target)
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	<-sig
	return 0
}

// loopbackTargets checks that every address is a host:port on an IPv4
// loopback address, the only kind a namespace's forwarder can stand in for
// without changing the relay's configuration.
func loopbackTargets(addrs []string) error {
	for _, a := range addrs {
		host, _, err := net.SplitHostPort(a)
		ipAddr := net.ParseIP(host)
		if err != nil || ipAddr == nil || ipAddr.To4() == nil || !ipAddr.IsLoopback() {
			return fmt.Errorf("%q is not an IPv4 loopback host:port (relays in a network namespace reach only those)", a)
		}
	}
	return nil
}
