package main

import (
	"encoding/json"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/outboxkit/outboxkit/broker"
	"github.com/outboxkit/outboxkit/inbox"
	"github.com/outboxkit/outboxkit/internal/kafkasettings"
	"github.com/outboxkit/outboxkit/internal/testenv"
)

func TestDeadLetters(t *testing.T) {
	t.Parallel()
	db := testenv.NewDB(t)
	topic := testenv.CreateTopic(t, "cli-dead", 1)
	env := []string{"DATABASE_URL=" + db.URL, "KAFKA_BROKERS=" + strings.Join(testenv.Brokers(t), ",")}
	id := insertDeadLetter(t, db, "shipping", "msg-1", topic, "order-9")
	id2 := insertDeadLetter(t, db, "billing", "msg-2", topic, "order-10")

	var list []deadLetterJSON
	r := cli(t, env, "deadletters", "list", "--group", "shipping", "--json").must(t)
	if err := json.Unmarshal([]byte(r.stdout), &list); err != nil {
		t.Fatalf("deadletters list --json: %v\n%s", err, r.stdout)
	}
	if len(list) != 1 || list[0].ID != id || list[0].Group != "shipping" || list[0].Key != "order-9" ||
		list[0].ValueBytes != 7 || list[0].Attempts != 5 || !hasHeader(list[0].Headers, "event_type", "E") || list[0].Offset != 17 {
		t.Fatalf("deadletters list --group shipping: %+v, want the one shipping dead letter", list)
	}
	if strings.Contains(r.stdout, `{"n":1}`) || strings.Contains(r.stdout, "eyJuIjoxfQ") {
		t.Errorf("deadletters list prints the message value:\n%s", r.stdout)
	}
	r = cli(t, env, "deadletters", "list").must(t)
	if !strings.Contains(r.stdout, "shipping") || !strings.Contains(r.stdout, "billing") || !strings.HasPrefix(r.stdout, "ID  ") {
		t.Errorf("deadletters list:\n%s\nwant a table with both groups", r.stdout)
	}

	// A broker out of reach: one line per dead letter saying so, with a
	// hint, and the dead letter stays.
	r = cli(t, []string{"DATABASE_URL=" + db.URL, "KAFKA_BROKERS=127.0.0.1:1"}, "deadletters", "redrive", strconv.FormatInt(id2, 10))
	if want := "dead letter " + strconv.FormatInt(id2, 10) + ": cannot reach Kafka at 127.0.0.1:1: connection refused " +
		"(is Kafka running at 127.0.0.1:1? check --kafka-brokers or KAFKA_BROKERS)\n" +
		"outboxkit: deadletters redrive: 1 of 1 dead letters not re-driven\n"; r.code != 1 || r.stderr != want {
		t.Errorf("redrive with the broker out of reach: exit %d, stderr %q; want 1 and %q", r.code, r.stderr, want)
	}

	r = cli(t, env, "deadletters", "redrive", strconv.FormatInt(id, 10)).must(t)
	if !strings.Contains(r.stdout, "re-drove dead letter "+strconv.FormatInt(id, 10)) {
		t.Errorf("redrive output %q", r.stdout)
	}
	msgs := testenv.ReadTopic(t, topic, 1, 20*time.Second)
	if len(msgs) != 1 || string(msgs[0].Key) != "order-9" || string(msgs[0].Value) != `{"n":1}` {
		t.Fatalf("topic after redrive: %d records (first %+v), want the dead letter's record", len(msgs), msgs)
	}
	if st := readStatus(t, env); st.DeadLetters == nil || *st.DeadLetters != 1 {
		t.Errorf("status dead letters after redriving one of two: %v, want 1", st.DeadLetters)
	}

	r = cli(t, env, "deadletters", "redrive", strconv.FormatInt(id, 10), "999999")
	if r.code != 1 || !strings.Contains(r.stderr, "already re-driven") || !strings.Contains(r.stderr, "not found") ||
		!strings.Contains(r.stderr, "2 of 2 dead letters not re-driven") {
		t.Errorf("redrive of a re-driven and a missing id: exit %d, stderr %q", r.code, r.stderr)
	}
}

