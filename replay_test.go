package tiercache_test

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/vmihailenco/msgpack/v5"

	"github.com/tiercache/tiercache"
	"github.com/tiercache/tiercache/internal/redistest"
)

// replayConfig is the Config of the replay tests: no presence or audit
// traffic, and a max_staleness long enough that the bus stays proven (and
// L1 on) on a loaded machine.
func replayConfig() tiercache.Config {
	return tiercache.Config{HeartbeatInterval: -1, AuditRate: -1, MaxStaleness: time.Minute}
}

// replayKeys is how many keys the replay tests put in a replica's L1.
const replayKeys = 20

// replayReplica is a replica with keyspace "users" whose L1 holds keys
// 0..replayKeys-1, loaded as "v0-<key>".
type replayReplica struct {
	*replica
	users *tiercache.Keyspace[int, string]
}

func newReplayReplica(t *testing.T, client redis.UniversalClient, cfg tiercache.Config) replayReplica {
	t.Helper()
	r := newReplicaOn(t, client, cfg)
	users, err := tiercache.NewKeyspace[int, string](r.c, "users", tiercache.KeyspaceConfig{})
	if err != nil {
		t.Fatal(err)
	}
	return replayReplica{replica: r, users: users}
}

// fill loads every key into L1.
func (r replayReplica) fill(t *testing.T) {
	t.Helper()
	load := func(_ context.Context, k int) (string, error) { return fmt.Sprintf("v0-%d", k), nil }
	for k := range replayKeys {
		if _, err := r.users.GetOrLoad(t.Context(), k, load); err != nil {
			t.Fatal(err)
		}
	}
	r.users.Wait()
	for k := range replayKeys {
		if _, ok := tiercache.L1Deadline(r.users, k); !ok {
			t.Fatalf("L1 does not hold key %d after its load", k)
		}
	}
}

// inL1 counts the keys L1 still holds.
func (r replayReplica) inL1() int {
	r.users.Wait()
	n := 0
	for k := range replayKeys {
		if _, ok := tiercache.L1Deadline(r.users, k); ok {
			n++
		}
	}
	return n
}

// get reads key and fails t unless it is want.
func (r replayReplica) get(t *testing.T, key int, want string) {
	t.Helper()
	got, err := r.users.Get(t.Context(), key)
	if err != nil || got != want {
		t.Fatalf("Get(%d) = %q, %v; want %q", key, got, err, want)
	}
}

// lostWriter returns a replica of the same namespace whose invalidations
// go to a channel nobody listens to: every write it makes is numbered in
// the namespace's log, and its message is lost for every other replica.
func lostWriter(t *testing.T, client redis.UniversalClient, cfg tiercache.Config) replayReplica {
	t.Helper()
	cfg.Channel = "tiercache:nobody-listens"
	return newReplayReplica(t, client, cfg)
}

