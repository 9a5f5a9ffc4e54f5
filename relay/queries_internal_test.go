package relay

import (
	"io/fs"
	"strings"
	"testing"

	"github.com/outboxkit/outboxkit/migrations"
)

// TestShardExpressionIsTheColumns checks that the statements computing an
// aggregate's shard use the shard column's own expression: a statement
// with another one would look in the wrong shard.
func TestShardExpressionIsTheColumns(t *testing.T) {
	sql, err := fs.ReadFile(migrations.FS, "00001_outbox.sql")
	if err != nil {
		t.Fatal(err)
	}
	want := "GENERATED ALWAYS AS (" + shardOfPrefix + "aggregate_id" + shardOfSuffix + ") STORED"
	if !strings.Contains(string(sql), want) {
		t.Fatalf("migration 00001 does not define the shard column as %q", want)
	}
}
