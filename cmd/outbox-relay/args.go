package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"strings"

	"github.com/outboxkit/outboxkit/internal/buildinfo"
)

// parseArgs handles the command line, which configures nothing: -h (or
// help) prints the variables, -version, --version or version the version
// text. Anything else is a usage error, one line on stderr. It returns done
// and the exit code when the program should stop there.
func parseArgs(args []string, stdout, stderr io.Writer) (code int, done bool) {
	usageError := func(format string, a ...any) (int, bool) {
		fmt.Fprintf(stderr, "outbox-relay: "+format+" (run 'outbox-relay -h')\n", a...)
		return 2, true
	}
	fs := flag.NewFlagSet("outbox-relay", flag.ContinueOnError)
	fs.SetOutput(io.Discard) // errors are reported below, on one line
	version := fs.Bool("version", false, "print the module version and VCS commit, and exit")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			printUsage(stdout)
			return 0, true
		}
		if name, ok := strings.CutPrefix(err.Error(), "flag provided but not defined: "); ok {
			return usageError("unknown flag %s", name)
		}
		return usageError("%v", err)
	}
	rest := fs.Args()
	switch {
	case len(rest) == 1 && rest[0] == "version":
		*version = true
	case len(rest) == 1 && rest[0] == "help":
		printUsage(stdout)
		return 0, true
	case len(rest) > 0:
		return usageError("unexpected argument %q: configuration comes from the environment", rest[0])
	}
	if *version {
		fmt.Fprint(stdout, buildinfo.Text("outbox-relay"))
		return 0, true
	}
	return 0, false
}

// durationText is the loggers' ReplaceAttr: it prints time.Duration values
// as Go writes them ("1.5s", "250ms"), where the JSON handler would print
// nanoseconds.
func durationText(_ []string, a slog.Attr) slog.Attr {
	if a.Value.Kind() == slog.KindDuration {
		a.Value = slog.StringValue(a.Value.Duration().String())
	}
	return a
}