// TestSequenceGap checks that a replica that receives a message whose
// number jumps past the next one reads the messages it skipped back from
// the log, applies them and keeps the rest of its L1; and that when the
// log no longer holds them, it flushes its L1 instead.
func TestSequenceGap(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	cfg := replayConfig()
	// B finds gaps by the numbers of the messages it receives only.
	arrivals := cfg
	arrivals.Replay.CheckInterval = -1
	b := newReplayReplica(t, srv.Client(t), arrivals)
	a := newReplayReplica(t, srv.Client(t), cfg)
	lost := lostWriter(t, srv.Client(t), cfg)
	b.fill(t)
	ctx := t.Context()

	t.Run("ReadBack", func(t *testing.T) {
		before := b.c.Stats().Replay
		if err := lost.users.Set(ctx, 1, "v1-1"); err != nil { // B never hears of it
			t.Fatal(err)
		}
		b.get(t, 1, "v0-1") // stale: nothing told B yet
		if err := a.users.Set(ctx, 2, "v1-2"); err != nil {
			t.Fatal(err)
		}
		b.waitKeys(t, "users", "2")
		b.get(t, 1, "v1-1")
		b.get(t, 2, "v1-2")
		st := b.c.Stats().Replay
		if st.SequenceGaps != before.SequenceGaps+1 || st.Replayed < before.Replayed+1 || st.Flushes != before.Flushes {
			t.Fatalf("replay stats %+v, before %+v; want one gap, its message replayed, no flush", st, before)
		}
		if n := b.inL1(); n < replayKeys-2 {
			t.Fatalf("L1 holds %d of %d keys after the gap; want all but the two written", n, replayKeys)
		}
	})

	t.Run("LastMessageLost", func(t *testing.T) {
		// No later message reveals this one: the head check finds it.
		checked := cfg
		checked.Replay.CheckInterval = 50 * time.Millisecond
		b := newReplayReplica(t, srv.Client(t), checked)
		b.fill(t)
		before := b.c.Stats().Replay
		if err := lost.users.Set(ctx, 5, "v1-5"); err != nil {
			t.Fatal(err)
		}
		b.waitKeys(t, "users", "5")
		st := b.c.Stats().Replay
		if st.SequenceGaps != before.SequenceGaps+1 || st.Replayed < before.Replayed+1 || st.Flushes != before.Flushes {
			t.Fatalf("replay stats %+v, before %+v; want one gap, its message replayed, no flush", st, before)
		}
		if n := b.inL1(); n != replayKeys-1 {
			t.Fatalf("L1 holds %d of %d keys; want all but the one written", n, replayKeys)
		}
		b.get(t, 5, "v1-5")
	})

	t.Run("FallbackFlush", func(t *testing.T) {
		b.fill(t)
		before := b.c.Stats().Replay
		if err := lost.users.Set(ctx, 3, "v1-3"); err != nil {
			t.Fatal(err)
		}
		// The log trimmed before B could read it back (as past
		// replay.max_count or max_age).
		if err := srv.Client(t).Del(ctx, "tiercache::log").Err(); err != nil {
			t.Fatal(err)
		}
		if err := a.users.Set(ctx, 4, "v1-4"); err != nil {
			t.Fatal(err)
		}
		b.waitKeys(t, "users", "4")
		st := b.c.Stats().Replay
		if st.SequenceGaps != before.SequenceGaps+1 || st.Flushes != before.Flushes+1 {
			t.Fatalf("replay stats %+v, before %+v; want one gap answered with a flush", st, before)
		}
		if n := b.inL1(); n != 0 {
			t.Fatalf("L1 holds %d keys after a gap the log could not fill; want a flush", n)
		}
		b.get(t, 3, "v1-3")
	})
}

