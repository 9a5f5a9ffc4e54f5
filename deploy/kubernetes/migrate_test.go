package kubernetes_test

import (
	"reflect"
	"slices"
	"testing"

	corev1 "k8s.io/api/core/v1"
)

// migrateCommand is the container command that applies the migrations,
// in the init container and in the Job alike.
var migrateCommand = []string{"/outboxkit", "migrate", "up"}

// checkMigrateContainer checks a container that runs the migrations: the
// command, the relays' image, and DATABASE_URL (the only variable
// `outboxkit migrate` reads; it has no _FILE form) from a Secret's
// database-url key.
func checkMigrateContainer(t *testing.T, where string, c, relay corev1.Container) {
	t.Helper()
	if !slices.Equal(c.Command, migrateCommand) {
		t.Errorf("%s: command %q, want %q", where, c.Command, migrateCommand)
	}
	if c.Image != relay.Image {
		t.Errorf("%s: image %q, the relay's %q: the migrations must be the relays' version", where, c.Image, relay.Image)
	}
	if len(c.Env) != 1 || c.Env[0].Name != "DATABASE_URL" || c.Env[0].ValueFrom == nil || c.Env[0].ValueFrom.SecretKeyRef == nil ||
		c.Env[0].ValueFrom.SecretKeyRef.Key != "database-url" {
		t.Errorf("%s: env %+v, want DATABASE_URL alone, from a Secret's key database-url", where, c.Env)
	}
}

// TestMigrations: the init container and the Job run the same command from
// the relays' image, and the Job runs once, to completion.
func TestMigrations(t *testing.T) {
	t.Parallel()
	m := readManifests(t)
	pod := m.deployment.Spec.Template.Spec
	relay := containerNamed(t, pod.Containers, "relay")
	checkMigrateContainer(t, "init container migrate", containerNamed(t, pod.InitContainers, "migrate"), relay)

	job := m.job.Spec
	if len(job.Template.Spec.Containers) != 1 {
		t.Fatalf("Job: %d containers, want one", len(job.Template.Spec.Containers))
	}
	checkMigrateContainer(t, "Job", job.Template.Spec.Containers[0], relay)
	if job.Template.Spec.RestartPolicy != corev1.RestartPolicyNever {
		t.Errorf("Job restartPolicy %q, want Never (each retry a new pod, counted by backoffLimit)", job.Template.Spec.RestartPolicy)
	}
	if job.BackoffLimit == nil || *job.BackoffLimit < 1 || job.ActiveDeadlineSeconds == nil || job.TTLSecondsAfterFinished == nil {
		t.Errorf("Job backoffLimit %v activeDeadlineSeconds %v ttlSecondsAfterFinished %v, want all set (backoffLimit at least 1)",
			show(job.BackoffLimit), show(job.ActiveDeadlineSeconds), show(job.TTLSecondsAfterFinished))
	}
	if (job.Parallelism != nil && *job.Parallelism != 1) || (job.Completions != nil && *job.Completions != 1) {
		t.Errorf("Job parallelism %v completions %v, want one pod", show(job.Parallelism), show(job.Completions))
	}
	// Both kustomizations set the image, so that the Job migrates to the
	// relays' version.
	if !reflect.DeepEqual(m.migrateJob.Images, m.base.Images) || len(m.base.Images) == 0 {
		t.Errorf("migrate-job/kustomization.yaml images %+v, kustomization.yaml's %+v: want the same", m.migrateJob.Images, m.base.Images)
	}
}
