package kafkasettings

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"io/fs"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/outboxkit/outboxkit/broker"
	"github.com/outboxkit/outboxkit/internal/kafkaclient"
)

// pki is a throwaway CA with a server and a client certificate, as PEM files
// in a test's temporary directory.
type pki struct {
	dir                   string
	caFile                string
	serverCert, serverKey string
	clientCert, clientKey string
	pool                  *x509.CertPool
	server                tls.Certificate
}

func newPKI(t *testing.T) *pki {
	t.Helper()
	dir := t.TempDir()
	p := &pki{dir: dir, pool: x509.NewCertPool()}

	caKey := newKey(t)
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "outboxkit test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		KeyUsage:              x509.KeyUsageCertSign,
		BasicConstraintsValid: true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, err := x509.ParseCertificate(caDER)
	if err != nil {
		t.Fatal(err)
	}
	p.pool.AddCert(caCert)
	p.caFile = writePEM(t, dir, "ca.pem", "CERTIFICATE", caDER)

	leaf := func(name string, serial int64, usage x509.ExtKeyUsage) (certFile, keyFile string, pair tls.Certificate) {
		key := newKey(t)
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(serial),
			Subject:      pkix.Name{CommonName: name},
			NotBefore:    time.Now().Add(-time.Hour),
			NotAfter:     time.Now().Add(time.Hour),
			KeyUsage:     x509.KeyUsageDigitalSignature,
			ExtKeyUsage:  []x509.ExtKeyUsage{usage},
			IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
			DNSNames:     []string{"localhost"},
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		keyDER, err := x509.MarshalECPrivateKey(key)
		if err != nil {
			t.Fatal(err)
		}
		certFile = writePEM(t, dir, name+".pem", "CERTIFICATE", der)
		keyFile = writePEM(t, dir, name+"-key.pem", "EC PRIVATE KEY", keyDER)
		pair, err = tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			t.Fatal(err)
		}
		return certFile, keyFile, pair
	}
	p.serverCert, p.serverKey, p.server = leaf("server", 2, x509.ExtKeyUsageServerAuth)
	p.clientCert, p.clientKey, _ = leaf("client", 3, x509.ExtKeyUsageClientAuth)
	return p
}

func newKey(t *testing.T) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func writePEM(t *testing.T, dir, name, typ string, der []byte) string {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestConfigChecks(t *testing.T) {
	t.Parallel()
	brokers := []string{"k:9092"}
	tests := []struct {
		name      string
		s         Settings
		wantField string // empty: valid
		wantMsg   string
	}{
		{name: "zero value is plaintext", s: Settings{}},
		{name: "TLS with system roots", s: Settings{TLS: true}},
		{name: "SASL plain over TLS", s: Settings{TLS: true, SASLMechanism: "plain", Username: "u", Password: "p"}},
		{name: "SASL plain without TLS, allowed", s: Settings{SASLMechanism: "plain", Username: "u", AllowPlaintextSASL: true}},
		{name: "SCRAM without TLS", s: Settings{SASLMechanism: "scram-sha-256", Username: "u"}},
		{name: "mechanism in Kafka's spelling", s: Settings{SASLMechanism: "SCRAM-SHA-512", Username: "u"}},
		{name: "SASL plain without TLS", s: Settings{SASLMechanism: "plain", Username: "u"}, wantField: "SASLMechanism", wantMsg: "set AllowPlaintextSASL"},
		{name: "CA file without TLS", s: Settings{CAFile: "ca.pem"}, wantField: "CAFile", wantMsg: "TLS is off"},
		{name: "cert file without TLS", s: Settings{CertFile: "c.pem", KeyFile: "k.pem"}, wantField: "CertFile", wantMsg: "TLS is off"},
		{name: "key file without TLS", s: Settings{KeyFile: "k.pem"}, wantField: "KeyFile", wantMsg: "TLS is off"},
		{name: "skip verify without TLS", s: Settings{InsecureSkipVerify: true}, wantField: "InsecureSkipVerify", wantMsg: "TLS is off"},
		{name: "cert without key", s: Settings{TLS: true, CertFile: "c.pem"}, wantField: "KeyFile", wantMsg: "CertFile is set"},
		{name: "key without cert", s: Settings{TLS: true, KeyFile: "k.pem"}, wantField: "CertFile", wantMsg: "KeyFile is set"},
		{name: "unknown mechanism", s: Settings{SASLMechanism: "gssapi", Username: "u"}, wantField: "SASLMechanism", wantMsg: `unknown mechanism "gssapi"`},
		{name: "mechanism without username", s: Settings{SASLMechanism: "scram-sha-256"}, wantField: "Username", wantMsg: "SASLMechanism is SCRAM-SHA-256"},
		{name: "username without mechanism", s: Settings{Username: "u"}, wantField: "Username", wantMsg: "SASLMechanism is empty"},
		{name: "password without mechanism", s: Settings{Password: "p"}, wantField: "Password", wantMsg: "SASLMechanism is empty"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := tt.s.Config(brokers)
			if tt.wantField == "" {
				if err != nil {
					t.Fatalf("Config() = %v, want nil", err)
				}
				return
			}
			assertFieldError(t, err, tt.wantField, tt.wantMsg)
			if !strings.HasPrefix(err.Error(), "kafka settings: "+tt.wantField+" ") {
				t.Fatalf("Error() = %q, want it to start with the field name", err)
			}
		})
	}
}

