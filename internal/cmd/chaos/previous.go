package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// binaries are the relay binary and the consumer program of one release.
type binaries struct {
	ref      string // as given to -previous
	commit   string // what ref resolved to
	relay    string // its cmd/outbox-relay
	consumer string // its chaos program, re-executed as a consumer
}

// buildPrevious extracts release ref of the repository at root into dir
// (git archive, so the work tree is left alone) and builds its relay and
// its chaos program there. The chaos program moved over time; the first of
// its known places that the release has is built.
func buildPrevious(ctx context.Context, root, ref, dir string) (*binaries, error) {
	out, err := exec.CommandContext(ctx, "git", "-C", root, "rev-parse", "--verify", "--quiet", ref+"^{commit}").Output()
	if err != nil {
		return nil, fmt.Errorf("-previous %s: not a commit or tag of %s (a shallow clone lacks history: fetch it, or name a commit it has)", ref, root)
	}
	b := &binaries{ref: ref, commit: strings.TrimSpace(string(out))}
	src := filepath.Join(dir, "src")
	if err := os.MkdirAll(src, 0o755); err != nil {
		return nil, err
	}
	archive := exec.CommandContext(ctx, "sh", "-c", `git -C "$1" archive --format=tar "$2" | tar -x -C "$3"`, "sh", root, b.commit, src)
	if out, err := archive.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("-previous %s: git archive: %v\n%s", ref, err, out)
	}
	program := ""
	for _, p := range []string{"internal/cmd/chaos", "internal/chaos"} {
		if _, err := os.Stat(filepath.Join(src, p, "main.go")); err == nil {
			program = "./" + p
			break
		}
	}
	if program == "" {
		return nil, fmt.Errorf("-previous %s: the release has no chaos program to run its consumers", ref)
	}
	b.relay, b.consumer = filepath.Join(dir, "outbox-relay"), filepath.Join(dir, "chaos")
	for _, build := range [][2]string{{b.relay, "./cmd/outbox-relay"}, {b.consumer, program}} {
		cmd := exec.CommandContext(ctx, "go", "build", "-o", build[0], build[1])
		cmd.Dir = src
		if out, err := cmd.CombinedOutput(); err != nil {
			return nil, fmt.Errorf("-previous %s: go build %s: %v\n%s", ref, build[1], err, out)
		}
	}
	return b, nil
}
