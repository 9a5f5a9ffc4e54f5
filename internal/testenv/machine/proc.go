package machine

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// clockTicks is USER_HZ, the unit of /proc's CPU times: 100 on every Linux
// architecture Go supports.
const clockTicks = 100

// ProcStat is what /proc/<pid>/stat says of a process.
type ProcStat struct {
	// Comm is the command name, without the parentheses.
	Comm string
	// PPID is the parent's process ID.
	PPID int
	// CPU is the user plus system CPU time used so far, every thread
	// counted.
	CPU time.Duration
}

// ReadProcStat reads /proc/<pid>/stat.
func ReadProcStat(pid int) (ProcStat, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return ProcStat{}, err
	}
	s := string(b)
	// The command may hold spaces and parentheses: it runs from the first
	// '(' to the last ')'.
	open, end := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
	if open < 0 || end < open {
		return ProcStat{}, fmt.Errorf("unexpected /proc/%d/stat", pid)
	}
	f := strings.Fields(s[end+1:])
	// After the command: state f[0], ppid f[1], utime f[11], stime f[12].
	if len(f) < 13 {
		return ProcStat{}, fmt.Errorf("unexpected /proc/%d/stat", pid)
	}
	ppid, _ := strconv.Atoi(f[1])
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return ProcStat{Comm: s[open+1 : end], PPID: ppid, CPU: time.Duration(ut+st) * time.Second / clockTicks}, nil
}

// Memory is a process's resident memory from /proc/<pid>/status.
type Memory struct {
	// HWMKiB is the peak resident set size (VmHWM), in KiB.
	HWMKiB int64
	// RSSKiB is the current resident set size (VmRSS), in KiB.
	RSSKiB int64
}

// ReadMemory reads /proc/<pid>/status.
func ReadMemory(pid int) (Memory, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return Memory{}, err
	}
	var m Memory
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		v, _ := strconv.ParseInt(f[1], 10, 64)
		switch f[0] {
		case "VmHWM:":
			m.HWMKiB = v
		case "VmRSS:":
			m.RSSKiB = v
		}
	}
	return m, nil
}

// PIDs returns the IDs of the processes alive now.
func PIDs() []int {
	entries, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range entries {
		if pid, err := strconv.Atoi(e.Name()); err == nil {
			pids = append(pids, pid)
		}
	}
	return pids
}

// Tree returns pid and its live descendants, pid first.
func Tree(pid int) []int {
	parent := map[int]int{}
	for _, p := range PIDs() {
		if st, err := ReadProcStat(p); err == nil {
			parent[p] = st.PPID
		}
	}
	out := []int{pid}
	for i := 0; i < len(out); i++ {
		for p, pp := range parent {
			if pp == out[i] {
				out = append(out, p)
			}
		}
	}
	return out
}

// TreeCPU is the CPU time used so far by pid and its live descendants.
func TreeCPU(pid int) time.Duration {
	var sum time.Duration
	for _, p := range Tree(pid) {
		if st, err := ReadProcStat(p); err == nil {
			sum += st.CPU
		}
	}
	return sum
}

// TreeHWMKiB is the sum of the peak resident set sizes (KiB) of pid and its
// live descendants.
func TreeHWMKiB(pid int) int64 {
	var sum int64
	for _, p := range Tree(pid) {
		if m, err := ReadMemory(p); err == nil {
			sum += m.HWMKiB
		}
	}
	return sum
}

// CPUTime returns the machine's busy and total CPU time so far, all cores
// together, from the first line of /proc/stat; ok is false when it cannot
// be read. Busy is total less idle and iowait.
func CPUTime() (busy, total time.Duration, ok bool) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0, false
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) <= 4 || f[0] != "cpu" {
		return 0, 0, false
	}
	var all, idle int64
	for i, v := range f[1:] {
		n, _ := strconv.ParseInt(v, 10, 64)
		if i >= 8 { // guest time is already counted in user
			break
		}
		all += n
		if i == 3 || i == 4 { // idle, iowait
			idle += n
		}
	}
	return time.Duration(all-idle) * time.Second / clockTicks, time.Duration(all) * time.Second / clockTicks, true
}

// TCPConnsByRemotePort counts pid's TCP sockets by remote port, from
// /proc/<pid>/fd and /proc/<pid>/net/tcp{,6}.
func TCPConnsByRemotePort(pid int) map[int]int {
	inodes := map[string]bool{}
	fds, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	for _, fd := range fds {
		link, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, fd.Name()))
		if err == nil && strings.HasPrefix(link, "socket:[") {
			inodes[strings.TrimSuffix(strings.TrimPrefix(link, "socket:["), "]")] = true
		}
	}
	byPort := map[int]int{}
	for _, file := range []string{"tcp", "tcp6"} {
		raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/net/%s", pid, file))
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(raw), "\n")[1:] {
			f := strings.Fields(line)
			// sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
			if len(f) < 10 || !inodes[f[9]] {
				continue
			}
			_, portHex, ok := strings.Cut(f[2], ":")
			if !ok {
				continue
			}
			if port, err := strconv.ParseInt(portHex, 16, 32); err == nil {
				byPort[int(port)]++
			}
		}
	}
	return byPort
}