func TestConfigNoBrokers(t *testing.T) {
	t.Parallel()
	_, err := Settings{}.Config(nil)
	var ce *broker.ConfigError
	if !errors.As(err, &ce) || ce.Field != "Brokers" || !errors.Is(err, broker.ErrInvalidConfig) {
		t.Fatalf("Config(nil) = %v, want a *broker.ConfigError for Brokers", err)
	}
}

func TestTLSConfig(t *testing.T) {
	t.Parallel()
	p := newPKI(t)

	t.Run("off", func(t *testing.T) {
		t.Parallel()
		got, err := Settings{}.tlsConfig()
		if err != nil || got != nil {
			t.Fatalf("TLSConfig() = %v, %v; want nil, nil when TLS is off", got, err)
		}
	})

	t.Run("CA and client certificate", func(t *testing.T) {
		t.Parallel()
		got, err := Settings{TLS: true, CAFile: p.caFile, CertFile: p.clientCert, KeyFile: p.clientKey}.tlsConfig()
		if err != nil {
			t.Fatal(err)
		}
		if got.MinVersion != tls.VersionTLS12 {
			t.Errorf("MinVersion = %x, want TLS 1.2", got.MinVersion)
		}
		if got.InsecureSkipVerify {
			t.Error("InsecureSkipVerify is on without being asked for")
		}
		if len(got.Certificates) != 1 {
			t.Fatalf("Certificates has %d entries, want the client certificate", len(got.Certificates))
		}
		// The CA file must be what verifies the server: check with a real
		// handshake against a server that also requires the client cert.
		handshake(t, p, got)
	})

	t.Run("missing CA file", func(t *testing.T) {
		t.Parallel()
		_, err := Settings{TLS: true, CAFile: filepath.Join(p.dir, "nope.pem")}.tlsConfig()
		assertFieldError(t, err, "CAFile", "cannot be read")
		if !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("error %v does not wrap fs.ErrNotExist", err)
		}
	})

	t.Run("CA file without PEM", func(t *testing.T) {
		t.Parallel()
		garbage := filepath.Join(t.TempDir(), "ca.pem")
		if err := os.WriteFile(garbage, []byte("not a certificate"), 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := Settings{TLS: true, CAFile: garbage}.tlsConfig()
		assertFieldError(t, err, "CAFile", "no PEM certificate")
	})

	t.Run("missing key file", func(t *testing.T) {
		t.Parallel()
		_, err := Settings{TLS: true, CertFile: p.clientCert, KeyFile: filepath.Join(p.dir, "nope.pem")}.tlsConfig()
		assertFieldError(t, err, "KeyFile", "cannot be read")
	})

	t.Run("key does not match certificate", func(t *testing.T) {
		t.Parallel()
		_, err := Settings{TLS: true, CertFile: p.clientCert, KeyFile: p.serverKey}.tlsConfig()
		assertFieldError(t, err, "CertFile", "cannot be loaded")
	})
}