func TestKafkaFromEnv(t *testing.T) {
	t.Parallel()
	env := func(kv ...string) func(string) string {
		return func(k string) string {
			for i := 0; i+1 < len(kv); i += 2 {
				if kv[i] == k {
					return kv[i+1]
				}
			}
			return ""
		}
	}
	brokers := []string{"k:9092"}
	cfg, err := kafkaFromEnv(env("KAFKA_SASL_MECHANISM", "scram-sha-512", "KAFKA_SASL_USERNAME", "u"), brokers)
	if err != nil || cfg.SASL.Mechanism != broker.SCRAMSHA512 || cfg.ClientID != "outboxkit-cli" || cfg.Brokers[0] != "k:9092" {
		t.Fatalf("kafkaFromEnv = %+v, %v; want SCRAM-SHA-512 as outboxkit-cli", cfg, err)
	}
	_, err = kafkaFromEnv(env("KAFKA_SASL_MECHANISM", "plain", "KAFKA_SASL_USERNAME", "u"), brokers)
	if err == nil || !strings.HasPrefix(err.Error(), "KAFKA_SASL_MECHANISM: ") || !strings.Contains(err.Error(), "KAFKA_SASL_ALLOW_PLAINTEXT") {
		t.Fatalf("PLAIN without TLS: got %v, want an error naming KAFKA_SASL_MECHANISM and KAFKA_SASL_ALLOW_PLAINTEXT", err)
	}
	cfg, err = kafkaFromEnv(env("KAFKA_SASL_MECHANISM", "plain", "KAFKA_SASL_USERNAME", "u", "KAFKA_SASL_ALLOW_PLAINTEXT", "true"), brokers)
	if err != nil || !cfg.AllowPlaintextSASL {
		t.Fatalf("PLAIN without TLS, allowed: %+v, %v", cfg, err)
	}
	_, err = kafkaFromEnv(env("KAFKA_TLS_CA_FILE", "/ca.pem"), brokers)
	if err == nil || err.Error() != "KAFKA_TLS_CA_FILE: is set but KAFKA_TLS is off" {
		t.Fatalf("CA file without TLS: got %v", err)
	}
}

// TestRedriveHelp: the help of deadletters redrive names every variable of
// kafkasettings.Vars, in lines as they were written by hand before.
func TestRedriveHelp(t *testing.T) {
	t.Parallel()
	got := redriveHelp()
	for _, v := range kafkasettings.Vars {
		if !strings.Contains(got, v.Name) {
			t.Errorf("deadletters redrive --help does not name %s:\n%s", v.Name, got)
		}
	}
	want := "Publish dead letters again to their original topic (acks=all), so their consumer group applies them\n" +
		"once more. Kafka TLS and SASL come from the relay's variables: KAFKA_TLS, KAFKA_TLS_CA_FILE,\n" +
		"KAFKA_TLS_CERT_FILE, KAFKA_TLS_KEY_FILE, KAFKA_TLS_INSECURE_SKIP_VERIFY, KAFKA_SASL_MECHANISM,\n" +
		"KAFKA_SASL_USERNAME, KAFKA_SASL_PASSWORD, KAFKA_SASL_ALLOW_PLAINTEXT, KAFKA_CLIENT_ID."
	if got != want {
		t.Errorf("deadletters redrive --help:\n%s\nwant:\n%s", got, want)
	}
}

func hasHeader(hs []headerJSON, key, value string) bool {
	for _, h := range hs {
		if h.Key == key && h.Value != nil && *h.Value == value {
			return true
		}
	}
	return false
}

func TestHeadersJSONKeepsBinaryValues(t *testing.T) {
	t.Parallel()
	got, err := json.Marshal(headersJSON([]inbox.Header{{Key: "tag", Value: []byte("a")}, {Key: "bin", Value: []byte{0xff, 0}}, {Key: "tag", Value: []byte("b")}}))
	if err != nil {
		t.Fatal(err)
	}
	want := `[{"key":"tag","value":"a"},{"key":"bin","value_base64":"/wA="},{"key":"tag","value":"b"}]`
	if string(got) != want {
		t.Errorf("headers JSON = %s, want %s", got, want)
	}
}
