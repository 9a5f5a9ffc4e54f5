package main

import (
	"testing"

	"github.com/outboxkit/outboxkit/internal/testenv"
)

// TestMain fails the run when goroutines outlive the tests: the CLI runs
// in-process here, so a pool, client or reader a command leaves behind
// shows up.
func TestMain(m *testing.M) { testenv.VerifyNoLeaks(m, nil) }
