package relay

import "time"

// SetMetadataTTL shortens the kafka-go client's metadata cache, so a test
// sees a topic created while the relay runs sooner.
func SetMetadataTTL(cfg *Config, d time.Duration) { cfg.metadataTTL = d }
