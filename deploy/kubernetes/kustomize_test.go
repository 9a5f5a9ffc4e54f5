package kubernetes_test

import (
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
)

// build runs kustomize, as `kubectl apply -k` does, on dir of fs and decodes
// its output strictly.
func build(t *testing.T, fs filesys.FileSystem, dir string) []runtime.Object {
	t.Helper()
	res, err := krusty.MakeKustomizer(krusty.MakeDefaultOptions()).Run(fs, dir)
	if err != nil {
		t.Fatalf("kustomize build %s: %v", dir, err)
	}
	y, err := res.AsYaml()
	if err != nil {
		t.Fatal(err)
	}
	objs, err := decodeObjects(y)
	if err != nil {
		t.Fatalf("kustomize build %s: %v\n%s", dir, err, y)
	}
	return objs
}

const wantImage = "localhost/outboxkit/outbox-relay:latest"

// TestKustomizeBuilds: each kustomization builds, names the image in every
// container, and labels its objects without touching the selectors.
func TestKustomizeBuilds(t *testing.T) {
	t.Parallel()
	fs := filesys.MakeFsOnDisk()
	for _, tc := range []struct {
		dir   string
		kinds string
	}{
		{".", "Deployment PodDisruptionBudget Service"},
		{"monitoring", "PrometheusRule ServiceMonitor"},
		{"migrate-job", "Job"},
	} {
		var kinds []string
		for _, o := range build(t, fs, tc.dir) {
			kind := o.GetObjectKind().GroupVersionKind().Kind
			kinds = append(kinds, kind)
			switch o := o.(type) {
			case *appsv1.Deployment:
				pod := o.Spec.Template.Spec
				for _, c := range append(pod.InitContainers, pod.Containers...) {
					if c.Image != wantImage {
						t.Errorf("%s: Deployment container %s: image %q, want %q", tc.dir, c.Name, c.Image, wantImage)
					}
				}
				if got := o.Spec.Selector.MatchLabels; len(got) != 1 {
					t.Errorf("%s: Deployment selector %v: the kustomization's labels must not reach selectors (they cannot change)", tc.dir, got)
				}
			case *batchv1.Job:
				for _, c := range o.Spec.Template.Spec.Containers {
					if c.Image != wantImage {
						t.Errorf("%s: Job container %s: image %q, want %q", tc.dir, c.Name, c.Image, wantImage)
					}
				}
			}
			meta, ok := o.(interface{ GetLabels() map[string]string })
			if !ok || meta.GetLabels()["app.kubernetes.io/part-of"] != "outboxkit" {
				t.Errorf("%s: %s is not labelled app.kubernetes.io/part-of=outboxkit", tc.dir, kind)
			}
		}
		slices.Sort(kinds)
		if got := strings.Join(kinds, " "); got != tc.kinds {
			t.Errorf("kustomize build %s: %s, want %s", tc.dir, got, tc.kinds)
		}
	}
}

// TestReadmeOverlayDropsInitContainer builds the overlay README.md shows
// for running the migrations as a Job: the relays without the init
// container, everything else as in the base.
func TestReadmeOverlayDropsInitContainer(t *testing.T) {
	t.Parallel()
	b, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, overlay, ok := strings.Cut(string(b), "removes the init container:\n\n```yaml\n")
	if !ok {
		t.Fatal("README.md: no overlay after \"removes the init container:\"")
	}
	overlay, _, _ = strings.Cut(overlay, "```")
	fs := filesys.MakeFsInMemory()
	files, err := filepath.Glob("*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		content, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		// The overlay names the base as ../deploy/kubernetes.
		if err := fs.WriteFile(path.Join("/repo/deploy/kubernetes", f), content); err != nil {
			t.Fatal(err)
		}
	}
	if err := fs.WriteFile("/repo/my-overlay/kustomization.yaml", []byte(overlay)); err != nil {
		t.Fatal(err)
	}
	var dep *appsv1.Deployment
	for _, o := range build(t, fs, "/repo/my-overlay") {
		if d, ok := o.(*appsv1.Deployment); ok {
			dep = d
		}
	}
	if dep == nil {
		t.Fatal("the overlay has no Deployment")
	}
	pod := dep.Spec.Template.Spec
	if len(pod.InitContainers) != 0 {
		t.Errorf("the overlay's Deployment still has init containers %v", pod.InitContainers)
	}
	if len(pod.Containers) != 1 || pod.Containers[0].Name != "relay" || pod.Containers[0].Image != wantImage {
		t.Errorf("the overlay's Deployment containers %+v, want the relay, image %s", pod.Containers, wantImage)
	}
}
