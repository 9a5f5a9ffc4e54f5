package migrations_test

import (
	"context"
	"database/sql"
	"fmt"
	"log"
	"os"

	_ "github.com/jackc/pgx/v5/stdlib"

	"github.com/outboxkit/outboxkit/migrations"
)

func ExampleUp() {
	// Up applies what DATABASE_URL's database lacks, and nothing twice.
	db, err := sql.Open("pgx", os.Getenv("DATABASE_URL"))
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
