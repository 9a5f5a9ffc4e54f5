package main

import (
	"context"
	"fmt"

	"github.com/outboxkit/outboxkit/internal/buildinfo"
)

func init() {
	register(&command{name: "version", summary: "print the module version and the VCS commit this binary was built from", run: runVersion})
}

func runVersion(_ context.Context, e *env, args []string) error {
	fs := newFlagSet(e, "outboxkit version", "", "Print the module version, the VCS commit and the Go version this binary was built with.")
	if err := noArgs(fs, args); err != nil {
		return err
	}
	fmt.Fprint(e.stdout, buildinfo.Text("outboxkit"))
	return nil
}
