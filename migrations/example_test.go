package migrations_test

import (
	"context"
	"database/sql"
	"fmt"
	"log"
	"os"
	"testing"

	_ "github.com/jackc/pgx/v5/stdlib"
	"github.com/outboxkit/outboxkit/internal/testenv"
	"github.com/outboxkit/outboxkit/migrations"
)

// exampleDatabaseURL points the examples at a fresh database; a program would
// use its own DATABASE_URL.
var exampleDatabaseURL string

func TestMain(m *testing.M) {
	var cleanup func()
	exampleDatabaseURL, cleanup = testenv.EmptyDBForMain()
	code := m.Run()
	cleanup()
	os.Exit(code)
}

func ExampleUp() {
	db, err := sql.Open("pgx", exampleDatabaseURL)
	if err != nil {
		log.Fatal(err)
	}
	defer db.Close()
	if err := migrations.Up(context.Background(), db); err != nil {
		log.Fatal(err)
	}
	var n int
	if err := db.QueryRow(`SELECT count(*) FROM outbox`).Scan(&n); err != nil {
		log.Fatal(err)
	}
	fmt.Println("outbox rows:", n)
	// Output: outbox rows: 0
}