// handshake runs a TLS handshake between cfg and a server presenting p's
// server certificate and requiring a client certificate signed by p's CA.
func handshake(t *testing.T, p *pki, cfg *tls.Config) {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{
		Certificates: []tls.Certificate{p.server},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    p.pool,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	serverErr := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			serverErr <- err
			return
		}
		defer c.Close()
		serverErr <- c.(*tls.Conn).Handshake()
	}()
	cfg = cfg.Clone()
	cfg.ServerName = "127.0.0.1"
	c, err := tls.Dial("tcp", ln.Addr().String(), cfg)
	if err != nil {
		t.Fatalf("client handshake: %v", err)
	}
	c.Close()
	if err := <-serverErr; err != nil {
		t.Fatalf("server handshake: %v", err)
	}
}

func assertFieldError(t *testing.T, err error, field, msg string) {
	t.Helper()
	var fe *FieldError
	if !errors.As(err, &fe) {
		t.Fatalf("got %v, want a *FieldError for %s", err, field)
	}
	if fe.Field != field || !strings.Contains(fe.Error(), msg) {
		t.Fatalf("got %q (field %s), want field %s and a message containing %q", fe.Error(), fe.Field, field, msg)
	}
}

func TestTransportAndDialerAgree(t *testing.T) {
	t.Parallel()
	p := newPKI(t)
	cfg, err := Settings{TLS: true, CAFile: p.caFile, SASLMechanism: "scram-sha-512", Username: "relay", Password: "secret", ClientID: "test-client"}.Config([]string{"k:9092"})
	if err != nil {
		t.Fatal(err)
	}
	tr, err := kafkaclient.Transport(cfg, "fallback")
	if err != nil {
		t.Fatal(err)
	}
	d, err := kafkaclient.Dialer(cfg, "fallback")
	if err != nil {
		t.Fatal(err)
	}
	if tr.TLS == nil || d.TLS == nil || tr.TLS.RootCAs == nil || !tr.TLS.RootCAs.Equal(d.TLS.RootCAs) {
		t.Errorf("Transport and Dialer TLS differ or lack the CA: %+v / %+v", tr.TLS, d.TLS)
	}
	if tr.SASL == nil || d.SASLMechanism == nil || tr.SASL.Name() != "SCRAM-SHA-512" || d.SASLMechanism.Name() != "SCRAM-SHA-512" {
		t.Errorf("SASL mechanisms: transport %v, dialer %v; want SCRAM-SHA-512 on both", tr.SASL, d.SASLMechanism)
	}
	if tr.ClientID != "test-client" || d.ClientID != "test-client" {
		t.Errorf("ClientID: transport %q, dialer %q; want test-client", tr.ClientID, d.ClientID)
	}

	plain, err := Settings{}.Config([]string{"k:9092"})
	if err != nil {
		t.Fatal(err)
	}
	plainTr, err := kafkaclient.Transport(plain, "fallback")
	if err != nil {
		t.Fatal(err)
	}
	if plainTr.TLS != nil || plainTr.SASL != nil || plainTr.ClientID != "fallback" {
		t.Errorf("zero Settings Transport = TLS %v SASL %v ClientID %q; want plaintext with the fallback client ID", plainTr.TLS, plainTr.SASL, plainTr.ClientID)
	}
}

