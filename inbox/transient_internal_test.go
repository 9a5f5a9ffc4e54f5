package inbox

import (
	"errors"
	"fmt"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"
)

// The classifier takes any *pgconn.PgError, including one without a
// SQLSTATE (built by a proxy or a wrapper rather than sent by a server),
// without panicking.
func TestTransientDBErrorCodes(t *testing.T) {
	for _, c := range []struct {
		code string
		want bool
	}{
		{"", false}, {"0", false}, {"08006", true}, {"53300", true}, {"40P01", true}, {"23505", false}, {"42P01", false},
	} {
		err := fmt.Errorf("wrapped: %w", &pgconn.PgError{Code: c.code})
		if got := transientDBError(err); got != c.want {
			t.Errorf("transientDBError(code %q) = %v, want %v", c.code, got, c.want)
		}
	}
	if transientDBError(errors.New("plain")) {
		t.Error("a plain error counted as transient")
	}
}