// TestReplay checks that after CLIENT KILL TYPE pubsub a replica reads back
// from the log what it missed and keeps the rest of its L1, and that it
// flushes when the log no longer reaches back to its position.
func TestReplay(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	admin := srv.Client(t)
	ctx := t.Context()
	cfg := replayConfig()

	kill := func(t *testing.T, b replayReplica) {
		t.Helper()
		if err := admin.ClientKillByFilter(ctx, "TYPE", "pubsub").Err(); err != nil {
			t.Fatal(err)
		}
		b.waitFor(t, func(inv tiercache.Invalidation) bool { return inv.Reset })
	}

	t.Run("KeepsL1", func(t *testing.T) {
		b := newReplayReplica(t, srv.Client(t), cfg)
		lost := lostWriter(t, srv.Client(t), cfg)
		b.fill(t)
		if err := lost.users.Set(ctx, 1, "v1-1"); err != nil {
			t.Fatal(err)
		}
		before := b.c.Stats().Replay
		kill(t, b)
		st := b.c.Stats().Replay
		if st.Replays != before.Replays+1 || st.Replayed < before.Replayed+1 || st.Flushes != before.Flushes {
			t.Fatalf("replay stats %+v, before %+v; want the reconnection replayed, no flush", st, before)
		}
		if n := b.inL1(); n != replayKeys-1 {
			t.Fatalf("L1 holds %d of %d keys after the reconnection; want all but the one written", n, replayKeys)
		}
		b.get(t, 1, "v1-1")
		if bs := b.c.Stats().Bus; bs.Reconnects == 0 {
			t.Fatalf("bus stats %+v: no reconnection", bs)
		}
	})

	t.Run("FallbackFlush", func(t *testing.T) {
		b := newReplayReplica(t, srv.Client(t), cfg)
		small := cfg
		small.Replay.MaxCount = 2
		lost := lostWriter(t, srv.Client(t), small)
		b.fill(t)
		// Redis trims a stream by whole nodes (at most 100 messages or
		// 4 KB each): 300 messages on a log of 2 drop the first ones.
		for i := range 300 {
			if err := lost.users.Set(ctx, i%replayKeys, "v2"); err != nil {
				t.Fatal(err)
			}
		}
		before := b.c.Stats().Replay
		kill(t, b)
		st := b.c.Stats().Replay
		if st.Flushes != before.Flushes+1 || st.Replays != before.Replays {
			t.Fatalf("replay stats %+v, before %+v; want a flush", st, before)
		}
		if n := b.inL1(); n != 0 {
			t.Fatalf("L1 holds %d keys after a reconnection the log could not cover; want a flush", n)
		}
		b.get(t, 0, "v2")
	})

	t.Run("Unreadable", func(t *testing.T) {
		// A message of a newer version may have named anything: no log
		// read can stand for it.
		b := newReplayReplica(t, srv.Client(t), cfg)
		b.fill(t)
		v2, err := msgpack.Marshal(map[string]any{"v": 2, "ks": "users", "k": []string{"1"}})
		if err != nil {
			t.Fatal(err)
		}
		before := b.c.Stats().Replay
		if err := admin.Publish(ctx, "tiercache:invalidate", v2).Err(); err != nil {
			t.Fatal(err)
		}
		b.waitFor(t, func(inv tiercache.Invalidation) bool { return inv.Reset })
		if st := b.c.Stats().Replay; st.Flushes != before.Flushes+1 || st.Unnumbered {
			t.Fatalf("replay stats %+v, before %+v; want a flush", st, before)
		}
		if n := b.inL1(); n != 0 {
			t.Fatalf("L1 holds %d keys after an unreadable message; want a flush", n)
		}
	})

	t.Run("Unnumbered", func(t *testing.T) {
		b := newReplayReplica(t, srv.Client(t), cfg)
		off := cfg
		off.Replay.MaxCount = -1
		old := newReplayReplica(t, srv.Client(t), off) // a publisher that numbers nothing
		b.fill(t)
		if err := old.users.Set(ctx, 1, "v3"); err != nil {
			t.Fatal(err)
		}
		b.waitKeys(t, "users", "1")
		if !b.c.Stats().Replay.Unnumbered {
			t.Fatal("an unnumbered message went unnoticed")
		}
		before := b.c.Stats().Replay
		kill(t, b)
		if st := b.c.Stats().Replay; st.Flushes != before.Flushes+1 || st.Replays != before.Replays {
			t.Fatalf("replay stats %+v, before %+v; want a flush", st, before)
		}
		if n := b.inL1(); n != 0 {
			t.Fatalf("L1 holds %d keys after a reconnection with an unnumbered publisher about; want a flush", n)
		}
	})
}

