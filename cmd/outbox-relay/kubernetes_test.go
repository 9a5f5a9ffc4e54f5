package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	yaml "go.yaml.in/yaml/v2"
)

// The manifests of deploy/kubernetes, read into the few fields these tests
// check (not strictly: deploy/kubernetes's own tests, in the deploy module,
// decode every manifest strictly into its Kubernetes type and check the
// rest). These tests need the relay's own code: its configuration parser
// and its HTTP handlers. A checked field the manifests misspell reads as
// zero and fails its check.
type (
	k8sObject struct {
		Kind string  `yaml:"kind"`
		Spec k8sSpec `yaml:"spec"`
	}
	// k8sSpec holds the fields of a Deployment's spec.
	k8sSpec struct {
		Template struct {
			Spec k8sPodSpec `yaml:"spec"`
		} `yaml:"template"`
	}
	k8sPodSpec struct {
		TerminationGracePeriodSeconds *int           `yaml:"terminationGracePeriodSeconds"`
		InitContainers                []k8sContainer `yaml:"initContainers"`
		Containers                    []k8sContainer `yaml:"containers"`
		Volumes                       []k8sVolume    `yaml:"volumes"`
	}
	k8sContainer struct {
		Name    string   `yaml:"name"`
		Image   string   `yaml:"image"`
		Command []string `yaml:"command"`
		Ports   []struct {
			Name          string `yaml:"name"`
			ContainerPort int    `yaml:"containerPort"`
		} `yaml:"ports"`
		Env []struct {
			Name      string `yaml:"name"`
			Value     string `yaml:"value"`
			ValueFrom *struct {
				SecretKeyRef *struct {
					Name string `yaml:"name"`
					Key  string `yaml:"key"`
				} `yaml:"secretKeyRef"`
			} `yaml:"valueFrom"`
		} `yaml:"env"`
		VolumeMounts []struct {
			Name      string `yaml:"name"`
			MountPath string `yaml:"mountPath"`
		} `yaml:"volumeMounts"`
		LivenessProbe  *k8sProbe `yaml:"livenessProbe"`
		ReadinessProbe *k8sProbe `yaml:"readinessProbe"`
	}
	k8sProbe struct {
		HTTPGet *struct {
			Path string `yaml:"path"`
			Port any    `yaml:"port"` // a number or a port name
		} `yaml:"httpGet"`
	}
	k8sVolume struct {
		Name   string `yaml:"name"`
		Secret *struct {
			SecretName string `yaml:"secretName"`
		} `yaml:"secret"`
	}
)

const k8sDir = "../../deploy/kubernetes"

// k8sManifests reads every object of the files kustomization.yaml lists,
// by kind (that it lists every manifest of the folder is checked in the
// deploy module).
func k8sManifests(t *testing.T) map[string]k8sObject {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(k8sDir, "kustomization.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var kust struct {
		Resources []string `yaml:"resources"`
	}
	if err := yaml.Unmarshal(b, &kust); err != nil {
		t.Fatalf("kustomization.yaml: %v", err)
	}
	objects := map[string]k8sObject{}
	for _, r := range kust.Resources {
		b, err := os.ReadFile(filepath.Join(k8sDir, r))
		if err != nil {
			t.Fatalf("kustomization.yaml lists %s: %v", r, err)
		}
		dec := yaml.NewDecoder(bytes.NewReader(b))
		for {
			var o k8sObject
			if err := dec.Decode(&o); errors.Is(err, io.EOF) {
				break
			} else if err != nil {
				t.Fatalf("%s: %v", r, err)
			}
			if _, dup := objects[o.Kind]; dup {
				t.Fatalf("%s: a second %s; these tests expect one of each kind", r, o.Kind)
			}
			objects[o.Kind] = o
		}
	}
	if _, ok := objects["Deployment"]; !ok {
		t.Fatalf("no Deployment in deploy/kubernetes (found %d objects)", len(objects))
	}
	return objects
}

func k8sContainerNamed(t *testing.T, cs []k8sContainer, name string) k8sContainer {
	t.Helper()
	for _, c := range cs {
		if c.Name == name {
			return c
		}
	}
	t.Fatalf("no container %q in the Deployment", name)
	return k8sContainer{}
}

