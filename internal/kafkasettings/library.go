package kafkasettings

import (
	"errors"
	"slices"

	"github.com/outboxkit/outboxkit/broker"
)

// Problem is one thing wrong with the Kafka part of the relay's or the
// inbox's Config, named as that Config names its fields: "Kafka.Brokers",
// "Kafka.SASL.Username", or "Brokers" for the deprecated shorthand. Each
// library wraps it in its own ConfigError.
type Problem struct {
	// Field is the Config field at fault.
	Field string
	// Reason says what is wrong, without the field name.
	Reason string
	// Related lists the other Config fields Reason names.
	Related []string
}

// Merge returns kafka with brokers, a Config's deprecated Brokers
// shorthand, as its Brokers when it has none.
func Merge(brokers []string, kafka broker.Config) broker.Config {
	if len(kafka.Brokers) == 0 {
		kafka.Brokers = brokers
	}
	return kafka
}

// Check returns the problems of a Config's Kafka part after [Merge]:
// brokers, the deprecated shorthand, set to another list than
// kafka.Brokers, and the first problem [broker.Config.Validate] finds in
// kafka, with its fields under "Kafka.". A problem with a list that came
// from the shorthand names the shorthand.
func Check(brokers []string, kafka broker.Config) []Problem {
	var ps []Problem
	if len(brokers) > 0 && !slices.Equal(brokers, kafka.Brokers) {
		ps = append(ps, Problem{Field: "Brokers", Reason: "and Kafka.Brokers are both set, to different lists (set Kafka.Brokers only)",
			Related: []string{"Kafka.Brokers"}})
	}
	var be *broker.ConfigError
	if err := kafka.Validate(); errors.As(err, &be) {
		p := Problem{Field: "Kafka." + be.Field, Reason: be.Reason}
		for _, r := range be.Related {
			p.Related = append(p.Related, "Kafka."+r)
		}
		if be.Field == "Brokers" && len(brokers) > 0 {
			p.Field = "Brokers"
		}
		ps = append(ps, p)
	} else if err != nil {
		// Validate returns only *broker.ConfigError; keep any other.
		ps = append(ps, Problem{Field: "Kafka", Reason: err.Error()})
	}
	return ps
}
