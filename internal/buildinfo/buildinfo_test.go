package buildinfo_test

import (
	"runtime/debug"
	"strings"
	"testing"

	"github.com/outboxkit/outboxkit/internal/buildinfo"
)

func TestFormat(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		bi   *debug.BuildInfo
		want string
	}{
		{
			name: "tagged release",
			bi: &debug.BuildInfo{
				GoVersion: "go1.26.0",
				Main:      debug.Module{Path: "github.com/outboxkit/outboxkit", Version: "v0.4.0"},
				Settings: []debug.BuildSetting{
					{Key: "vcs", Value: "git"},
					{Key: "vcs.revision", Value: "3f2a9c1d0e7b4a5968778695a4b3c2d1e0f9a8b7"},
					{Key: "vcs.time", Value: "2026-12-02T20:33:08Z"},
					{Key: "vcs.modified", Value: "false"},
				},
			},
			want: "outbox-relay v0.4.0\n" +
				"module github.com/outboxkit/outboxkit\n" +
				"commit 3f2a9c1d0e7b4a5968778695a4b3c2d1e0f9a8b7 2026-12-02T20:33:08Z\n" +
				"go go1.26.0\n",
		},
		{
			name: "modified work tree",
			bi: &debug.BuildInfo{
				GoVersion: "go1.26.0",
				Main:      debug.Module{Path: "github.com/outboxkit/outboxkit", Version: "v0.4.1-0.20261202203308-3f2a9c1d0e7b+dirty"},
				Settings: []debug.BuildSetting{
					{Key: "vcs.revision", Value: "3f2a9c1d0e7b4a5968778695a4b3c2d1e0f9a8b7"},
					{Key: "vcs.modified", Value: "true"},
				},
			},
			want: "outbox-relay v0.4.1-0.20261202203308-3f2a9c1d0e7b+dirty\n" +
				"module github.com/outboxkit/outboxkit\n" +
				"commit 3f2a9c1d0e7b4a5968778695a4b3c2d1e0f9a8b7 (modified)\n" +
				"go go1.26.0\n",
		},
		{
			name: "no VCS information",
			bi: &debug.BuildInfo{
				GoVersion: "go1.26.0",
				Main:      debug.Module{Path: "github.com/outboxkit/outboxkit", Version: "(devel)"},
			},
			want: "outbox-relay (devel)\n" +
				"module github.com/outboxkit/outboxkit\n" +
				"commit unknown (built without VCS information)\n" +
				"go go1.26.0\n",
		},
		{
			name: "no build information",
			bi:   nil,
			want: "outbox-relay unknown\nmodule unknown\ncommit unknown (built without VCS information)\ngo unknown\n",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := buildinfo.Format("outbox-relay", tt.bi); got != tt.want {
				t.Errorf("Format:\n%s\nwant:\n%s", got, tt.want)
			}
		})
	}
}

// TestText reads the test binary's own build information: the Go version
// is always recorded.
func TestText(t *testing.T) {
	t.Parallel()
	got := buildinfo.Text("outboxkit")
	lines := strings.Split(strings.TrimSuffix(got, "\n"), "\n")
	if len(lines) != 4 || !strings.HasPrefix(lines[0], "outboxkit ") || !strings.HasPrefix(lines[1], "module ") ||
		!strings.HasPrefix(lines[2], "commit ") || lines[3] != "go "+goVersion(t) {
		t.Fatalf("Text = %q, want four lines: name and version, module, commit, go %s", got, goVersion(t))
	}
}

func goVersion(t *testing.T) string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		t.Skip("test binary has no build information")
	}
	return bi.GoVersion
}
