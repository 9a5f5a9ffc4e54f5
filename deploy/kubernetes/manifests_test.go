// Package kubernetes_test checks the manifests of this folder and its
// optional parts (monitoring/, migrate-job/): every object decodes into its
// Kubernetes or Prometheus operator type with unknown fields refused, each
// kustomization lists every manifest of its folder, and the settings agree
// with the relay as cmd/outbox-relay/README.md documents it.
package kubernetes_test

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/json"
	"sigs.k8s.io/yaml"
)

// kustomization is the part of kustomize's Kustomization these manifests
// use; decoded strictly, a field kustomize knows but this struct does not
// fails the test until it is added here.
type kustomization struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Labels     []struct {
		Pairs            map[string]string `json:"pairs"`
		IncludeSelectors bool              `json:"includeSelectors"`
	} `json:"labels"`
	Resources []string         `json:"resources"`
	Images    []kustomizeImage `json:"images"`
}

type kustomizeImage struct {
	Name    string `json:"name"`
	NewName string `json:"newName"`
	NewTag  string `json:"newTag"`
}

// manifests holds every object of the three kustomizations, each of its
// own type; these tests expect one of each kind.
type manifests struct {
	base, monitoring, migrateJob kustomization

	deployment     *appsv1.Deployment
	service        *corev1.Service
	budget         *policyv1.PodDisruptionBudget
	job            *batchv1.Job
	serviceMonitor *monitoringv1.ServiceMonitor
	prometheusRule *monitoringv1.PrometheusRule
}

// newObject returns an empty object of the type for apiVersion and kind, or
// nil for a kind these manifests should not hold.
func newObject(apiVersion, kind string) runtime.Object {
	switch apiVersion + " " + kind {
	case "apps/v1 Deployment":
		return &appsv1.Deployment{}
	case "v1 Service":
		return &corev1.Service{}
	case "policy/v1 PodDisruptionBudget":
		return &policyv1.PodDisruptionBudget{}
	case "batch/v1 Job":
		return &batchv1.Job{}
	case "monitoring.coreos.com/v1 ServiceMonitor":
		return &monitoringv1.ServiceMonitor{}
	case "monitoring.coreos.com/v1 PrometheusRule":
		return &monitoringv1.PrometheusRule{}
	}
	return nil
}

// documentSeparator splits a YAML stream into its documents.
var documentSeparator = regexp.MustCompile(`(?m)^---[ \t]*$`)

// decodeObjects decodes every document of a manifest file into its typed
// object, refusing unknown and duplicate fields.
func decodeObjects(b []byte) ([]runtime.Object, error) {
	var objs []runtime.Object
	for _, doc := range documentSeparator.Split(string(b), -1) {
		var tm metav1.TypeMeta
		if err := yaml.Unmarshal([]byte(doc), &tm); err != nil {
			return nil, err
		}
		if tm.APIVersion == "" && tm.Kind == "" {
			continue // only comments
		}
		obj := newObject(tm.APIVersion, tm.Kind)
		if obj == nil {
			return nil, errors.New("unexpected object " + tm.APIVersion + " " + tm.Kind)
		}
		if err := unmarshalStrict([]byte(doc), obj); err != nil {
			return nil, err
		}
		objs = append(objs, obj)
	}
	return objs, nil
}

// unmarshalStrict decodes the YAML document y into v as the API server
// decodes a request in strict mode: keys are case-sensitive, and unknown
// and duplicate keys are errors. (sigs.k8s.io/yaml's UnmarshalStrict goes
// through encoding/json, which matches keys regardless of case.)
func unmarshalStrict(y []byte, v any) error {
	j, err := yaml.YAMLToJSONStrict(y)
	if err != nil {
		return err
	}
	strict, err := json.UnmarshalStrict(j, v, json.DisallowDuplicateFields, json.DisallowUnknownFields)
	if err != nil {
		return err
	}
	return errors.Join(strict...)
}

// readKustomization decodes dir's kustomization.yaml strictly and checks
// that it lists every other manifest of dir, and nothing missing.
func readKustomization(t *testing.T, dir string) kustomization {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, "kustomization.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var k kustomization
	if err := unmarshalStrict(b, &k); err != nil {
		t.Fatalf("%s/kustomization.yaml: %v", dir, err)
	}
	if k.APIVersion != "kustomize.config.k8s.io/v1beta1" || k.Kind != "Kustomization" {
		t.Errorf("%s/kustomization.yaml: %s %s, want kustomize.config.k8s.io/v1beta1 Kustomization", dir, k.APIVersion, k.Kind)
	}
	files, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		if name := filepath.Base(f); name != "kustomization.yaml" && !slices.Contains(k.Resources, name) {
			t.Errorf("%s/kustomization.yaml does not list %s (resources: %v)", dir, name, k.Resources)
		}
	}
	return k
}

