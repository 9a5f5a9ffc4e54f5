package migrations

// LaterMigrationVersions lists the versions laterMigrations probes.
func LaterMigrationVersions() []int64 {
	out := make([]int64, len(laterMigrations))
	for i, m := range laterMigrations {
		out[i] = m.version
	}
	return out
}
