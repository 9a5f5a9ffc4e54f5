package relay

import (
	"sort"
	"sync"
)

// shardHandle tracks one owned shard while its lock is held.
type shardHandle struct {
	shard   int
	lane    *lane
	stop    chan struct{} // closed to release the shard
	stopped bool
	done    chan struct{} // closed once its lane no longer touches the shard
}

// shardSet is what one session owns: a handle per shard whose lock it holds,
// each shard served by lane shard % len(lanes). Releasing a shard takes two
// steps (docs/design.md §2.2): shed asks its lane to let go, and finished,
// on a later round, hands it back for unlocking once the lane has. Only the
// session's rebalance loop changes the set; the poller reads it.
type shardSet struct {
	lanes []*lane

	mu      sync.Mutex
	handles map[int]*shardHandle
}

func newShardSet(lanes []*lane) *shardSet {
	return &shardSet{lanes: lanes, handles: map[int]*shardHandle{}}
}

// owned returns the shards the poller should look at: those not being
// released whose lane is not draining (a draining lane reads again without
// a wake-up). skipped says whether it left out any shard for that reason.
func (s *shardSet) owned() (out []int16, skipped bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	out = make([]int16, 0, len(s.handles))
	for shard, h := range s.handles {
		if h.stopped {
			continue
		}
		if h.lane.draining.Load() {
			skipped = true
			continue
		}
		out = append(out, int16(shard))
	}
	return out, skipped
}

// wake tells the lane of shard that the shard has pending events.
func (s *shardSet) wake(shard int) { s.lanes[shard%len(s.lanes)].pokeShard(shard) }

// finished forgets the shards whose lanes have let go of them and returns
// them: their locks can be released now.
func (s *shardSet) finished() []int {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []int
	for shard, h := range s.handles {
		if !h.stopped {
			continue
		}
		select {
		case <-h.done:
			out = append(out, shard)
		default:
		}
	}
	for _, shard := range out {
		delete(s.handles, shard)
	}
	return out
}

// shed asks the lanes to let go of the active shards above target, the
// highest first, and returns how many stay active.
func (s *shardSet) shed(target int) (active int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var shards []int
	for shard, h := range s.handles {
		if !h.stopped {
			shards = append(shards, shard)
		}
	}
	sort.Ints(shards)
	active = len(shards)
	for i := len(shards) - 1; active > target && i >= 0; i-- {
		h := s.handles[shards[i]]
		h.stopped = true
		close(h.stop)
		h.lane.poke()
		active--
	}
	return active
}

// candidates returns the shards the set has no handle for (neither active
// nor being released), starting at shard start and wrapping around, so
// that instances starting together try different shards first.
func (s *shardSet) candidates(start int) []int32 {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]int32, 0, NumShards)
	for i := 0; i < NumShards; i++ {
		shard := (start + i) % NumShards
		if _, ok := s.handles[shard]; !ok {
			out = append(out, int32(shard))
		}
	}
	return out
}

// take adds shards whose locks were just taken and hands each to its lane.
func (s *shardSet) take(shards []int32) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, shard := range shards {
		l := s.lanes[int(shard)%len(s.lanes)]
		h := &shardHandle{shard: int(shard), lane: l, stop: make(chan struct{}), done: make(chan struct{})}
		s.handles[int(shard)] = h
		l.add(h)
	}
}
