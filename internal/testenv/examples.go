package testenv

import (
	"fmt"
	"os"
	"strings"
	"sync"
)

// pinned holds what AdminURL and RealKafka answered before ForExamples
// changed the environment.
var pinned struct {
	sync.Mutex
	set       bool
	adminURL  string
	realKafka bool
}

// ForExamples gives a package's Example functions the environment a
// service has: DATABASE_URL names a fresh database with every migration
// applied and, with kafka, KAFKA_BROKERS names the test run's brokers (an
// in-process broker when it was unset). Examples use only outboxkit's public API, so they
// read their configuration from there, as a program would. AdminURL,
// RealKafka and the databases and brokers the package's tests get are the
// same as before the call. TestMain calls it before m.Run and the returned
// cleanup, which drops the database and restores the environment, after.
// It panics when a service is not usable.
func ForExamples(kafka bool) (cleanup func()) {
	admin, realKafka := AdminURL(), RealKafka()
	dbURL, drop := MigratedDBForMain()
	pinned.Lock()
	pinned.set, pinned.adminURL, pinned.realKafka = true, admin, realKafka
	pinned.Unlock()
	restore := []func(){setenv("DATABASE_URL", dbURL)}
	if kafka {
		restore = append(restore, setenv("KAFKA_BROKERS", strings.Join(BrokersForMain(), ",")))
	}
	return func() {
		for _, r := range restore {
			r()
		}
		pinned.Lock()
		pinned.set = false
		pinned.Unlock()
		drop()
	}
}

// setenv sets key to value and returns what restores its earlier state.
func setenv(key, value string) (restore func()) {
	old, had := os.LookupEnv(key)
	if err := os.Setenv(key, value); err != nil {
		panic(fmt.Sprintf("testenv: set %s: %v", key, err))
	}
	return func() {
		if had {
			_ = os.Setenv(key, old)
		} else {
			_ = os.Unsetenv(key)
		}
	}
}

// pinnedAdminURL returns the admin URL ForExamples kept, if it is in force.
func pinnedAdminURL() (string, bool) {
	pinned.Lock()
	defer pinned.Unlock()
	return pinned.adminURL, pinned.set
}

// pinnedRealKafka returns RealKafka's answer ForExamples kept, if it is in
// force.
func pinnedRealKafka() (real, ok bool) {
	pinned.Lock()
	defer pinned.Unlock()
	return pinned.realKafka, pinned.set
}
