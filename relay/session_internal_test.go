package relay

import (
	"context"
	"errors"
	"math"
	"testing"

	"github.com/outboxkit/outboxkit/internal/testenv"
)

func TestLockSpaceKeys(t *testing.T) {
	t.Parallel()
	for _, oid := range []uint32{16384, math.MaxInt32, math.MaxInt32 + 1, math.MaxUint32} {
		s := lockSpace(oid)
		if got := uint32(s.shardKey()); got != oid {
			t.Errorf("oid %d: shard key reads back as classid %d", oid, got)
		}
		k := uint64(s.memberKey(0xdeadbeef))
		if uint32(k>>32) != oid || uint32(k) != 0xdeadbeef {
			t.Errorf("oid %d: member key %#x, want classid %d and objid 0xdeadbeef", oid, k, oid)
		}
	}
}

// TestCheckSessionDetectsMovedSession stands in for a pooler in transaction
// mode, which runs the lock statement on one backend and the next statement
// on another: the member lock is taken on one connection and checked from a
// second. The check must refuse there and pass on the connection that holds
// the lock (a direct connection).
func TestCheckSessionDetectsMovedSession(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := testenv.NewDB(t)
	space, err := resolveLockSpace(ctx, db.Pool)
	if err != nil {
		t.Fatal(err)
	}
	first, err := db.Pool.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer first.Release()
	second, err := db.Pool.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer second.Release()
	const member = 0x8000_0001 // above 2^31: objid is unsigned in pg_locks
	var ok bool
	if err := first.QueryRow(ctx, lockMember, space.memberKey(member)).Scan(&ok); err != nil || !ok {
		t.Fatalf("take member lock: %v %v", ok, err)
	}
	defer first.Exec(ctx, "SELECT pg_advisory_unlock_all()") //nolint:errcheck // test cleanup; closing the pool releases them too
	if _, err := checkSession(ctx, second.Conn(), space, member); !errors.Is(err, ErrUnstableSession) {
		t.Fatalf("check from another backend: want ErrUnstableSession, got %v", err)
	}
	pid, err := checkSession(ctx, first.Conn(), space, member)
	if err != nil {
		t.Fatalf("check from the backend holding the lock: %v", err)
	}
	if want := first.Conn().PgConn().PID(); uint32(pid) != want {
		t.Fatalf("check returned pid %d, want %d", pid, want)
	}
}