// TestReplayCluster checks replay on a Cluster with sharded pub/sub, where
// each hash slot has its log: after CLIENT KILL TYPE pubsub on every
// master, a replica reads back from the slots' logs what it missed and
// keeps the rest of its L1.
func TestReplayCluster(t *testing.T) {
	t.Parallel()
	cl := redistest.StartCluster(t)
	cfg := replayConfig()
	// A resubscription reads the heads of 16384 logs: under the race
	// detector on a busy machine, that can take most of a second.
	cfg.ReadTimeout = 5 * time.Second
	b := newReplayReplica(t, cl.Client(t), cfg)
	lost := lostWriter(t, cl.Client(t), cfg)
	if b.c.PubSubMode() != tiercache.PubSubSharded {
		t.Fatalf("pub/sub mode %q; want sharded", b.c.PubSubMode())
	}
	b.fill(t)
	ctx := t.Context()
	for _, k := range []int{1, 2, 3} {
		if err := lost.users.Set(ctx, k, fmt.Sprintf("v1-%d", k)); err != nil {
			t.Fatal(err)
		}
	}
	before := b.c.Stats().Replay
	for _, n := range cl.Nodes {
		admin := newPlainClient(n.Options())
		err := admin.ClientKillByFilter(ctx, "TYPE", "pubsub").Err()
		admin.Close()
		if err != nil {
			t.Fatal(err)
		}
	}
	b.waitFor(t, func(inv tiercache.Invalidation) bool { return inv.Reset })
	st := b.c.Stats().Replay
	if st.Replays < before.Replays+1 || st.Replayed < before.Replayed+3 || st.Flushes != before.Flushes {
		t.Fatalf("replay stats %+v, before %+v; want the reconnection replayed, no flush", st, before)
	}
	if n := b.inL1(); n != replayKeys-3 {
		t.Fatalf("L1 holds %d of %d keys after the reconnection; want all but the three written", n, replayKeys)
	}
	for _, k := range []int{1, 2, 3} {
		b.get(t, k, fmt.Sprintf("v1-%d", k))
	}
}

// TestReplayDocumentedScript runs the script docs/wire-format.md gives other
// services to publish through the log, as printed: its messages are
// numbered in the namespace's log, so a replica that receives one stays
// able to replay, and a replica that misses one reads it back.
func TestReplayDocumentedScript(t *testing.T) {
	t.Parallel()
	doc, err := os.ReadFile("docs/wire-format.md")
	if err != nil {
		t.Fatal(err)
	}
	_, after, ok := strings.Cut(string(doc), "### Publishing from another service")
	if !ok {
		t.Fatal("docs/wire-format.md has no section on publishing from another service")
	}
	_, after, ok = strings.Cut(after, "```lua\n")
	script, _, ok2 := strings.Cut(after, "```")
	if !ok || !ok2 {
		t.Fatal("docs/wire-format.md gives no Lua script to publish through the log")
	}
	srv := redistest.Start(t)
	cfg := replayConfig()
	arrivals := cfg
	arrivals.Replay.CheckInterval = -1 // the later message reveals the gap
	b := newReplayReplica(t, srv.Client(t), arrivals)
	a := newReplayReplica(t, srv.Client(t), cfg)
	b.fill(t)
	ctx := t.Context()
	admin := srv.Client(t)
	publish := func(t *testing.T, channel string, key int) {
		t.Helper()
		msg, err := msgpack.Marshal(map[string]any{"v": 1, "o": "other-service", "ks": "users", "k": []string{fmt.Sprint(key)}})
		if err != nil {
			t.Fatal(err)
		}
		if err := admin.Eval(ctx, script, []string{"tiercache::seq", "tiercache::log"}, channel, msg).Err(); err != nil {
			t.Fatalf("the documented script: %v", err)
		}
	}

	publish(t, "tiercache:invalidate", 1)
	b.waitKeys(t, "users", "1")
	if st := b.c.Stats().Replay; st.Unnumbered || st.SequenceGaps != 0 {
		t.Fatalf("replay stats %+v after the documented script; want its message numbered next", st)
	}

	// Missed: read back at the next message's jump.
	publish(t, "tiercache:nobody-listens", 2)
	if err := a.users.Set(ctx, 3, "v1-3"); err != nil {
		t.Fatal(err)
	}
	b.waitKeys(t, "users", "3")
	if st := b.c.Stats().Replay; st.Unnumbered || st.SequenceGaps != 1 || st.Replayed == 0 || st.Flushes != 1 {
		t.Fatalf("replay stats %+v; want one gap, read back, and no flush but the first subscription's", st)
	}
	b.users.Wait()
	if _, ok := tiercache.L1Deadline(b.users, 2); ok {
		t.Fatal("L1 still holds key 2, whose invalidation was read back from the log")
	}
}
