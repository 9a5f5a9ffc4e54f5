// Command outboxkit operates an outboxkit database: it applies the
// migrations, shows the state of the outbox and the relays, and lists,
// retries or skips parked aggregates and dead letters. `outboxkit version`
// (or --version, -version) prints the module version and the VCS commit it
// was built from.
//
//	outboxkit [--database-url URL] <command> [flags] [args]
//
// Exit codes: 0 on success, 1 on a runtime error, 2 on a usage error (one
// line on stderr, with a "did you mean" for a mistyped command). Run
// `outboxkit help` or `outboxkit <command> --help` for details.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"

	"github.com/outboxkit/outboxkit/internal/suggest"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	code := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// command is one top-level subcommand. To add one, write a file that
// declares a *command and calls register from an init function; nothing
// else needs to change (deadletters.go is an example).
type command struct {
	name    string
	summary string // one line for the command list
	// run executes the command with the arguments after its name.
	run func(ctx context.Context, e *env, args []string) error
}

var commands = map[string]*command{}

func register(c *command) {
	if _, dup := commands[c.name]; dup {
		panic("outboxkit: command registered twice: " + c.name)
	}
	commands[c.name] = c
}

// env is what a command runs with: output streams, the environment, and
// the global flags.
type env struct {
	stdout, stderr io.Writer
	getenv         func(string) string
	databaseURL    string
}

// usageError is a mistake in the command line: the program prints it on
// one line with a pointer to the help and exits 2.
type usageError struct {
	cmd string // "outboxkit parked skip"
	msg string
}

// helpHint is how to get help on cmd, for the end of a usage error.
func helpHint(cmd string) string {
	if cmd == "outboxkit" {
		return "outboxkit help"
	}
	return cmd + " --help"
}

func (e *usageError) Error() string { return e.msg }

func usagef(cmd, format string, args ...any) error {
	return &usageError{cmd: cmd, msg: fmt.Sprintf(format, args...)}
}

// errHelpShown means --help was asked for and printed: exit 0.
var errHelpShown = errors.New("help shown")

// run is the whole program; it returns the exit code.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	e := &env{stdout: stdout, stderr: stderr, getenv: getenv}
	err := dispatch(ctx, e, args)
	var ue *usageError
	switch {
	case err == nil, errors.Is(err, errHelpShown):
		return 0
	case errors.As(err, &ue):
		fmt.Fprintf(stderr, "%s: %s (run '%s')\n", ue.cmd, printable(ue.msg), helpHint(ue.cmd))
		return 2
	default:
		// Errors carry server and broker texts, and names an operator typed:
		// print them escaped, on one line.
		fmt.Fprintf(stderr, "outboxkit: %s\n", printable(err.Error()))
		return 1
	}
}

func dispatch(ctx context.Context, e *env, args []string) error {
	fs := newFlagSet(e, "outboxkit", "[--database-url URL] <command> [flags] [args]", globalHelp())
	version := fs.Bool("version", false, "print the module version and VCS commit, and exit (as the version command)")
	if _, err := parseFlags(fs, args, true); err != nil {
		return err
	}
	rest := fs.Args()
	if *version {
		return commands["version"].run(ctx, e, rest)
	}
	if len(rest) == 0 {
		return usagef("outboxkit", "no command given")
	}
	name := rest[0]
	if name == "help" {
		switch len(rest) {
		case 1:
			fmt.Fprint(e.stdout, usageText(fs))
			return errHelpShown
		case 2:
			c, err := lookup("outboxkit", "command", rest[1], commands, commandNames())
			if err != nil {
				return err
			}
			return c.run(ctx, e, []string{"--help"})
		default:
			return usagef("outboxkit", "help takes one command, got %d arguments", len(rest)-1)
		}
	}
	c, err := lookup("outboxkit", "command", name, commands, commandNames())
	if err != nil {
		return err
	}
	return c.run(ctx, e, rest[1:])
}

// lookup returns the entry of m named name, or a usage error of cmd saying
// that no kind of that name exists, with a guess among names (m's keys, in
// the order to list them) at what was meant.
func lookup[T any](cmd, kind, name string, m map[string]T, names []string) (T, error) {
	if v, ok := m[name]; ok {
		return v, nil
	}
	var zero T
	if guess := suggest.Closest(name, names, 2); guess != "" {
		return zero, usagef(cmd, "unknown %s %q, did you mean %q?", kind, name, guess)
	}
	return zero, usagef(cmd, "unknown %s %q, want one of: %s", kind, name, strings.Join(names, ", "))
}

