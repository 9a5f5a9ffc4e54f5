// Command prometheusrule writes the alert rules of
// prometheus/outboxkit-alerts.yml as a Prometheus operator PrometheusRule,
// kubernetes/monitoring/prometheusrule.yaml. It copies the rules file's
// groups as text, comments included, indented under spec, so the two
// decode to the same groups (the kubernetes package's tests check that).
// Run it from the deploy module's root: `go generate .` there, or `make
// prometheusrule`.
package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"os"
)

const header = `# Generated from deploy/prometheus/outboxkit-alerts.yml by make prometheusrule
# (cd deploy && go generate .): edit the rules there and regenerate; a test
# fails while the two differ. The assumptions written at the top of that
# file hold here too; the ServiceMonitor next to this file scrapes the
# relays as job outbox-relay (the Service's name). Your Prometheus may
# select rules by a label of its own: add it with an overlay.
apiVersion: monitoring.coreos.com/v1
kind: PrometheusRule
metadata:
  name: outboxkit-alerts
spec:
`

func main() {
	rules := flag.String("rules", "prometheus/outboxkit-alerts.yml", "the Prometheus rules `file` to read")
	out := flag.String("out", "kubernetes/monitoring/prometheusrule.yaml", "the PrometheusRule `file` to write")
	flag.Parse()
	src, err := os.ReadFile(*rules)
	if err != nil {
		fail(err)
	}
	doc, err := prometheusRule(src)
	if err != nil {
		fail(fmt.Errorf("%s: %w", *rules, err))
	}
	if err := os.WriteFile(*out, doc, 0o644); err != nil { //nolint:gosec // G306: a manifest committed to git, readable by all
		fail(err)
	}
}

func fail(err error) {
	fmt.Fprintf(os.Stderr, "prometheusrule: %v\n", err)
	os.Exit(1)
}

// prometheusRule returns header followed by the rules file from its
// top-level "groups:" line on, each line indented by two spaces; the
// comments above that line describe the file, not the rules.
func prometheusRule(src []byte) ([]byte, error) {
	lines := bytes.SplitAfter(src, []byte("\n"))
	start := -1
	for i, l := range lines {
		if bytes.Equal(bytes.TrimRight(l, " \r\n"), []byte("groups:")) {
			start = i
			break
		}
	}
	if start < 0 {
		return nil, errors.New(`no top-level "groups:" line`)
	}
	var b bytes.Buffer
	b.WriteString(header)
	for _, l := range lines[start:] {
		if len(bytes.TrimSpace(l)) > 0 {
			b.WriteString("  ")
		}
		b.Write(l)
	}
	return b.Bytes(), nil
}
