// Package kafkaclient turns a [broker.Config] into the two kafka-go objects
// that need its settings: a [*kafka.Transport] for Writer and Client, and a
// [*kafka.Dialer] for Reader and ConsumerGroup. kafka-go configures these
// separately, and a setting applied to one but not the other is a classic
// way to get a producer that connects and a consumer that does not; building
// both from one Config rules that out. It keeps kafka-go's types out of the
// public packages.
package kafkaclient

import (
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/sasl"
	"github.com/segmentio/kafka-go/sasl/plain"
	"github.com/segmentio/kafka-go/sasl/scram"

	"github.com/outboxkit/outboxkit/broker"
)

// Mechanism returns the kafka-go SASL mechanism of c, or nil for none. c
// must have passed [broker.Config.Validate].
func Mechanism(c broker.Config) (sasl.Mechanism, error) {
	switch c.SASL.Mechanism {
	case broker.PLAIN:
		return plain.Mechanism{Username: c.SASL.Username, Password: c.SASL.Password}, nil
	case broker.SCRAMSHA256:
		return scram.Mechanism(scram.SHA256, c.SASL.Username, c.SASL.Password)
	case broker.SCRAMSHA512:
		return scram.Mechanism(scram.SHA512, c.SASL.Username, c.SASL.Password)
	}
	return nil, nil
}

func clientID(c broker.Config, fallback string) string {
	if c.ClientID == "" {
		return fallback
	}
	return c.ClientID
}

// Transport returns a Transport with c's TLS, SASL and client ID (fallback
// when c has none). c must have passed [broker.Config.Validate].
func Transport(c broker.Config, fallback string) (*kafka.Transport, error) {
	mech, err := Mechanism(c)
	if err != nil {
		return nil, err
	}
	return &kafka.Transport{
		DialTimeout: 5 * time.Second,
		IdleTimeout: 30 * time.Second,
		ClientID:    clientID(c, fallback),
		TLS:         c.TLS,
		SASL:        mech,
	}, nil
}

// Dialer returns a Dialer with the same settings as [Transport].
func Dialer(c broker.Config, fallback string) (*kafka.Dialer, error) {
	mech, err := Mechanism(c)
	if err != nil {
		return nil, err
	}
	return &kafka.Dialer{
		Timeout:       10 * time.Second,
		DualStack:     true,
		ClientID:      clientID(c, fallback),
		TLS:           c.TLS,
		SASLMechanism: mech,
	}, nil
}
