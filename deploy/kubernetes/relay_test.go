package kubernetes_test

import (
	"net"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// relayDocs is what cmd/outbox-relay/README.md documents of the relay: the
// variables of its Configuration table and the paths RELAY_HTTP_ADDR
// serves. The manifests are checked against that table rather than against
// config.go's code: it is the list operators read, every variable the
// binary accepts is in it (cmd/outbox-relay's TestReadmeTableVariablesAccepted),
// and the relay's own tests run its parser on the Deployment's environment
// (TestKubernetesRelayConfig).
type relayDocs struct {
	vars  map[string]bool
	paths []string // served on RELAY_HTTP_ADDR
}

var backticked = regexp.MustCompile("`([^`]+)`")

func readRelayDocs(t *testing.T) relayDocs {
	t.Helper()
	const file = "../../cmd/outbox-relay/README.md"
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(b), "\n## Configuration\n")
	if !ok {
		t.Fatalf("%s: no Configuration section", file)
	}
	section, _, _ = strings.Cut(section, "\n## ")
	docs := relayDocs{vars: map[string]bool{}}
	for line := range strings.Lines(section) {
		cells := strings.Split(line, "|")
		if len(cells) < 5 || !strings.HasPrefix(strings.TrimSpace(cells[1]), "`") {
			continue
		}
		for _, m := range backticked.FindAllStringSubmatch(cells[1], -1) {
			docs.vars[m[1]] = true
			if m[1] == "RELAY_HTTP_ADDR" {
				for _, p := range backticked.FindAllStringSubmatch(cells[3], -1) {
					if strings.HasPrefix(p[1], "/") && !slices.Contains(docs.paths, p[1]) {
						docs.paths = append(docs.paths, p[1])
					}
				}
			}
		}
	}
	if len(docs.vars) < 20 || !docs.vars["DATABASE_URL"] || !docs.vars["RELAY_HTTP_ADDR"] {
		t.Fatalf("%s: read %d variables from the Configuration table (%v): has the table's layout changed?", file, len(docs.vars), docs.vars)
	}
	if len(docs.paths) == 0 {
		t.Fatalf("%s: the RELAY_HTTP_ADDR row names no path", file)
	}
	return docs
}

func envValue(c corev1.Container, name string) (string, bool) {
	for _, e := range c.Env {
		if e.Name == name {
			return e.Value, true
		}
	}
	return "", false
}

// containerPort resolves a probe's or Service's port (a number or the name
// of one of c's ports) to a number, or 0.
func containerPort(c corev1.Container, p intstr.IntOrString) int32 {
	if p.Type == intstr.Int {
		return p.IntVal
	}
	for _, cp := range c.Ports {
		if cp.Name == p.StrVal {
			return cp.ContainerPort
		}
	}
	return 0
}

// TestRelayEnvironmentIsDocumented: every variable the Deployment gives the
// relay is one the relay documents, once each.
func TestRelayEnvironmentIsDocumented(t *testing.T) {
	t.Parallel()
	docs := readRelayDocs(t)
	relay := containerNamed(t, readManifests(t).deployment.Spec.Template.Spec.Containers, "relay")
	seen := map[string]bool{}
	for _, e := range relay.Env {
		if !docs.vars[e.Name] {
			t.Errorf("relay container: %s is not in cmd/outbox-relay/README.md's Configuration table", e.Name)
		}
		if seen[e.Name] {
			t.Errorf("relay container: %s set twice", e.Name)
		}
		seen[e.Name] = true
	}
	if len(relay.EnvFrom) > 0 {
		t.Errorf("relay container: envFrom %v; name each variable, so this test can check it", relay.EnvFrom)
	}
}

// TestRelayHTTPEndpoints: the relay listens on a pod address, and the
// container port, the probes, the Service, its scrape annotations and the
// ServiceMonitor all reach that port and paths the relay serves.
func TestRelayHTTPEndpoints(t *testing.T) {
	t.Parallel()
	docs := readRelayDocs(t)
	m := readManifests(t)
	relay := containerNamed(t, m.deployment.Spec.Template.Spec.Containers, "relay")

	addr, ok := envValue(relay, "RELAY_HTTP_ADDR")
	if !ok {
		t.Fatal("relay container: RELAY_HTTP_ADDR not set; its default listens on loopback, where probes and Prometheus cannot reach it")
	}
	host, portText, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatalf("RELAY_HTTP_ADDR=%s: %v", addr, err)
	}
	if ip := net.ParseIP(host); host == "localhost" || (ip != nil && ip.IsLoopback()) {
		t.Errorf("RELAY_HTTP_ADDR=%s listens on loopback: probes and Prometheus cannot reach it in a pod", addr)
	}
	port, err := strconv.Atoi(portText)
	if err != nil {
		t.Fatalf("RELAY_HTTP_ADDR=%s: port: %v", addr, err)
	}

	if len(relay.Ports) != 1 || relay.Ports[0].Name != "metrics" || int(relay.Ports[0].ContainerPort) != port || relay.Ports[0].Protocol != corev1.ProtocolTCP {
		t.Errorf("relay container ports %+v, want one, TCP, named metrics, RELAY_HTTP_ADDR's port %d", relay.Ports, port)
	}
	served := func(what, path string) {
		if !slices.Contains(docs.paths, path) {
			t.Errorf("%s: path %q, which the relay does not serve (it serves %v)", what, path, docs.paths)
		}
	}
	for _, p := range []struct {
		name  string
		probe *corev1.Probe
		path  string
	}{
		{"livenessProbe", relay.LivenessProbe, "/healthz"},
		{"readinessProbe", relay.ReadinessProbe, "/readyz"},
	} {
		if p.probe == nil || p.probe.HTTPGet == nil {
			t.Errorf("%s: no httpGet probe", p.name)
			continue
		}
		if p.probe.HTTPGet.Path != p.path {
			t.Errorf("%s: path %q, want %q", p.name, p.probe.HTTPGet.Path, p.path)
		}
		served(p.name, p.probe.HTTPGet.Path)
		if got := containerPort(relay, p.probe.HTTPGet.Port); int(got) != port {
			t.Errorf("%s: port %s is %d, RELAY_HTTP_ADDR's port %d", p.name, p.probe.HTTPGet.Port.String(), got, port)
		}
	}

	svc := m.service
	if len(svc.Spec.Ports) != 1 || svc.Spec.Ports[0].Name != "metrics" || svc.Spec.Ports[0].Port != 9090 ||
		int(containerPort(relay, svc.Spec.Ports[0].TargetPort)) != port {
		t.Errorf("Service ports %+v, want one named metrics, 9090, to the relay's port %d", svc.Spec.Ports, port)
	}
	// Prometheus's annotation discovery scrapes each endpoint's pod port.
	ann := svc.Annotations
	if ann["prometheus.io/scrape"] != "true" || ann["prometheus.io/port"] != portText || ann["prometheus.io/path"] != "/metrics" {
		t.Errorf("Service annotations %v, want prometheus.io/scrape true, port %s, path /metrics", ann, portText)
	}
	served("Service annotation prometheus.io/path", ann["prometheus.io/path"])

	eps := m.serviceMonitor.Spec.Endpoints
	if len(eps) != 1 || eps[0].Port != svc.Spec.Ports[0].Name || eps[0].Path != "/metrics" {
		t.Fatalf("ServiceMonitor endpoints %+v, want one, on the Service's port %s, path /metrics", eps, svc.Spec.Ports[0].Name)
	}
	served("ServiceMonitor", eps[0].Path)
}
