package kubernetes_test

import (
	"os"
	"regexp"
	"slices"
	"strconv"
	"testing"

	corev1 "k8s.io/api/core/v1"
)

// TestPodSecurity: the relay pods and the migration Job run as the image's
// user, with the container hardening a restricted namespace demands, and
// with memory requests and limits.
func TestPodSecurity(t *testing.T) {
	t.Parallel()
	m := readManifests(t)
	b, err := os.ReadFile("../container/Containerfile")
	if err != nil {
		t.Fatal(err)
	}
	u := regexp.MustCompile(`(?m)^USER ([0-9]+):([0-9]+)$`).FindSubmatch(b)
	if u == nil {
		t.Fatal("deploy/container/Containerfile has no numeric USER uid:gid line")
	}
	uid, _ := strconv.ParseInt(string(u[1]), 10, 64)
	gid, _ := strconv.ParseInt(string(u[2]), 10, 64)
	for name, pod := range map[string]corev1.PodSpec{
		"Deployment": m.deployment.Spec.Template.Spec,
		"Job":        m.job.Spec.Template.Spec,
	} {
		sc := pod.SecurityContext
		if sc == nil {
			t.Errorf("%s: no pod securityContext", name)
			continue
		}
		if sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot {
			t.Errorf("%s: pod securityContext: runAsNonRoot is not true", name)
		}
		if sc.RunAsUser == nil || *sc.RunAsUser != uid || sc.RunAsGroup == nil || *sc.RunAsGroup != gid {
			t.Errorf("%s: pod securityContext: runAsUser %v runAsGroup %v, want the image's USER %d:%d", name, show(sc.RunAsUser), show(sc.RunAsGroup), uid, gid)
		}
		if sc.SeccompProfile == nil || sc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
			t.Errorf("%s: pod seccompProfile %+v, want RuntimeDefault", name, sc.SeccompProfile)
		}
		if pod.AutomountServiceAccountToken == nil || *pod.AutomountServiceAccountToken {
			t.Errorf("%s: automountServiceAccountToken is not false: nothing in the pod talks to the API server", name)
		}
		for _, c := range slices.Concat(pod.InitContainers, pod.Containers) {
			s := c.SecurityContext
			if s == nil {
				t.Errorf("%s: container %s: no securityContext", name, c.Name)
				continue
			}
			if s.AllowPrivilegeEscalation == nil || *s.AllowPrivilegeEscalation {
				t.Errorf("%s: container %s: allowPrivilegeEscalation is not false", name, c.Name)
			}
			if s.ReadOnlyRootFilesystem == nil || !*s.ReadOnlyRootFilesystem {
				t.Errorf("%s: container %s: readOnlyRootFilesystem is not true", name, c.Name)
			}
			if s.Capabilities == nil || !slices.Equal(s.Capabilities.Drop, []corev1.Capability{"ALL"}) {
				t.Errorf("%s: container %s: capabilities %+v, want drop [ALL]", name, c.Name, s.Capabilities)
			}
			if c.Resources.Requests.Memory().IsZero() || c.Resources.Limits.Memory().IsZero() {
				t.Errorf("%s: container %s: no memory request or limit (%v, %v)", name, c.Name, c.Resources.Requests, c.Resources.Limits)
			}
		}
	}
}

// show prints an optional field's value, or "unset".
func show[T any](p *T) any {
	if p == nil {
		return "unset"
	}
	return *p
}

// TestAvailability checks the rollout, the disruption budget and the
// selectors of the Deployment, the budget and the Service.
func TestAvailability(t *testing.T) {
	t.Parallel()
	m := readManifests(t)
	dep, svc, pdb := m.deployment, m.service, m.budget
	podLabels := dep.Spec.Template.Labels

	if dep.Spec.Replicas == nil || *dep.Spec.Replicas != 2 {
		t.Errorf("replicas %v, want 2", show(dep.Spec.Replicas))
	}
	if !selects(t, dep.Spec.Selector, podLabels) {
		t.Errorf("Deployment selector %v does not select its pods %v", dep.Spec.Selector, podLabels)
	}
	s := dep.Spec.Strategy
	if s.Type != "RollingUpdate" || s.RollingUpdate == nil || s.RollingUpdate.MaxUnavailable == nil || s.RollingUpdate.MaxUnavailable.String() != "0" ||
		s.RollingUpdate.MaxSurge == nil || s.RollingUpdate.MaxSurge.String() != "1" {
		t.Errorf("strategy %+v, want RollingUpdate with maxUnavailable 0 and maxSurge 1", s)
	}
	if pdb.Spec.MinAvailable == nil || pdb.Spec.MinAvailable.String() != "1" || !selects(t, pdb.Spec.Selector, podLabels) {
		t.Errorf("PodDisruptionBudget minAvailable %v selector %v, want 1 and the relay pods %v", show(pdb.Spec.MinAvailable), pdb.Spec.Selector, podLabels)
	}
	// A Service's selector is a plain map, matched as equality on each key.
	for k, v := range svc.Spec.Selector {
		if podLabels[k] != v {
			t.Errorf("Service selector %v does not select the relay pods %v", svc.Spec.Selector, podLabels)
			break
		}
	}
	if len(svc.Spec.Selector) == 0 {
		t.Error("Service has no selector")
	}
}
