// Package deploy holds no code of its own: this module gathers what runs
// outboxkit somewhere (the container image, the Kubernetes manifests, the
// Prometheus rules) and the tests that check them against the relay, so
// that their dependencies (k8s.io/api, the Prometheus operator's types)
// stay out of the library's go.mod.
//
// kubernetes/monitoring/prometheusrule.yaml is generated from
// prometheus/outboxkit-alerts.yml; after editing the rules, regenerate it
// with `go generate .` here or `make prometheusrule` at the repository
// root.
package deploy

//go:generate go run ./internal/cmd/prometheusrule
