package relay

import "time"

// SetMetadataTTL shortens the kafka-go client's metadata cache, so a test
// sees a topic created while the relay runs sooner.
func SetMetadataTTL(cfg *Config, d time.Duration) { cfg.metadataTTL = d }

// SetWALPieceBytes sets the size beyond which the WAL stream delivers a
// transaction in pieces (walstream.Config.PieceBytes).
func SetWALPieceBytes(cfg *Config, n int) { cfg.walPieceBytes = n }

// WALHeldBytes is about the memory WAL mode's pending events hold now:
// the unresolved events' bytes and every kept entry.
func WALHeldBytes(r *Relay) int64 { return r.walHeld.Load() }
