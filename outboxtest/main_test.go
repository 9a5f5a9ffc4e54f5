package outboxtest_test

import (
	"testing"

	"github.com/outboxkit/outboxkit/internal/testenv"
)

// TestMain gives the examples, which use only the public API, a migrated
// database in DATABASE_URL, as a service's tests would have.
func TestMain(m *testing.M) {
	cleanup := testenv.ForExamples(false)
	testenv.VerifyNoLeaks(m, cleanup)
}
