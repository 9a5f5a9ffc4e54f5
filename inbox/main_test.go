package inbox_test

import (
	"testing"

	"github.com/outboxkit/outboxkit/internal/testenv"
)

// TestMain gives the examples, which use only the public API, a migrated
// database in DATABASE_URL and the test run's brokers in KAFKA_BROKERS, as
// a service would have.
func TestMain(m *testing.M) {
	// A quiet-fault subprocess in a network namespace reaches the services
	// only through its forwarders, which must run before anything connects.
	if err := testenv.StartForwards(); err != nil {
		panic(err)
	}
	cleanup := testenv.ForExamples(true)
	testenv.VerifyNoLeaks(m, cleanup)
}
