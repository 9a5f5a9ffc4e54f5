package main

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// result is one run of the CLI.
type result struct {
	code           int
	stdout, stderr string
}

// cli runs the CLI in-process with args and an environment holding only
// vars ("KEY=value").
func cli(t *testing.T, vars []string, args ...string) result {
	t.Helper()
	env := map[string]string{}
	for _, kv := range vars {
		k, v, _ := strings.Cut(kv, "=")
		env[k] = v
	}
	var stdout, stderr bytes.Buffer
	code := run(context.Background(), args, func(k string) string { return env[k] }, &stdout, &stderr)
	return result{code: code, stdout: stdout.String(), stderr: stderr.String()}
}

// must fails the test unless r exited 0.
func (r result) must(t *testing.T) result {
	t.Helper()
	if r.code != 0 {
		t.Fatalf("exit code %d, want 0\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
	}
	return r
}

func TestUsageErrors(t *testing.T) {
	t.Parallel()
	// A URL that would fail to connect: usage errors must come first.
	withDB := []string{"DATABASE_URL=postgres://u:secret@127.0.0.1:1/db"}
	tests := []struct {
		name    string
		env     []string
		args    []string
		wantErr string
	}{
		{"no command", nil, nil, "outboxkit: no command given"},
		{"unknown command", nil, []string{"frobnicate"}, `outboxkit: unknown command "frobnicate", want one of: deadletters, migrate, parked, status, version, wal (run 'outboxkit help')`},
		{"mistyped command", nil, []string{"migrat", "up"}, `outboxkit: unknown command "migrat", did you mean "migrate"? (run 'outboxkit help')`},
		{"command prefix", nil, []string{"dead"}, `did you mean "deadletters"?`},
		{"help on an unknown command", nil, []string{"help", "bogus"}, `outboxkit: unknown command "bogus"`},
		{"help on a mistyped command", nil, []string{"help", "stauts"}, `did you mean "status"?`},
		{"help on two commands", nil, []string{"help", "status", "wal"}, "help takes one command, got 2 arguments"},
		{"unknown global flag", nil, []string{"--verbose", "status"}, "outboxkit: unknown flag -verbose (run 'outboxkit help')"},
		{"mistyped subcommand", withDB, []string{"migrate", "upp"}, `outboxkit migrate: unknown subcommand "upp", did you mean "up"? (run 'outboxkit migrate --help')`},
		{"migrate without subcommand", withDB, []string{"migrate"}, "outboxkit migrate: no subcommand given (want up, down, status, adopt, export)"},
		{"migrate export without --dir", nil, []string{"migrate", "export"}, "--dir is required"},
		{"migrate export --version 0", nil, []string{"migrate", "export", "--dir", ".", "--version", "0"}, "--version must be at least 1"},
		{"migrate unknown subcommand", withDB, []string{"migrate", "sideways"}, `unknown subcommand "sideways"`},
		{"migrate down bad --to", withDB, []string{"migrate", "down", "--yes", "--to", "one"}, `want a version number >= 0, got "one"`},
		{"migrate down without --yes", withDB, []string{"migrate", "down", "--to", "0"}, "add --yes to confirm"},
		{"migrate up extra argument", withDB, []string{"migrate", "up", "now"}, `unexpected argument "now"`},
		{"status without database", nil, []string{"status"}, "outboxkit status: no database: set --database-url or DATABASE_URL"},
		{"status extra argument", withDB, []string{"status", "all"}, `unexpected argument "all"`},
		{"status unknown flag", withDB, []string{"status", "--yaml"}, "outboxkit status: unknown flag -yaml (run 'outboxkit status --help')"},
		{"parked without subcommand", withDB, []string{"parked"}, "no subcommand given (want list, retry, skip)"},
		{"parked retry one argument", withDB, []string{"parked", "retry", "order"}, "want 2 arguments, <aggregate_type> <aggregate_id>, got 1"},
		{"parked skip three arguments", withDB, []string{"parked", "skip", "--yes", "a", "b", "c"}, "want 2 arguments"},
		{"parked skip without --yes", withDB, []string{"parked", "skip", "order", "42"}, "deletes the failed event of order/42 without publishing it; add --yes"},
		{"bad database URL", []string{"DATABASE_URL=postgres://u:secret@h:port/db"}, []string{"status"}, "--database-url: cannot parse"},
		{"deadletters redrive no id", withDB, []string{"deadletters", "redrive"}, "want at least one dead-letter id"},
		{"deadletters redrive bad id", withDB, []string{"deadletters", "redrive", "--kafka-brokers", "k:9092", "x1"}, `dead-letter id "x1" is not a positive integer`},
		{"deadletters redrive no brokers", withDB, []string{"deadletters", "redrive", "1"}, "no Kafka brokers"},
		{"deadletters list bad limit", withDB, []string{"deadletters", "list", "--limit", "0"}, "--limit must be at least 1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r := cli(t, tt.env, tt.args...)
			if r.code != 2 {
				t.Fatalf("exit code %d, want 2\nstderr: %s", r.code, r.stderr)
			}
			if !strings.Contains(r.stderr, tt.wantErr) || !strings.Contains(r.stderr, " (run 'outboxkit ") || strings.Count(r.stderr, "\n") != 1 {
				t.Fatalf("stderr = %q, want one line containing %q and a pointer to the help", r.stderr, tt.wantErr)
			}
			if r.stdout != "" {
				t.Errorf("stdout = %q, want nothing on a usage error", r.stdout)
			}
			if strings.Contains(r.stderr, "secret") {
				t.Errorf("stderr leaks the password: %q", r.stderr)
			}
		})
	}
}

