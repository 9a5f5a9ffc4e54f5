// Package walstream reads outbox events in WAL mode: the logical decoding
// messages that outbox.Emit and the SQL function outbox_emit write
// (docs/wal-format.md), streamed from a replication slot with pgoutput.
//
// [Open] connects with the replication protocol, checks wal_level, creates
// the publication and the permanent slot when they are missing, and starts
// streaming. [Stream.Next] yields committed transactions in commit order,
// each whole, with its events in the order they were emitted. The caller
// calls [Stream.Ack] with a transaction's EndLSN once every event of it is
// published; the position confirmed to the server is the end of the longest
// prefix of acknowledged transactions, so after a crash or a restart the
// stream resumes at the first unacknowledged transaction: duplicates are
// possible, gaps are not.
//
// One goroutine owns the replication connection; Next and Ack may be
// called from other goroutines. The stream never drops a slot.
package walstream