// TestKubernetesRelayConfig runs the relay's configuration parser on the
// environment the Deployment gives the relay container, with the secret
// files it names, so every variable must be one the relay accepts and
// every value valid.
func TestKubernetesRelayConfig(t *testing.T) {
	t.Parallel()
	dep := k8sManifests(t)["Deployment"]
	pod := dep.Spec.Template.Spec
	relayC := k8sContainerNamed(t, pod.Containers, "relay")

	secretVolumes := map[string]string{} // volume name to Secret name
	for _, v := range pod.Volumes {
		if v.Secret != nil {
			secretVolumes[v.Name] = v.Secret.SecretName
		}
	}
	// Each *_FILE must name a key of a mounted Secret; the test writes a
	// stand-in file for it.
	secretsDir := t.TempDir()
	stand := map[string]string{
		"DATABASE_URL_FILE":        "postgres://relay@db.example:5432/app?sslmode=verify-full\n",
		"KAFKA_SASL_PASSWORD_FILE": "not-the-password\n",
	}
	fileKeys := map[string]string{} // *_FILE variable to the Secret key it reads
	var environ []string
	for _, e := range relayC.Env {
		if e.ValueFrom != nil {
			t.Errorf("relay container: %s comes from valueFrom; the relay reads its secrets from files (*_FILE)", e.Name)
			continue
		}
		v := e.Value
		if strings.HasSuffix(e.Name, "_FILE") {
			mounted := false
			for _, m := range relayC.VolumeMounts {
				if path.Dir(v) == m.MountPath && secretVolumes[m.Name] != "" {
					mounted = true
				}
			}
			if !mounted {
				t.Errorf("relay container: %s=%s is not a file of a mounted Secret", e.Name, v)
			}
			content, ok := stand[e.Name]
			if !ok {
				t.Errorf("relay container: %s names a file the test has no stand-in content for", e.Name)
				continue
			}
			fileKeys[e.Name] = path.Base(v)
			v = filepath.Join(secretsDir, path.Base(v))
			if err := os.WriteFile(v, []byte(content), 0o600); err != nil {
				t.Fatal(err)
			}
		}
		environ = append(environ, e.Name+"="+v)
	}
	for name := range stand {
		if fileKeys[name] == "" {
			t.Errorf("relay container: %s not set; the Deployment should read that secret from a file", name)
		}
	}
	cfg, err := parseConfig(environ)
	if err != nil {
		t.Fatalf("the relay refuses the Deployment's environment: %v\nenvironment: %q", err, environ)
	}

	host, port, err := net.SplitHostPort(cfg.HTTPAddr)
	if err != nil {
		t.Fatal(err)
	}
	if ip := net.ParseIP(host); host == "localhost" || (ip != nil && ip.IsLoopback()) {
		t.Errorf("RELAY_HTTP_ADDR=%s listens on loopback: probes and Prometheus cannot reach it in a pod", cfg.HTTPAddr)
	}
	var metricsPort int
	for _, p := range relayC.Ports {
		if p.Name == "metrics" {
			metricsPort = p.ContainerPort
		}
	}
	if strconv.Itoa(metricsPort) != port {
		t.Errorf("container port metrics is %d, RELAY_HTTP_ADDR's port %s", metricsPort, port)
	}

	// The migrate init container reads DATABASE_URL from the key the relay
	// reads as a file.
	migrate := k8sContainerNamed(t, pod.InitContainers, "migrate")
	if !slices.Equal(migrate.Command, []string{"/outboxkit", "migrate", "up"}) {
		t.Errorf("migrate command %q, want [/outboxkit migrate up]", migrate.Command)
	}
	if migrate.Image != relayC.Image {
		t.Errorf("migrate image %q, relay image %q: the migrations must be the relay's version", migrate.Image, relayC.Image)
	}
	var urlKey string
	for _, e := range migrate.Env {
		if e.Name == "DATABASE_URL" && e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil {
			urlKey = e.ValueFrom.SecretKeyRef.Key
		}
	}
	if urlKey == "" || urlKey != fileKeys["DATABASE_URL_FILE"] {
		t.Errorf("migrate reads DATABASE_URL from Secret key %q, the relay from %q", urlKey, fileKeys["DATABASE_URL_FILE"])
	}

	// The pod gets past SIGTERM's deadline with a margin before SIGKILL.
	const margin = 5 * time.Second
	if g := pod.TerminationGracePeriodSeconds; g == nil || time.Duration(*g)*time.Second < cfg.hardDeadline()+margin {
		t.Errorf("terminationGracePeriodSeconds %s, want at least %v (RELAY_SHUTDOWN_TIMEOUT + %v + %v margin)",
			show(g), cfg.hardDeadline()+margin, shutdownGrace, margin)
	}
}

// TestKubernetesProbes checks that the probes ask the paths and port the
// relay serves, and that each path answers as its probe needs: liveness
// up while the loop runs, readiness only while the relay is ready.
func TestKubernetesProbes(t *testing.T) {
	t.Parallel()
	relayC := k8sContainerNamed(t, k8sManifests(t)["Deployment"].Spec.Template.Spec.Containers, "relay")
	probes := map[string]*k8sProbe{"livenessProbe": relayC.LivenessProbe, "readinessProbe": relayC.ReadinessProbe}
	wantPath := map[string]string{"livenessProbe": "/healthz", "readinessProbe": "/readyz"}
	for name, p := range probes {
		if p == nil || p.HTTPGet == nil {
			t.Errorf("%s: no httpGet probe", name)
			continue
		}
		if p.HTTPGet.Path != wantPath[name] {
			t.Errorf("%s: path %q, want %q", name, p.HTTPGet.Path, wantPath[name])
		}
		if p.HTTPGet.Port != "metrics" && p.HTTPGet.Port != 9090 {
			t.Errorf("%s: port %v, want metrics (9090)", name, p.HTTPGet.Port)
		}
	}

	var running atomic.Bool
	running.Store(true)
	ready := &fixedReadiness{}
	mux := newMux(prometheus.NewRegistry(), ready, &running)
	get := func(p string) int {
		rec := httptest.NewRecorder()
		mux.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, p, nil))
		return rec.Code
	}
	live, readyPath := relayC.LivenessProbe.HTTPGet.Path, relayC.ReadinessProbe.HTTPGet.Path
	if got := get(live); got != http.StatusOK {
		t.Errorf("GET %s on a running relay that is not ready: %d, want 200 (liveness must not restart it)", live, got)
	}
	if got := get(readyPath); got != http.StatusServiceUnavailable {
		t.Errorf("GET %s on a relay that is not ready: %d, want 503", readyPath, got)
	}
	ready.ready = true
	if got := get(readyPath); got != http.StatusOK {
		t.Errorf("GET %s on a ready relay: %d, want 200", readyPath, got)
	}
}

// show prints an optional field's value, or "unset".
func show[T any](p *T) string {
	if p == nil {
		return "unset"
	}
	return fmt.Sprint(*p)
}

type fixedReadiness struct{ ready bool }

func (r *fixedReadiness) Ready() bool { return r.ready }