func TestHelp(t *testing.T) {
	t.Parallel()
	env := []string{"DATABASE_URL=postgres://u:secret@db/x"}
	tests := []struct {
		args []string
		want []string
	}{
		{[]string{"--help"}, []string{"Usage: outboxkit", "deadletters", "migrate", "parked", "status", "--database-url"}},
		{[]string{"help"}, []string{"Commands:"}},
		{[]string{"help", "status"}, []string{"Usage: outboxkit status [--json]"}},
		{[]string{"migrate", "--help"}, []string{"Usage: outboxkit migrate <up|down|status|adopt|export>"}},
		{[]string{"migrate", "down", "--help"}, []string{"-to VERSION", "Roll back the last applied migration"}},
		{[]string{"status", "-h"}, []string{"-json", "shards"}},
		{[]string{"parked", "list", "--help"}, []string{"Usage: outboxkit parked list [--json]"}},
		{[]string{"parked", "skip", "--help"}, []string{"-yes", "WITHOUT publishing"}},
		{[]string{"deadletters", "redrive", "--help"}, []string{"-kafka-brokers", "KAFKA_SASL_MECHANISM"}},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			t.Parallel()
			r := cli(t, env, tt.args...).must(t)
			for _, w := range tt.want {
				if !strings.Contains(r.stdout, w) {
					t.Errorf("help output lacks %q:\n%s", w, r.stdout)
				}
			}
			if strings.Contains(r.stdout, "secret") {
				t.Errorf("help shows the password from DATABASE_URL:\n%s", r.stdout)
			}
		})
	}
}

// TestBinaryExitCodes builds the real binary once, to check that main
// passes run's exit code on, and that it answers the version and usage
// mistakes as cmd/outbox-relay does.
func TestBinaryExitCodes(t *testing.T) {
	t.Parallel()
	bin := filepath.Join(t.TempDir(), "outboxkit")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	run := func(args ...string) (code int, stdout, stderr string) {
		var out, errOut bytes.Buffer
		cmd := exec.Command(bin, args...)
		cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
		cmd.Stdout, cmd.Stderr = &out, &errOut
		err := cmd.Run()
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		return code, out.String(), errOut.String()
	}
	for _, tt := range []struct {
		args   []string
		code   int
		stderr string // exactly, when set
	}{
		{[]string{"--help"}, 0, ""},
		{[]string{"nope"}, 2, "outboxkit: unknown command \"nope\", want one of: deadletters, migrate, parked, status, version, wal (run 'outboxkit help')\n"},
		{[]string{"migrat"}, 2, "outboxkit: unknown command \"migrat\", did you mean \"migrate\"? (run 'outboxkit help')\n"},
		{[]string{"help", "bogus"}, 2, "outboxkit: unknown command \"bogus\", want one of: deadletters, migrate, parked, status, version, wal (run 'outboxkit help')\n"},
		{[]string{"-x"}, 2, "outboxkit: unknown flag -x (run 'outboxkit help')\n"},
		{[]string{"status", "-x"}, 2, "outboxkit status: unknown flag -x (run 'outboxkit status --help')\n"},
		{[]string{"--database-url", "postgres://postgres:secret@127.0.0.1:1/x?connect_timeout=1", "status"}, 1,
			"outboxkit: cannot reach PostgreSQL at 127.0.0.1:1: connection refused (is PostgreSQL running at 127.0.0.1:1? check --database-url or DATABASE_URL)\n"},
	} {
		code, _, stderr := run(tt.args...)
		if code != tt.code || (tt.stderr != "" && stderr != tt.stderr) {
			t.Errorf("outboxkit %v: exit code %d, stderr %q; want %d and %q", tt.args, code, stderr, tt.code, tt.stderr)
		}
	}

	// The version, three ways, alike.
	var first string
	for _, arg := range []string{"version", "--version", "-version"} {
		code, stdout, stderr := run(arg)
		if code != 0 || stderr != "" || !strings.HasPrefix(stdout, "outboxkit ") || strings.Count(stdout, "\n") != 4 {
			t.Errorf("outboxkit %s: exit %d, stdout %q, stderr %q; want 0 and the four lines of the version", arg, code, stdout, stderr)
		}
		if first == "" {
			first = stdout
		} else if stdout != first {
			t.Errorf("outboxkit %s printed %q, version %q", arg, stdout, first)
		}
	}
}
