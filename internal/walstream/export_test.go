package walstream

// PendingLen is how many transactions the stream keeps for its confirmed
// position: handed out and not yet confirmed, runs of acknowledged ones
// collapsed.
func PendingLen(s *Stream) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.pending)
}
