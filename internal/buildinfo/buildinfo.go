// Package buildinfo formats what the Go toolchain records in a binary (the
// main module's path and version, the VCS commit it was built from) as the
// version text of outboxkit's programs: `outbox-relay -version` and
// `outboxkit version`. There is no version variable to set with -ldflags:
// `go build` and `go install module@version` record it all already.
package buildinfo

import (
	"fmt"
	"runtime/debug"
	"strings"
)

// Text returns the version text of the running binary, program being its
// name, as [Format] writes it.
func Text(program string) string {
	bi, _ := debug.ReadBuildInfo() // nil without build information
	return Format(program, bi)
}

// Format returns four lines describing bi, for example:
//
//	outbox-relay v0.4.0
//	module github.com/outboxkit/outboxkit
//	commit 3f2a9c1d0e7b... 2026-12-02T20:33:08Z (modified)
//	go go1.26.0
//
// The version is the main module's: a tag for `go install ...@v0.4.0`, a
// pseudo-version for a build in a git checkout, "(devel)" when the toolchain
// knew none. "(modified)" means the work tree had uncommitted changes. bi
// may be nil (a binary built without module support): every value then
// reads "unknown".
func Format(program string, bi *debug.BuildInfo) string {
	version, module, goVersion := "unknown", "unknown", "unknown"
	commit := "unknown (built without VCS information)"
	if bi != nil {
		if bi.Main.Version != "" {
			version = bi.Main.Version
		}
		if bi.Main.Path != "" {
			module = bi.Main.Path
		}
		if bi.GoVersion != "" {
			goVersion = bi.GoVersion
		}
		settings := map[string]string{}
		for _, s := range bi.Settings {
			settings[s.Key] = s.Value
		}
		if rev := settings["vcs.revision"]; rev != "" {
			commit = rev
			if t := settings["vcs.time"]; t != "" {
				commit += " " + t
			}
			if settings["vcs.modified"] == "true" {
				commit += " (modified)"
			}
		}
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s\n", program, version)
	fmt.Fprintf(&b, "module %s\n", module)
	fmt.Fprintf(&b, "commit %s\n", commit)
	fmt.Fprintf(&b, "go %s\n", goVersion)
	return b.String()
}
