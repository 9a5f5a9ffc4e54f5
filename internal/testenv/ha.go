package testenv

import (
	"bufio"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"
)

// HA is a PostgreSQL primary with a streaming standby, started by
// `scripts/services.sh pg-ha-up` for one test: node 1 starts as the primary,
// node 2 as its standby (physical slot outboxkit_standby; on 17 and later
// it also syncs failover slots).
type HA struct {
	// URL names both nodes with target_session_attrs=read-write, so pgx
	// connects to whichever is the primary, before and after Failover.
	URL string
	// PrimaryURL connects to node 1, the primary until Failover.
	PrimaryURL string
	// StandbyURL connects to node 2, the standby until Failover promotes it.
	StandbyURL string
	// Version is PostgreSQL's major version (PG_VERSION, default 17).
	Version int
	// Mode is "sync" (synchronous_standby_names names the standby) or
	// "async".
	Mode string

	server *server
}

// RequireHA starts a fresh primary and standby pair in mode ("sync" or
// "async"; empty means OUTBOXKIT_HA_MODE, or sync) and registers its
// removal with t.Cleanup. It skips t unless OUTBOXKIT_PG_HA=1, which `make
// failover-tests` sets: the pair has fixed ports, so such tests run alone.
func RequireHA(t testing.TB, mode string) *HA {
	t.Helper()
	if os.Getenv("OUTBOXKIT_PG_HA") != "1" {
		t.Skip("starts a PostgreSQL primary and standby and fails over: runs in `make failover-tests` (OUTBOXKIT_PG_HA=1, part of `make test`), alone")
	}
	if mode == "" {
		mode = os.Getenv("OUTBOXKIT_HA_MODE")
	}
	if mode == "" {
		mode = "sync"
	}
	t.Cleanup(func() {
		if out, err := exec.Command(servicesScript(), "pg-ha-down").CombinedOutput(); err != nil {
			t.Errorf("testenv: services.sh pg-ha-down: %v\n%s", err, out)
		}
	})
	runServices(t, "pg-ha-up", mode)
	h, err := ReadHA()
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	admin, err := h.AdminURL()
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	h.server = &server{admin: func() string { return admin }, start: "make failover-tests"}
	return h
}

// ReadHA describes the pair `scripts/services.sh pg-ha-up` started, from
// pg-ha-env: PrimaryURL and StandbyURL are the nodes' roles at the time of
// the call. The chaos run uses it to run on the pair.
func ReadHA() (*HA, error) {
	out, err := exec.Command(servicesScript(), "pg-ha-env").Output()
	if err != nil {
		return nil, fmt.Errorf("services.sh pg-ha-env: %w", err)
	}
	env := parseExports(string(out))
	h := &HA{URL: env["DATABASE_URL"], PrimaryURL: env["OUTBOXKIT_HA_PRIMARY_URL"], StandbyURL: env["OUTBOXKIT_HA_STANDBY_URL"], Mode: env["OUTBOXKIT_HA_MODE"]}
	if h.Version, err = strconv.Atoi(env["OUTBOXKIT_HA_VERSION"]); err != nil || h.URL == "" || h.PrimaryURL == "" || h.StandbyURL == "" {
		return nil, fmt.Errorf("services.sh pg-ha-env printed an incomplete environment:\n%s", out)
	}
	return h, nil
}

// AdminURL returns the pair as a keyword/value connection string on
// database postgres: the same hosts and target_session_attrs as URL, in a
// form that dbadmin.WithDatabase can point at another database.
func (h *HA) AdminURL() (string, error) {
	hosts := make([]string, 0, 2)
	ports := make([]string, 0, 2)
	var user, pass string
	for _, raw := range []string{h.PrimaryURL, h.StandbyURL} {
		u, err := url.Parse(raw)
		if err != nil {
			return "", fmt.Errorf("parse %s: %w", raw, err)
		}
		hosts, ports = append(hosts, u.Hostname()), append(ports, u.Port())
		user = u.User.Username()
		pass, _ = u.User.Password()
	}
	return fmt.Sprintf("host=%s port=%s user=%s password=%s dbname=postgres sslmode=disable target_session_attrs=read-write",
		strings.Join(hosts, ","), strings.Join(ports, ","), user, pass), nil
}

// NewDB creates a fresh, migrated database on the current primary (from a
// template built there on first use; both replicate to the standby) and
// registers its drop with t.Cleanup. Its URL and pool follow the primary
// across Failover.
func (h *HA) NewDB(t testing.TB) *DB {
	t.Helper()
	return h.server.newDB(t, dropSlots)
}

// PauseReceiver stops the standby's walreceiver (SIGSTOP): the standby
// receives nothing more, and in async mode falls behind the primary's
// commits. Failover then throws away what it has not read.
func (h *HA) PauseReceiver(t testing.TB) {
	t.Helper()
	runServices(t, "pg-ha-pause-receiver")
}

// Failover stops the primary in immediate mode, ends a paused walreceiver
// without letting it read further, promotes the standby, and returns once
// the promoted node accepts writes; it returns how long that took.
func (h *HA) Failover(t testing.TB) time.Duration {
	t.Helper()
	start := time.Now()
	runServices(t, "pg-ha-failover")
	return time.Since(start)
}

// Backup takes a base backup of the current primary (pg_basebackup), kept
// under name for Restore.
func (h *HA) Backup(t testing.TB, name string) {
	t.Helper()
	runServices(t, "pg-ha-backup", name)
}

// Restore puts the database back as backup name holds it, as an operator
// restores from backup: both nodes stop, and the node the backup came from
// starts alone from it as the primary. Commits made after the backup are
// gone; URL reaches the restored node.
func (h *HA) Restore(t testing.TB, name string) {
	t.Helper()
	runServices(t, "pg-ha-restore", name)
}

// servicesScript returns the path of scripts/services.sh in this checkout.
func servicesScript() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..", "scripts", "services.sh")
}

// parseExports reads `export NAME='value'` lines.
func parseExports(out string) map[string]string {
	env := map[string]string{}
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		name, value, ok := strings.Cut(strings.TrimPrefix(strings.TrimSpace(sc.Text()), "export "), "=")
		if ok {
			env[name] = strings.Trim(value, `'"`)
		}
	}
	return env
}
