// Package uniq makes the random suffixes that keep the names of databases,
// topics and consumer groups of concurrent tests, benchmarks and chaos runs
// apart on shared servers.
package uniq

import (
	"crypto/rand"
	"encoding/hex"
)

// Hex returns n random bytes as 2n lower-case hexadecimal digits, fit for
// PostgreSQL and Kafka names alike.
func Hex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // crypto/rand.Read never returns an error
	return hex.EncodeToString(b)
}

// Name returns prefix, a dash and 10 random hexadecimal digits.
func Name(prefix string) string {
	return prefix + "-" + Hex(5)
}
