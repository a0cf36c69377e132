package catalog

import (
	"context"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

// PubSubKillWindow is the longest window on each side of the kill over which
// PubSubKill compares L1 hit ratios.
const PubSubKillWindow = 5 * time.Second

// PubSubKill is what a CLIENT KILL TYPE pubsub in the middle of the run with
// the cache did (DemoOptions.KillPubSubAt): every replica lost its
// subscription at once, and subscribed again.
type PubSubKill struct {
	// At is when the kill was sent, from the start of the load.
	At time.Duration `json:"at_ns"`
	// Killed counts the connections Redis closed.
	Killed int64 `json:"killed"`
	// Window is the length of the window before the kill:
	// PubSubKillWindow, or less when the run leaves less on one side.
	Window time.Duration `json:"window_ns"`
	// WindowAfter is the length of the window after it: Window, or less
	// when the load ended first (its reads end there too).
	WindowAfter time.Duration `json:"window_after_ns"`
	// Before and After are the reads (product pages and listings, every
	// replica) in the window before the kill and in the window after.
	Before TierStats `json:"before"`
	After  TierStats `json:"after"`
	// Resubscriptions counts the replicas' subscriptions confirmed again
	// (bus reconnections) in the window after the kill, and Replays those
	// answered by reading what they missed back from Redis, their L1 kept
	// (tiercache.ReplayStats); the others flushed their L1.
	Resubscriptions uint64 `json:"resubscriptions"`
	Replays         uint64 `json:"replays"`
	// Err says why the kill could not be measured, if it could not.
	Err string `json:"err,omitempty"`
}

// Retained is the L1 hit ratio after the kill as a share of the one
// before; 0 when nothing was read before.
func (k PubSubKill) Retained() float64 {
	if b := k.Before.L1Ratio(); b > 0 {
		return k.After.L1Ratio() / b
	}
	return 0
}

// String says what the kill did, in one line.
func (k PubSubKill) String() string {
	if k.Err != "" {
		return "CLIENT KILL TYPE pubsub: not measured: " + k.Err
	}
	return fmt.Sprintf("CLIENT KILL TYPE pubsub at %.1fs (%d connections): L1 hit ratio %.1f%% in the %v before, %.1f%% in the %v after (%.0f%% of before); %d resubscriptions, %d of them replayed (L1 kept), the others flushed",
		k.At.Seconds(), k.Killed, 100*k.Before.L1Ratio(), k.Window, 100*k.After.L1Ratio(), k.WindowAfter.Round(time.Millisecond), 100*k.Retained(), k.Resubscriptions, k.Replays)
}

// snapshot sums the product and listing reads of every replica, their
// resubscriptions and their replays.
func (l *load) snapshot() (t TierStats, resubs, replays uint64) {
	for _, r := range l.replicas {
		st := r.Service().Cache().Stats()
		resubs += st.Bus.Reconnects
		replays += st.Replay.Replays
		for _, ks := range []string{KeyspaceProduct, KeyspaceCategory} {
			k := st.Keyspaces[ks]
			t.L1Hits += k.L1Hits
			t.L2Hits += k.L2Hits
			t.Misses += k.Misses
			t.Loads += k.Loads
		}
	}
	return t, resubs, replays
}

func (t TierStats) minus(u TierStats) TierStats {
	t.L1Hits -= u.L1Hits
	t.L2Hits -= u.L2Hits
	t.Misses -= u.Misses
	t.Loads -= u.Loads
	return t
}

// killPubSub kills every pub/sub connection of the Redis at addr at
// opts.KillPubSubAt into the load (started at l.start), and measures the
// windows around it. When done is closed (the load ended) before the kill,
// it says so; after it, the window after ends there.
func (l *load) killPubSub(ctx context.Context, addr string, done <-chan struct{}) *PubSubKill {
	at := l.opts.KillPubSubAt
	k := &PubSubKill{At: at, Window: min(PubSubKillWindow, at, max(l.opts.Duration-at, 0))}
	if k.Window <= 0 {
		k.Err = fmt.Sprintf("the kill at %v leaves no window in a run of %v", at, l.opts.Duration)
		return k
	}
	// wait reports whether the time until came before the load ended.
	wait := func(until time.Duration) bool {
		t := time.NewTimer(time.Until(l.start.Add(until)))
		defer t.Stop()
		select {
		case <-t.C:
			return true
		case <-done:
		case <-ctx.Done():
		}
		return false
	}
	if !wait(at - k.Window) {
		k.Err = "the load ended first"
		return k
	}
	from, _, _ := l.snapshot()
	if !wait(at) {
		k.Err = "the load ended first"
		return k
	}
	mid, resubs, replays := l.snapshot()
	admin := redis.NewClient(&redis.Options{Addr: addr})
	defer admin.Close()
	n, err := admin.ClientKillByFilter(ctx, "TYPE", "pubsub").Result()
	if err != nil {
		k.Err = err.Error()
		return k
	}
	k.Killed = n
	killed := time.Now()
	// The window after ends at its length, or with the load: a load that
	// ends at the same moment (a run of at + Window) reads nothing more.
	wait(at + k.Window)
	k.WindowAfter = min(time.Since(killed), k.Window)
	end, resubs2, replays2 := l.snapshot()
	k.Before, k.After = mid.minus(from), end.minus(mid)
	k.Resubscriptions, k.Replays = resubs2-resubs, replays2-replays
	return k
}
