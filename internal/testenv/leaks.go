package testenv

import (
	"fmt"
	"os"
	"testing"

	"github.com/segmentio/kafka-go"
	"go.uber.org/goleak"
)

// VerifyNoLeaks runs a package's tests and fails the run when goroutines
// other than the runtime's outlive them: a relay, consumer, pool or
// reader a test started and never stopped. TestMain calls it in place of
// os.Exit(m.Run()), after its own setup; cleanup (nil for none) runs after
// the tests and before the check.
func VerifyNoLeaks(m *testing.M, cleanup func()) {
	code := m.Run()
	if cleanup != nil {
		cleanup()
	}
	if code == 0 {
		// Tests that create topics or read them back use kafka-go's shared
		// Transport, whose pools outlive any one client by design; close
		// them, so that what remains is a leak.
		if t, ok := kafka.DefaultTransport.(*kafka.Transport); ok {
			t.CloseIdleConnections()
		}
		if err := goleak.Find(leakIgnores...); err != nil {
			fmt.Fprintf(os.Stderr, "testenv: goroutines outlived the tests (goleak):\n%v\n", err)
			code = 1
		}
	}
	os.Exit(code)
}

// leakIgnores are goroutines that live for the whole process by design.
var leakIgnores = []goleak.Option{}