func commandNames() []string {
	names := make([]string, 0, len(commands))
	for n := range commands {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

func globalHelp() string {
	var b strings.Builder
	b.WriteString("Operate an outboxkit database: migrations, outbox status, parked aggregates, dead letters.\n\nCommands:\n")
	for _, n := range commandNames() {
		fmt.Fprintf(&b, "  %-12s %s\n", n, commands[n].summary)
	}
	b.WriteString("\nRun 'outboxkit <command> --help' for a command's flags.\nExit codes: 0 ok, 1 runtime error, 2 usage error.\n")
	return b.String()
}

// flagSet is a flag.FlagSet that knows its usage line and description.
type flagSet struct {
	*flag.FlagSet
	e           *env
	synopsis    string
	description string
}

// newFlagSet returns a flag set named cmd ("outboxkit parked list") that
// prints nothing by itself: run reports errors, and --help prints
// usageText to stdout. Every flag set accepts --database-url, so the flag
// may come before or after the command name.
func newFlagSet(e *env, cmd, synopsis, description string) *flagSet {
	fs := &flagSet{FlagSet: flag.NewFlagSet(cmd, flag.ContinueOnError), e: e, synopsis: synopsis, description: description}
	fs.SetOutput(io.Discard)
	if e.databaseURL == "" {
		e.databaseURL = e.getenv("DATABASE_URL")
	}
	fs.Var((*secretString)(&e.databaseURL), "database-url", "PostgreSQL `URL` (default $DATABASE_URL)")
	return fs
}

// secretString is a string flag whose value never shows in --help, since a
// database URL may hold a password.
type secretString string

func (s *secretString) String() string { return "" }

func (s *secretString) Set(v string) error { *s = secretString(v); return nil }

func usageText(fs *flagSet) string {
	var b strings.Builder
	fmt.Fprintf(&b, "Usage: %s %s\n\n%s", fs.Name(), fs.synopsis, fs.description)
	if !strings.HasSuffix(fs.description, "\n") {
		b.WriteString("\n")
	}
	b.WriteString("\nFlags:\n")
	fs.SetOutput(&b)
	fs.PrintDefaults()
	fs.SetOutput(io.Discard)
	return b.String()
}

// parseFlags parses args, allowing flags after positional arguments
// ("parked skip order 42 --yes"); "--" ends the flags. With stopAtFirst it
// stops at the first positional argument instead (the global flags stop at
// the command name), leaving the rest in fs.Args(). It returns the
// positional arguments.
func parseFlags(fs *flagSet, args []string, stopAtFirst bool) ([]string, error) {
	var positional []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				fmt.Fprint(fs.e.stdout, usageText(fs))
				return nil, errHelpShown
			}
			if name, ok := strings.CutPrefix(err.Error(), "flag provided but not defined: "); ok {
				return nil, usagef(fs.Name(), "unknown flag %s", name)
			}
			return nil, usagef(fs.Name(), "%v", err)
		}
		args = fs.Args()
		if stopAtFirst || len(args) == 0 {
			return append(positional, args...), nil
		}
		if len(args) > 0 && args[0] == "--" {
			return append(positional, args[1:]...), nil
		}
		positional = append(positional, args[0])
		args = args[1:]
		if len(args) > 0 && args[0] == "--" {
			return append(positional, args[1:]...), nil
		}
	}
}

// subcommands dispatches "<cmd> <sub> ..." to one of subs.
func subcommands(ctx context.Context, e *env, cmd, summary string, args []string, subs map[string]func(context.Context, *env, []string) error, order []string) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "-help" || args[0] == "help" {
		if len(args) == 0 {
			return usagef(cmd, "no subcommand given (want %s)", strings.Join(order, ", "))
		}
		fmt.Fprintf(e.stdout, "Usage: %s <%s> [flags] [args]\n\n%s\n\nRun '%s <subcommand> --help' for its flags.\n", cmd, strings.Join(order, "|"), summary, cmd)
		return errHelpShown
	}
	sub, err := lookup(cmd, "subcommand", args[0], subs, order)
	if err != nil {
		return err
	}
	return sub(ctx, e, args[1:])
}
