package outbox_test

import (
	"context"
	"os"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/outboxkit/outboxkit/internal/testenv"
	"github.com/outboxkit/outboxkit/outbox"
)

// readmeRecipe returns the statements of the README's "Who can emit" SQL
// block, so that the test runs what operators are told to run.
func readmeRecipe(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	i := strings.Index(s, "**Who can emit:**")
	if i < 0 {
		t.Fatal(`README.md has no "Who can emit" section`)
	}
	s = s[i:]
	start := strings.Index(s, "```sql\n")
	end := strings.Index(s[start+7:], "```")
	if start < 0 || end < 0 {
		t.Fatal(`README.md's "Who can emit" section has no SQL block`)
	}
	var stmts []string
	var cur strings.Builder
	for _, line := range strings.Split(s[start+7:start+7+end], "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "--") {
			continue
		}
		cur.WriteString(line + " ")
		if strings.HasSuffix(line, ";") {
			stmts = append(stmts, strings.TrimSpace(cur.String()))
			cur.Reset()
		}
	}
	if len(stmts) < 5 {
		t.Fatalf("README recipe has %d statements: %q", len(stmts), stmts)
	}
	return stmts
}

// TestEmitRecipeResistsPlantedFunctions follows the README's "Who can
// emit" recipe in a database where a hostile role has CREATE on public,
// where the outboxkit functions live. It plants functions that shadow the
// built-ins the SECURITY DEFINER functions call: one with
// pg_logical_emit_message's exact signature, and a convert_to(text, text)
// that fits outbox_wal_encode's convert_to(topic, 'UTF8') better than the
// built-in convert_to(text, name). Each records that it ran, which would be
// code run as the functions' owner. A writer then emits through
// outbox_emit and outbox.Emit: the planted functions must never run, and
// the real messages must reach the slot.
//
// Two controls show that the test sees the attack: the earlier recipe,
// search_path = public, pg_catalog, runs both planted functions, and
// pg_catalog, public, pg_temp still runs the better-fitting convert_to.
func TestEmitRecipeResistsPlantedFunctions(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name       string
		recipe     func([]string) []string
		wantPlants bool
	}{
		{name: "README recipe", recipe: func(s []string) []string { return s }},
		{name: "earlier recipe, public first", wantPlants: true, recipe: withPath("public, pg_catalog")},
		{name: "pg_catalog first, public after", wantPlants: true, recipe: withPath("pg_catalog, public, pg_temp")},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			db := testenv.NewLogicalDB(t)
			db.CreateSlot(t)
			ctx := context.Background()
			suffix := strings.ToLower(db.Slot[len(db.Slot)-8:])
			writer, attacker := "okt_writer_"+suffix, "okt_attacker_"+suffix
			setup := []string{
				"CREATE ROLE " + writer + " LOGIN PASSWORD 'w'",
				"CREATE ROLE " + attacker + " LOGIN PASSWORD 'a'",
			}
			for _, q := range tt.recipe(readmeRecipe(t)) {
				setup = append(setup, strings.ReplaceAll(q, "orders_writer", writer))
			}
			// After the recipe, which revokes CREATE from PUBLIC: the
			// attacker holds it in its own right, as a role an operator
			// trusted with it would.
			setup = append(setup, "GRANT CREATE ON SCHEMA public TO "+attacker)
			for _, q := range setup {
				if _, err := db.Pool.Exec(ctx, q); err != nil {
					t.Fatalf("%s: %v", q, err)
				}
			}
			t.Cleanup(func() {
				for _, r := range []string{writer, attacker} {
					_, _ = db.Pool.Exec(context.Background(), "DROP OWNED BY "+r)
					_, _ = db.Pool.Exec(context.Background(), "DROP ROLE "+r)
				}
			})

			connect := func(user, pw string) *pgx.Conn {
				cfg, err := pgx.ParseConfig(db.URL)
				if err != nil {
					t.Fatal(err)
				}
				cfg.User, cfg.Password = user, pw
				conn, err := pgx.ConnectConfig(ctx, cfg)
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { conn.Close(context.Background()) })
				return conn
			}
			att := connect(attacker, "a")
			for _, q := range []string{
				"CREATE TABLE public.planted_calls (fn text NOT NULL, by_role text NOT NULL)",
				"GRANT INSERT ON public.planted_calls TO PUBLIC",
				`CREATE FUNCTION public.pg_logical_emit_message(transactional boolean, prefix text, message bytea) RETURNS pg_lsn
				 LANGUAGE sql AS $$ INSERT INTO public.planted_calls VALUES ('pg_logical_emit_message', current_user) RETURNING '0/0'::pg_lsn $$`,
				`CREATE FUNCTION public.convert_to(s text, enc text) RETURNS bytea
				 LANGUAGE sql AS $$ INSERT INTO public.planted_calls VALUES ('convert_to', current_user) RETURNING pg_catalog.convert_to(s, enc::name) $$`,
			} {
				if _, err := att.Exec(ctx, q); err != nil {
					t.Fatalf("attacker: %s: %v", q, err)
				}
			}

			w := connect(writer, "w")
			if _, err := w.Exec(ctx, "SELECT outbox_emit('orders', 'order', '1', 'Placed', 'x'::bytea, '{\"tenant\": \"acme\"}')"); err != nil {
				t.Fatalf("writer: outbox_emit: %v", err)
			}
			e := outbox.Event{Topic: "orders", AggregateType: "order", AggregateID: "2", EventType: "Placed", Payload: []byte("y")}
			if err := pgx.BeginFunc(ctx, w, func(tx pgx.Tx) error { return outbox.Emit(ctx, tx, e) }); err != nil {
				t.Fatalf("writer: outbox.Emit: %v", err)
			}

			var calls []string
			rows, err := db.Pool.Query(ctx, "SELECT fn || ' as ' || by_role FROM public.planted_calls ORDER BY 1")
			if err != nil {
				t.Fatal(err)
			}
			for rows.Next() {
				var c string
				if err := rows.Scan(&c); err != nil {
					t.Fatal(err)
				}
				calls = append(calls, c)
			}
			if err := rows.Err(); err != nil {
				t.Fatal(err)
			}
			if tt.wantPlants {
				if len(calls) == 0 {
					t.Fatal("control: the earlier recipe ran no planted function; the test cannot see the attack")
				}
				t.Logf("control: %s ran %v", tt.name, calls)
				return
			}
			if len(calls) > 0 {
				t.Errorf("planted functions ran inside the SECURITY DEFINER functions: %v", calls)
			}
			var n int
			if err := db.Pool.QueryRow(ctx, `SELECT count(*) FROM pg_logical_slot_peek_binary_changes($1, NULL, NULL,
				'proto_version', '2', 'publication_names', 'outboxkit', 'messages', 'true') WHERE get_byte(data, 0) = 77`, db.Slot).Scan(&n); err != nil || n != 2 {
				t.Fatalf("%d messages in the slot (%v), want 2: the real pg_logical_emit_message emitted both events", n, err)
			}
		})
	}
}

// withPath returns the README recipe with the functions' search_path set to
// path instead, and without its REVOKE CREATE (the controls' attacker is
// granted CREATE anyway).
func withPath(path string) func([]string) []string {
	return func(stmts []string) []string {
		var out []string
		for _, q := range stmts {
			if strings.HasPrefix(q, "REVOKE CREATE ON SCHEMA public") {
				continue
			}
			out = append(out, strings.ReplaceAll(q, "search_path = pg_catalog, pg_temp", "search_path = "+path))
		}
		return out
	}
}
