// Package kafkaclient turns a [broker.Config] into the two kafka-go objects
// that need its settings: a [*kafka.Transport] for Writer and Client, and a
// [*kafka.Dialer] for Reader and ConsumerGroup. kafka-go configures these
// separately, and a setting applied to one but not the other is a classic
// way to get a producer that connects and a consumer that does not; building
// both from one Config rules that out. It keeps kafka-go's types out of the
// public packages.
package kafkaclient

import (
	"context"
	"errors"
	"net"
	"sync"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/sasl"
	"github.com/segmentio/kafka-go/sasl/plain"
	"github.com/segmentio/kafka-go/sasl/scram"

	"github.com/outboxkit/outboxkit/broker"
)

// ErrSCRAMCredentials is returned when the SCRAM client refuses the
// username or password. [broker.Config.Validate] refuses them first, so
// only a Config that skipped it gets this.
var ErrSCRAMCredentials = errors.New("the SCRAM client refused the SASL username or password (SASLprep, RFC 4013)")

// Mechanism returns the kafka-go SASL mechanism of c, or nil for none. c
// must have passed [broker.Config.Validate].
func Mechanism(c broker.Config) (sasl.Mechanism, error) {
	var algo scram.Algorithm
	switch c.SASL.Mechanism {
	case broker.PLAIN:
		return plain.Mechanism{Username: c.SASL.Username, Password: c.SASL.Password}, nil
	case broker.SCRAMSHA256:
		algo = scram.SHA256
	case broker.SCRAMSHA512:
		algo = scram.SHA512
	default:
		return nil, nil
	}
	m, err := scram.Mechanism(algo, c.SASL.Username, c.SASL.Password)
	if err != nil {
		// The SCRAM library's error quotes the password in full: it must
		// not reach a log, so none of its text is passed on.
		return nil, ErrSCRAMCredentials
	}
	return m, nil
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

// DialTimeout bounds a [Dialer]'s connection set-up (TCP, TLS and SASL).
const DialTimeout = 10 * time.Second

// ReadTimeout bounds every read on a [Dialer]'s connections that kafka-go
// left without a deadline: the answer to a metadata request, which a broker
// that is up gives in milliseconds. It matches kafka-go's default timeout
// for requests to a group coordinator.
const ReadTimeout = 5 * time.Second

// Dialer returns a Dialer with the same settings as [Transport]. No read on
// its connections waits longer than ReadTimeout unless kafka-go set a
// deadline of its own (see boundedConn).
func Dialer(c broker.Config, fallback string) (*kafka.Dialer, error) {
	mech, err := Mechanism(c)
	if err != nil {
		return nil, err
	}
	nd := &net.Dialer{}
	return &kafka.Dialer{
		Timeout: DialTimeout,
		DialFunc: func(ctx context.Context, network, address string) (net.Conn, error) {
			conn, err := nd.DialContext(ctx, network, address)
			if err != nil {
				return nil, err
			}
			return &boundedConn{Conn: conn, bound: ReadTimeout}, nil
		},
		ClientID:      clientID(c, fallback),
		TLS:           c.TLS,
		SASLMechanism: mech,
	}, nil
}

// boundedConn gives a read that has no deadline one of bound. kafka-go sets
// deadlines on the requests of a consumer group and on fetches, but not on
// the metadata and API-versions requests a partition reader sends to find
// its leader, and it waits for those under a context that never ends. A
// broker that is frozen (SIGSTOP, a hung VM) rather than dead accepts the
// connection and never answers, so without a bound the reader would wait
// for as long as the broker stays frozen, instead of asking the next
// bootstrap broker. A request is answered, or times out, within bound; a
// deadline kafka-go sets, longer or shorter, is left as it is.
type boundedConn struct {
	net.Conn
	bound time.Duration

	mu sync.Mutex
	// deadline is the read deadline kafka-go last set; zero for none.
	deadline time.Time
}

func (c *boundedConn) SetDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.deadline = t
	return c.Conn.SetDeadline(t)
}

func (c *boundedConn) SetReadDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.deadline = t
	return c.Conn.SetReadDeadline(t)
}

func (c *boundedConn) Read(b []byte) (int, error) {
	c.mu.Lock()
	if c.deadline.IsZero() {
		// Under the lock, so that a deadline set meanwhile is not lost.
		if err := c.Conn.SetReadDeadline(time.Now().Add(c.bound)); err != nil {
			c.mu.Unlock()
			return 0, err
		}
	}
	c.mu.Unlock()
	return c.Conn.Read(b)
}