// readManifests reads the objects of the base, monitoring/ and
// migrate-job/ through their kustomizations.
func readManifests(t *testing.T) manifests {
	t.Helper()
	var m manifests
	found := map[string]string{} // kind to the file holding it
	for dir, k := range map[string]*kustomization{".": &m.base, "monitoring": &m.monitoring, "migrate-job": &m.migrateJob} {
		*k = readKustomization(t, dir)
		for _, r := range k.Resources {
			file := filepath.Join(dir, r)
			b, err := os.ReadFile(file)
			if err != nil {
				t.Fatalf("%s/kustomization.yaml lists %s: %v", dir, r, err)
			}
			objs, err := decodeObjects(b)
			if err != nil {
				t.Fatalf("%s: %v", file, err)
			}
			for _, o := range objs {
				kind := o.GetObjectKind().GroupVersionKind().Kind
				if prev, dup := found[kind]; dup {
					t.Fatalf("%s: a second %s (the first is in %s); these tests expect one of each kind", file, kind, prev)
				}
				found[kind] = file
				switch o := o.(type) {
				case *appsv1.Deployment:
					m.deployment = o
				case *corev1.Service:
					m.service = o
				case *policyv1.PodDisruptionBudget:
					m.budget = o
				case *batchv1.Job:
					m.job = o
				case *monitoringv1.ServiceMonitor:
					m.serviceMonitor = o
				case *monitoringv1.PrometheusRule:
					m.prometheusRule = o
				}
			}
		}
	}
	if m.deployment == nil || m.service == nil || m.budget == nil || m.job == nil || m.serviceMonitor == nil || m.prometheusRule == nil {
		t.Fatalf("want a Deployment, Service, PodDisruptionBudget, Job, ServiceMonitor and PrometheusRule; found %v", found)
	}
	return m
}

// selects reports whether sel is a valid, non-empty selector that matches
// objects labelled lbls.
func selects(t *testing.T, sel *metav1.LabelSelector, lbls map[string]string) bool {
	t.Helper()
	if sel == nil {
		return false
	}
	s, err := metav1.LabelSelectorAsSelector(sel)
	if err != nil {
		t.Errorf("selector %v: %v", sel, err)
		return false
	}
	return !s.Empty() && s.Matches(labels.Set(lbls))
}

// containerNamed returns the container called name, failing the test
// without one.
func containerNamed(t *testing.T, cs []corev1.Container, name string) corev1.Container {
	t.Helper()
	for _, c := range cs {
		if c.Name == name {
			return c
		}
	}
	t.Fatalf("no container %q", name)
	return corev1.Container{}
}

// TestStrictDecodingRefusesUnknownFields: a misspelled field fails the
// decoding instead of reading as unset (which a Kubernetes server would
// drop with only a warning).
func TestStrictDecodingRefusesUnknownFields(t *testing.T) {
	t.Parallel()
	b, err := os.ReadFile("deployment.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := decodeObjects(b); err != nil {
		t.Fatalf("deployment.yaml: %v", err)
	}
	for _, tc := range []struct{ field, typo string }{
		{"terminationGracePeriodSeconds:", "terminationGracePeriodSecond:"},
		{"readOnlyRootFilesystem:", "readOnlyRootFileSystem:"},
		{"  replicas:", "  replica:"},
	} {
		bad := bytes.Replace(b, []byte(tc.field), []byte(tc.typo), 1)
		if bytes.Equal(bad, b) {
			t.Fatalf("deployment.yaml has no %q to misspell", tc.field)
		}
		if _, err := decodeObjects(bad); err == nil || !strings.Contains(err.Error(), "unknown field") {
			t.Errorf("deployment.yaml with %q: err %v, want an unknown field error", tc.typo, err)
		}
	}
	dup := append(slices.Clone(b), []byte("spec: {}\n")...)
	if _, err := decodeObjects(dup); err == nil {
		t.Error("deployment.yaml with spec twice: decoded, want a duplicate key error")
	}
}
