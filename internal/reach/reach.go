// Package reach turns a failed connection to PostgreSQL or Kafka into the
// one line a binary prints before it exits: what could not be reached and
// where, the cause in a few words, and a hint naming the setting to check.
// Drivers describe a failed connection on several lines, naming their own
// packages and every address they tried; an operator needs none of that to
// see that the database is down or the URL points elsewhere.
package reach

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"syscall"

	"github.com/jackc/pgx/v5/pgconn"
)

// Error is a connection that failed, at start or when a command connects.
type Error struct {
	// Service is "PostgreSQL" or "Kafka".
	Service string
	// Addr lists the addresses tried, host:port[,host:port].
	Addr string
	// Setting names where the addresses come from, such as DATABASE_URL.
	Setting string
	// Cause says in a few words what went wrong, such as "connection
	// refused".
	Cause string
	// Answered is set when the server answered and refused the session
	// (PostgreSQL's authentication or a missing database), rather than
	// being out of reach.
	Answered bool
	// Err is the driver's error.
	Err error
}

// Error returns one line ending with a hint.
func (e *Error) Error() string {
	if e.Answered {
		return fmt.Sprintf("%s at %s refused the connection: %s (check %s)", e.Service, e.Addr, e.Cause, e.Setting)
	}
	return fmt.Sprintf("cannot reach %s at %s: %s (is %s running at %s? check %s)", e.Service, e.Addr, e.Cause, e.Service, e.Addr, e.Setting)
}

// Unwrap returns the driver's error.
func (e *Error) Unwrap() error { return e.Err }

// PostgreSQL describes err, returned by a connection attempt with cfg, as
// an [*Error]. setting names where cfg comes from, such as DATABASE_URL.
func PostgreSQL(err error, cfg *pgconn.Config, setting string) *Error {
	e := &Error{Service: "PostgreSQL", Addr: Hosts(cfg), Setting: setting, Err: err}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		e.Answered = true
		e.Cause = pgErr.Message + " (SQLSTATE " + pgErr.Code + ")"
		return e
	}
	e.Cause = Cause(err)
	return e
}

// Hosts lists every host:port of cfg, its fallbacks included (a URL that
// names a primary and its standbys), each once.
func Hosts(cfg *pgconn.Config) string {
	hosts := []string{net.JoinHostPort(cfg.Host, strconv.Itoa(int(cfg.Port)))}
	for _, f := range cfg.Fallbacks {
		if hp := net.JoinHostPort(f.Host, strconv.Itoa(int(f.Port))); !slices.Contains(hosts, hp) {
			hosts = append(hosts, hp)
		}
	}
	return strings.Join(hosts, ",")
}

// Kafka describes err, returned by a connection attempt to the brokers
// addr, as an [*Error]. setting names where addr comes from.
func Kafka(err error, addr, setting string) *Error {
	return &Error{Service: "Kafka", Addr: addr, Setting: setting, Cause: Cause(err), Err: err}
}

// Unreachable reports whether err is a failure to reach a server at all
// (a dial that failed: refused, unreachable, a name not found, a timeout),
// rather than an answer from it.
func Unreachable(err error) bool {
	var (
		dnsErr *net.DNSError
		opErr  *net.OpError
	)
	return errors.As(err, &dnsErr) || (errors.As(err, &opErr) && opErr.Op == "dial") ||
		errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.EHOSTUNREACH) || errors.Is(err, syscall.ENETUNREACH)
}

// Cause says in a few words why a connection failed: "connection
// refused", "host db.example not found", "timed out", a TLS certificate
// problem; otherwise the error's text on one line.
func Cause(err error) string {
	var (
		dnsErr  *net.DNSError
		certErr *tls.CertificateVerificationError
		unknown x509.UnknownAuthorityError
		host    x509.HostnameError
		netErr  net.Error
	)
	switch {
	case errors.As(err, &dnsErr) && dnsErr.IsNotFound:
		return "host " + dnsErr.Name + " not found"
	case errors.As(err, &dnsErr):
		return "cannot look up host " + dnsErr.Name
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection refused"
	case errors.Is(err, syscall.ECONNRESET):
		return "connection reset"
	case errors.Is(err, syscall.EHOSTUNREACH):
		return "host unreachable"
	case errors.Is(err, syscall.ENETUNREACH):
		return "network unreachable"
	case errors.As(err, &unknown):
		return "TLS: " + unknown.Error()
	case errors.As(err, &host):
		return "TLS: " + host.Error()
	case errors.As(err, &certErr):
		return "TLS: " + OneLine(certErr.Err.Error())
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &netErr) && netErr.Timeout():
		return "timed out"
	}
	return OneLine(err.Error())
}

// OneLine joins s's lines and runs of spaces into single spaces: drivers
// describe a failed connection on several indented lines, and an exit line
// is one line.
func OneLine(s string) string { return strings.Join(strings.Fields(s), " ") }
