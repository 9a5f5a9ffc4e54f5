package machine

import (
	"net"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"testing"
	"time"
)

func TestProcReaders(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("reads /proc")
	}
	self := os.Getpid()
	st, err := ReadProcStat(self)
	if err != nil || st.PPID != os.Getppid() || st.Comm == "" {
		t.Fatalf("ReadProcStat(self) = %+v, %v; want ppid %d and a command name", st, err, os.Getppid())
	}
	for deadline := time.Now().Add(5 * time.Second); ; {
		if st, _ = ReadProcStat(self); st.CPU > 0 || time.Now().After(deadline) {
			break
		}
	}
	if st.CPU <= 0 {
		t.Errorf("ReadProcStat(self).CPU = %s, want > 0", st.CPU)
	}
	m, err := ReadMemory(self)
	if err != nil || m.RSSKiB <= 0 || m.HWMKiB < m.RSSKiB {
		t.Errorf("ReadMemory(self) = %+v, %v; want 0 < RSS <= HWM", m, err)
	}
	if !slices.Contains(PIDs(), self) {
		t.Error("PIDs() lacks this process")
	}

	child := exec.Command("sleep", "30")
	if err := child.Start(); err != nil {
		t.Skipf("start sleep: %v", err)
	}
	defer func() { _ = child.Process.Kill(); _ = child.Wait() }()
	if tree := Tree(self); tree[0] != self || !slices.Contains(tree, child.Process.Pid) {
		t.Errorf("Tree(self) = %v, want this process first and the child %d in it", tree, child.Process.Pid)
	}
	if TreeHWMKiB(self) <= m.HWMKiB/2 || TreeCPU(self) <= 0 {
		t.Errorf("TreeHWMKiB(self) = %d, TreeCPU(self) = %s; want the process's own figures at least", TreeHWMKiB(self), TreeCPU(self))
	}
	if busy, total, ok := CPUTime(); !ok || busy <= 0 || total < busy {
		t.Errorf("CPUTime() = %s, %s, %v; want 0 < busy <= total", busy, total, ok)
	}

	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	conn, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_, port, _ := net.SplitHostPort(l.Addr().String())
	p, _ := strconv.Atoi(port)
	if n := TCPConnsByRemotePort(self)[p]; n != 1 {
		t.Errorf("TCPConnsByRemotePort(self)[%d] = %d, want 1 (the dialled connection)", p, n)
	}
}
