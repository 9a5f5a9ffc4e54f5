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
	"regexp"
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
// check (not strictly: the rest is Kubernetes' to check). A checked field
// the manifests misspell reads as zero and fails its check.
type (
	k8sObject struct {
		APIVersion string      `yaml:"apiVersion"`
		Kind       string      `yaml:"kind"`
		Metadata   k8sMetadata `yaml:"metadata"`
		Spec       k8sSpec     `yaml:"spec"`
	}
	k8sMetadata struct {
		Name   string            `yaml:"name"`
		Labels map[string]string `yaml:"labels"`
	}
	// k8sSpec holds the fields of a Deployment's, a Service's and a
	// PodDisruptionBudget's spec.
	k8sSpec struct {
		Replicas int              `yaml:"replicas"`
		Selector k8sSelector      `yaml:"selector"`
		Strategy k8sStrategy      `yaml:"strategy"`
		Template k8sPodTemplate   `yaml:"template"`
		Ports    []k8sServicePort `yaml:"ports"`
		Minimum  *int             `yaml:"minAvailable"`
	}
	// k8sSelector is a Deployment's or budget's (matchLabels) or a
	// Service's (labels at the top).
	k8sSelector struct {
		MatchLabels map[string]string `yaml:"matchLabels"`
		Labels      map[string]string `yaml:",inline"`
	}
	k8sStrategy struct {
		Type          string `yaml:"type"`
		RollingUpdate struct {
			MaxUnavailable *int `yaml:"maxUnavailable"`
			MaxSurge       *int `yaml:"maxSurge"`
		} `yaml:"rollingUpdate"`
	}
	k8sPodTemplate struct {
		Metadata k8sMetadata `yaml:"metadata"`
		Spec     k8sPodSpec  `yaml:"spec"`
	}
	k8sPodSpec struct {
		TerminationGracePeriodSeconds *int           `yaml:"terminationGracePeriodSeconds"`
		SecurityContext               k8sPodSecurity `yaml:"securityContext"`
		InitContainers                []k8sContainer `yaml:"initContainers"`
		Containers                    []k8sContainer `yaml:"containers"`
		Volumes                       []k8sVolume    `yaml:"volumes"`
	}
	k8sPodSecurity struct {
		RunAsNonRoot *bool `yaml:"runAsNonRoot"`
		RunAsUser    *int  `yaml:"runAsUser"`
		RunAsGroup   *int  `yaml:"runAsGroup"`
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
		Resources      struct {
			Requests map[string]string `yaml:"requests"`
			Limits   map[string]string `yaml:"limits"`
		} `yaml:"resources"`
		SecurityContext struct {
			AllowPrivilegeEscalation *bool `yaml:"allowPrivilegeEscalation"`
			ReadOnlyRootFilesystem   *bool `yaml:"readOnlyRootFilesystem"`
			Capabilities             struct {
				Drop []string `yaml:"drop"`
			} `yaml:"capabilities"`
		} `yaml:"securityContext"`
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
	k8sServicePort struct {
		Name       string `yaml:"name"`
		Port       int    `yaml:"port"`
		TargetPort any    `yaml:"targetPort"`
	}
)

const k8sDir = "../../deploy/kubernetes"

// k8sManifests reads every object of the files kustomization.yaml lists,
// by kind, and checks that it lists every manifest of the directory.
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
	files, err := filepath.Glob(filepath.Join(k8sDir, "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		if name := filepath.Base(f); name != "kustomization.yaml" && !slices.Contains(kust.Resources, name) {
			t.Errorf("kustomization.yaml does not list %s (resources: %v)", name, kust.Resources)
		}
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
	for _, kind := range []string{"Deployment", "Service", "PodDisruptionBudget"} {
		if _, ok := objects[kind]; !ok {
			t.Fatalf("no %s in deploy/kubernetes (found %d objects)", kind, len(objects))
		}
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

// TestKubernetesSecurity checks the pod runs as the image's user, with the
// container hardening a restricted namespace demands.
func TestKubernetesSecurity(t *testing.T) {
	t.Parallel()
	pod := k8sManifests(t)["Deployment"].Spec.Template.Spec
	b, err := os.ReadFile("../../deploy/container/Containerfile")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^USER ([0-9]+):([0-9]+)$`).FindSubmatch(b)
	if m == nil {
		t.Fatal("deploy/container/Containerfile has no numeric USER uid:gid line")
	}
	uid, _ := strconv.Atoi(string(m[1]))
	gid, _ := strconv.Atoi(string(m[2]))
	sc := pod.SecurityContext
	if sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot {
		t.Error("pod securityContext: runAsNonRoot is not true")
	}
	if sc.RunAsUser == nil || *sc.RunAsUser != uid || sc.RunAsGroup == nil || *sc.RunAsGroup != gid {
		t.Errorf("pod securityContext: runAsUser %s runAsGroup %s, want the image's USER %d:%d", show(sc.RunAsUser), show(sc.RunAsGroup), uid, gid)
	}
	for _, c := range append(pod.InitContainers, pod.Containers...) {
		s := c.SecurityContext
		if s.AllowPrivilegeEscalation == nil || *s.AllowPrivilegeEscalation {
			t.Errorf("container %s: allowPrivilegeEscalation is not false", c.Name)
		}
		if s.ReadOnlyRootFilesystem == nil || !*s.ReadOnlyRootFilesystem {
			t.Errorf("container %s: readOnlyRootFilesystem is not true", c.Name)
		}
		if !slices.Equal(s.Capabilities.Drop, []string{"ALL"}) {
			t.Errorf("container %s: capabilities drop %q, want [ALL]", c.Name, s.Capabilities.Drop)
		}
		if c.Resources.Requests["memory"] == "" || c.Resources.Limits["memory"] == "" {
			t.Errorf("container %s: no memory request or limit (%v, %v)", c.Name, c.Resources.Requests, c.Resources.Limits)
		}
	}
}

// TestKubernetesAvailability checks the rollout, the disruption budget and
// the metrics Service.
func TestKubernetesAvailability(t *testing.T) {
	t.Parallel()
	objs := k8sManifests(t)
	dep, svc, pdb := objs["Deployment"], objs["Service"], objs["PodDisruptionBudget"]
	podLabels := dep.Spec.Template.Metadata.Labels
	matches := func(sel map[string]string) bool {
		for k, v := range sel {
			if podLabels[k] != v {
				return false
			}
		}
		return len(sel) > 0
	}

	if dep.Spec.Replicas != 2 {
		t.Errorf("replicas %d, want 2", dep.Spec.Replicas)
	}
	if !matches(dep.Spec.Selector.MatchLabels) {
		t.Errorf("Deployment selector %v does not select its pods %v", dep.Spec.Selector.MatchLabels, podLabels)
	}
	ru := dep.Spec.Strategy.RollingUpdate
	if dep.Spec.Strategy.Type != "RollingUpdate" || ru.MaxUnavailable == nil || *ru.MaxUnavailable != 0 || ru.MaxSurge == nil || *ru.MaxSurge != 1 {
		t.Errorf("strategy %q maxUnavailable %s maxSurge %s, want RollingUpdate 0 and 1", dep.Spec.Strategy.Type, show(ru.MaxUnavailable), show(ru.MaxSurge))
	}

	if pdb.Spec.Minimum == nil || *pdb.Spec.Minimum != 1 || !matches(pdb.Spec.Selector.MatchLabels) {
		t.Errorf("PodDisruptionBudget minAvailable %s selector %v, want 1 and the relay pods %v", show(pdb.Spec.Minimum), pdb.Spec.Selector.MatchLabels, podLabels)
	}

	if !matches(svc.Spec.Selector.Labels) {
		t.Errorf("Service selector %v does not select the relay pods %v", svc.Spec.Selector.Labels, podLabels)
	}
	if len(svc.Spec.Ports) != 1 || svc.Spec.Ports[0].Name != "metrics" || svc.Spec.Ports[0].Port != 9090 || svc.Spec.Ports[0].TargetPort != "metrics" {
		t.Errorf("Service ports %+v, want one named metrics, 9090 to the container's port metrics", svc.Spec.Ports)
	}
}