// TestAgainstBroker connects to an in-process broker that requires TLS
// (mutual) and SASL, through both the Transport (as the relay's publisher
// does) and the Dialer (as consumers do), with each mechanism.
func TestAgainstBroker(t *testing.T) {
	t.Parallel()
	p := newPKI(t)
	for _, mech := range []string{"PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"} {
		t.Run(mech, func(t *testing.T) {
			t.Parallel()
			cluster, err := kfake.NewCluster(
				kfake.NumBrokers(1),
				kfake.EnableSASL(),
				kfake.Superuser(mech, "relay", "s3cret,=é"),
				kfake.TLS(&tls.Config{
					Certificates: []tls.Certificate{p.server},
					ClientAuth:   tls.RequireAndVerifyClientCert,
					ClientCAs:    p.pool,
				}),
				kfake.SeedTopics(3, "events"),
			)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(cluster.Close)
			addr := cluster.ListenAddrs()[0]

			good := Settings{TLS: true, CAFile: p.caFile, CertFile: p.clientCert, KeyFile: p.clientKey,
				SASLMechanism: mech, Username: "relay", Password: "s3cret,=é"}
			if err := viaTransport(addr, good); err != nil {
				t.Fatalf("Transport with the right password: %v", err)
			}
			if err := viaDialer(addr, good); err != nil {
				t.Fatalf("Dialer with the right password: %v", err)
			}

			noCert := good
			noCert.CertFile, noCert.KeyFile = "", ""
			if err := viaTransport(addr, noCert); err == nil {
				t.Fatal("Transport without the client certificate: connected, want the broker to refuse the TLS handshake")
			}

			bad := good
			bad.Password = "wrong"
			if err := viaTransport(addr, bad); err == nil {
				t.Fatal("Transport with a wrong password: connected, want an authentication error")
			}
			if err := viaDialer(addr, bad); err == nil {
				t.Fatal("Dialer with a wrong password: connected, want an authentication error")
			}
		})
	}
}

func viaTransport(addr string, s Settings) error {
	cfg, err := s.Config([]string{addr})
	if err != nil {
		return err
	}
	tr, err := kafkaclient.Transport(cfg, "test")
	if err != nil {
		return err
	}
	defer tr.CloseIdleConnections()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	client := &kafka.Client{Addr: kafka.TCP(addr), Transport: tr}
	md, err := client.Metadata(ctx, &kafka.MetadataRequest{Topics: []string{"events"}})
	if err != nil {
		return err
	}
	if len(md.Topics) != 1 || len(md.Topics[0].Partitions) != 3 {
		return errors.New("metadata does not show topic events with 3 partitions")
	}
	return nil
}

func viaDialer(addr string, s Settings) error {
	cfg, err := s.Config([]string{addr})
	if err != nil {
		return err
	}
	d, err := kafkaclient.Dialer(cfg, "test")
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	defer conn.Close()
	parts, err := conn.ReadPartitions("events")
	if err != nil {
		return err
	}
	if len(parts) != 3 {
		return errors.New("ReadPartitions does not show 3 partitions")
	}
	return nil
}

// TestPlaintextSASLAgainstBroker connects with SASL PLAIN and no TLS to a
// broker that requires SASL, which takes AllowPlaintextSASL.
func TestPlaintextSASLAgainstBroker(t *testing.T) {
	t.Parallel()
	cluster, err := kfake.NewCluster(
		kfake.NumBrokers(1),
		kfake.EnableSASL(),
		kfake.Superuser("PLAIN", "relay", "pw"),
		kfake.SeedTopics(3, "events"),
	)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cluster.Close)
	addr := cluster.ListenAddrs()[0]
	s := Settings{SASLMechanism: "plain", Username: "relay", Password: "pw"}
	if err := viaTransport(addr, s); err == nil || !strings.Contains(err.Error(), "AllowPlaintextSASL") {
		t.Fatalf("PLAIN without TLS: got %v, want a refusal naming AllowPlaintextSASL", err)
	}
	s.AllowPlaintextSASL = true
	if err := viaTransport(addr, s); err != nil {
		t.Fatalf("Transport with AllowPlaintextSASL: %v", err)
	}
	if err := viaDialer(addr, s); err != nil {
		t.Fatalf("Dialer with AllowPlaintextSASL: %v", err)
	}
}
