package kafkasettings

import (
	"slices"
	"testing"

	"github.com/outboxkit/outboxkit/broker"
)

// Check names each problem as the libraries' Config names it: under
// "Kafka.", or "Brokers" when the deprecated shorthand supplied the list.
func TestCheckNamesTheLibraryField(t *testing.T) {
	list := []string{"k:9092"}
	plain := broker.SASL{Mechanism: broker.PLAIN, Username: "u", Password: "p"}
	for _, tc := range []struct {
		name    string
		brokers []string
		kafka   broker.Config
		want    []string // Field of each problem
	}{
		{"Kafka.Brokers set", nil, broker.Config{Brokers: list}, nil},
		{"shorthand alone", list, broker.Config{}, nil},
		{"the same list twice", list, broker.Config{Brokers: list}, nil},
		{"nothing", nil, broker.Config{}, []string{"Kafka.Brokers"}},
		{"empty address in Kafka.Brokers", nil, broker.Config{Brokers: []string{""}}, []string{"Kafka.Brokers"}},
		{"empty address in the shorthand", []string{""}, broker.Config{}, []string{"Brokers"}},
		{"two lists", list, broker.Config{Brokers: []string{"other:9092"}}, []string{"Brokers"}},
		{"two lists and PLAIN without TLS", list, broker.Config{Brokers: []string{"other:9092"}, SASL: plain}, []string{"Brokers", "Kafka.SASL.Mechanism"}},
	} {
		var got []string
		for _, p := range Check(tc.brokers, Merge(tc.brokers, tc.kafka)) {
			got = append(got, p.Field)
			if p.Reason == "" {
				t.Errorf("%s: a problem of %s without a reason", tc.name, p.Field)
			}
			for _, r := range p.Related {
				if r != "Kafka.Brokers" && r != "Kafka.TLS" && r != "Kafka.AllowPlaintextSASL" {
					t.Errorf("%s: related field %q is not named as the Config names it", tc.name, r)
				}
			}
		}
		if !slices.Equal(got, tc.want) {
			t.Errorf("%s: problems of %v, want %v", tc.name, got, tc.want)
		}
	}
	if got := Merge(list, broker.Config{Brokers: []string{"other:9092"}}).Brokers; !slices.Equal(got, []string{"other:9092"}) {
		t.Errorf("Merge replaced Kafka.Brokers with the shorthand: %v", got)
	}
}
