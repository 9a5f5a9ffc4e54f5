package kafkaconfig

import (
	"context"
	"crypto/hmac"
	"crypto/pbkdf2"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"hash"
	"strconv"
	"strings"

	"github.com/segmentio/kafka-go/sasl"
)

// scram is the SCRAM-SHA-256/512 client of RFC 5802 and RFC 7677, built on
// the standard library. kafka-go's sasl/scram package would do the same but
// pulls in github.com/xdg-go/scram, which the module does not depend on.
//
// Like Kafka's own clients, it sends the password as UTF-8 without SASLprep
// normalization: Kafka's server does not normalize either, so a normalizing
// client would fail for passwords that SASLprep changes.
type scram struct {
	name     string
	hash     func() hash.Hash
	username string
	password string
	// nonce returns the client nonce; tests fix it to replay RFC vectors.
	nonce func() (string, error)
}

// Kafka's minimum and a generous maximum: a server demanding more rounds
// could stall the client for minutes.
const (
	scramMinIterations = 4096
	scramMaxIterations = 1 << 20
)

// errSCRAM marks SCRAM exchange failures.
var errSCRAM = errors.New("kafkaconfig: SCRAM authentication")

func newSCRAM(name string, h func() hash.Hash, username, password string) *scram {
	return &scram{name: name, hash: h, username: username, password: password, nonce: randomNonce}
}

func randomNonce() (string, error) {
	b := make([]byte, 24)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return base64.RawStdEncoding.EncodeToString(b), nil
}

// scramEscaper escapes a username for the n= attribute (RFC 5802 5.1).
var scramEscaper = strings.NewReplacer("=", "=3D", ",", "=2C")

func (m *scram) Name() string { return m.name }

// Start sends client-first-message: no channel binding, no authzid.
func (m *scram) Start(context.Context) (sasl.StateMachine, []byte, error) {
	nonce, err := m.nonce()
	if err != nil {
		return nil, nil, fmt.Errorf("%w: nonce: %v", errSCRAM, err)
	}
	bare := "n=" + scramEscaper.Replace(m.username) + ",r=" + nonce
	return &scramSession{m: m, nonce: nonce, clientFirstBare: bare}, []byte("n,," + bare), nil
}

// scramSession is one authentication exchange; kafka-go makes one per
// connection.
type scramSession struct {
	m               *scram
	nonce           string
	clientFirstBare string
	serverSignature []byte
	step            int
}

func (s *scramSession) Next(_ context.Context, challenge []byte) (bool, []byte, error) {
	switch s.step {
	case 0:
		s.step++
		resp, err := s.clientFinal(string(challenge))
		return false, resp, err
	case 1:
		s.step++
		return true, nil, s.verifyServerFinal(string(challenge))
	}
	return false, nil, fmt.Errorf("%w: unexpected extra challenge", errSCRAM)
}

// attrs splits a SCRAM message into its attributes.
func attrs(msg string) map[byte]string {
	out := map[byte]string{}
	for _, part := range strings.Split(msg, ",") {
		if len(part) >= 2 && part[1] == '=' {
			if _, dup := out[part[0]]; !dup {
				out[part[0]] = part[2:]
			}
		}
	}
	return out
}

func (s *scramSession) clientFinal(serverFirst string) ([]byte, error) {
	a := attrs(serverFirst)
	if e, ok := a['e']; ok {
		return nil, fmt.Errorf("%w: server refused: %s", errSCRAM, e)
	}
	if _, ok := a['m']; ok {
		return nil, fmt.Errorf("%w: server requires an unsupported extension", errSCRAM)
	}
	nonce := a['r']
	if !strings.HasPrefix(nonce, s.nonce) || len(nonce) == len(s.nonce) {
		return nil, fmt.Errorf("%w: server nonce does not extend the client nonce", errSCRAM)
	}
	salt, err := base64.StdEncoding.DecodeString(a['s'])
	if err != nil || len(salt) == 0 {
		return nil, fmt.Errorf("%w: bad salt in server-first-message", errSCRAM)
	}
	iters, err := strconv.Atoi(a['i'])
	if err != nil || iters < scramMinIterations || iters > scramMaxIterations {
		return nil, fmt.Errorf("%w: iteration count %q outside [%d, %d]", errSCRAM, a['i'], scramMinIterations, scramMaxIterations)
	}

	h := s.m.hash
	salted, err := pbkdf2.Key(h, s.m.password, salt, iters, h().Size())
	if err != nil {
		return nil, fmt.Errorf("%w: %v", errSCRAM, err)
	}
	clientKey := hmacSum(h, salted, "Client Key")
	storedKey := h()
	storedKey.Write(clientKey)
	withoutProof := "c=biws,r=" + nonce // biws = base64("n,,")
	authMessage := s.clientFirstBare + "," + serverFirst + "," + withoutProof
	clientSig := hmacSum(h, storedKey.Sum(nil), authMessage)
	proof := make([]byte, len(clientKey))
	for i := range proof {
		proof[i] = clientKey[i] ^ clientSig[i]
	}
	s.serverSignature = hmacSum(h, hmacSum(h, salted, "Server Key"), authMessage)
	return []byte(withoutProof + ",p=" + base64.StdEncoding.EncodeToString(proof)), nil
}

func (s *scramSession) verifyServerFinal(serverFinal string) error {
	a := attrs(serverFinal)
	if e, ok := a['e']; ok {
		return fmt.Errorf("%w: server refused: %s", errSCRAM, e)
	}
	v, err := base64.StdEncoding.DecodeString(a['v'])
	if err != nil || !hmac.Equal(v, s.serverSignature) {
		return fmt.Errorf("%w: server signature does not match (the broker does not know the password)", errSCRAM)
	}
	return nil
}

func hmacSum(h func() hash.Hash, key []byte, msg string) []byte {
	mac := hmac.New(h, key)
	mac.Write([]byte(msg))
	return mac.Sum(nil)
}
