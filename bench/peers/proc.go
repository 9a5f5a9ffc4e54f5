package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"
)

// child is one running process of a system under test: the relay binary,
// the Debezium JVM or the watermill forwarder.
type child struct {
	name    string
	cmd     *exec.Cmd
	pid     int
	started time.Time
	exited  chan struct{}
	waitErr error
}

// startChild starts cmd and waits until it is ready: ready is either a line
// it prints on stdout (token) or, when token is empty, a URL that answers
// 200. Its other output goes to stderr with a prefix.
func startChild(ctx context.Context, name string, cmd *exec.Cmd, token, readyURL string) (*child, error) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	c := &child{name: name, cmd: cmd, pid: cmd.Process.Pid, started: time.Now(), exited: make(chan struct{})}
	ready := make(chan struct{}, 1)
	go prefixLines(stderr, name, "", nil)
	go prefixLines(stdout, name, token, ready)
	go func() {
		c.waitErr = cmd.Wait()
		close(c.exited)
	}()
	if token == "" {
		go func() {
			client := &http.Client{Timeout: time.Second}
			for {
				select {
				case <-c.exited:
					return
				case <-time.After(20 * time.Millisecond):
				}
				resp, err := client.Get(readyURL)
				if err == nil {
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode == http.StatusOK {
						ready <- struct{}{}
						return
					}
				}
			}
		}()
	}
	select {
	case <-ready:
		return c, nil
	case <-c.exited:
		return nil, fmt.Errorf("%s exited before it was ready: %v", name, c.waitErr)
	case <-time.After(120 * time.Second):
		c.kill()
		return nil, fmt.Errorf("%s not ready within 120s", name)
	case <-ctx.Done():
		c.kill()
		return nil, ctx.Err()
	}
}

// prefixLines copies r to stderr line by line with a prefix, and signals
// ready once when it sees token alone on a line.
func prefixLines(r io.Reader, name, token string, ready chan<- struct{}) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if token != "" && strings.TrimSpace(line) == token {
			ready <- struct{}{}
			continue
		}
		fmt.Fprintf(os.Stderr, "  [%s] %s\n", name, line)
	}
}

func (c *child) alive() error {
	select {
	case <-c.exited:
		return fmt.Errorf("%s exited unexpectedly: %v", c.name, c.waitErr)
	default:
		return nil
	}
}

// stop sends SIGTERM and waits up to 60s for a clean exit, then kills.
func (c *child) stop() error {
	select {
	case <-c.exited:
		return fmt.Errorf("%s had exited: %v", c.name, c.waitErr)
	default:
	}
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.exited:
		var ee *exec.ExitError
		if c.waitErr != nil && !(errors.As(c.waitErr, &ee) && ee.ExitCode() == 143) {
			return fmt.Errorf("%s: %v", c.name, c.waitErr)
		}
		return nil
	case <-time.After(60 * time.Second):
		c.kill()
		return fmt.Errorf("%s did not stop within 60s of SIGTERM", c.name)
	}
}

func (c *child) kill() {
	_ = c.cmd.Process.Kill()
	<-c.exited
}
