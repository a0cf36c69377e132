package bus

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tiercache/tiercache/internal/redistest"
	"github.com/tiercache/tiercache/internal/slots"
)

// spublish SPUBLISHes m on the sharded channel of slot, through the Cluster
// client (which sends it to the slot's master).
func spublish(t *testing.T, ctx context.Context, cc *redis.ClusterClient, slot int, m Message) {
	t.Helper()
	b, err := m.Marshal()
	if err != nil {
		t.Fatalf("Marshal: %v", err)
	}
	if err := cc.SPublish(ctx, slots.Channel(testChannel, slot), b).Err(); err != nil {
		t.Fatalf("SPUBLISH on slot %d: %v", slot, err)
	}
}

// expectKey waits for the next message and checks it names key.
func expectKey(t *testing.T, ctx context.Context, r *recorder, key string) {
	t.Helper()
	m := await(t, ctx, r.msgs, "the message of "+key)
	if len(m.Keys) != 1 || m.Keys[0] != key {
		t.Fatalf("message %+v; want the one of key %q", m, key)
	}
}

// untilHealthyAfterReset waits for a reset, then for the subscriber to be
// healthy, forgetting the health changes in between.
func untilHealthyAfterReset(t *testing.T, ctx context.Context, s *Subscriber, r *recorder) {
	t.Helper()
	await(t, ctx, r.resets, "a reset")
	for !s.Healthy() {
		await(t, ctx, r.health, "healthy again")
	}
	for len(r.health) > 0 {
		<-r.health
	}
}

// TestShardedPubSub runs a sharded subscriber on a real 3-master Cluster:
// it hears SPUBLISH on the channel of every slot, on every master, and not
// the classic channel; its proofs are the PONGs of every master; a killed
// connection, a slot moved by hand, a redis-cli reshard and a slot moved to
// a master added to the cluster each make it reset, resubscribe where the
// slots went, and hear them there.
func TestShardedPubSub(t *testing.T) {
	ctx := testContext(t)
	cl := redistest.StartCluster(t)
	cc := cl.Client(t)
	r := newRecorder()
	opts := r.options()
	opts.Sharded = true
	opts.MaxStaleness = testMaxStaleness
	s := newSub(t, cc, r, opts)
	got := proofs(s)
	startSub(t, ctx, s, r)

	// A slot of every master, and the first and last slots.
	probe := []int{0, 5460, 5461, 10922, 10923, 16383, slots.Of("users:42")}

	t.Run("Steady", func(t *testing.T) {
		for _, sl := range probe {
			spublish(t, ctx, cc, sl, Message{Keyspace: "users", Keys: []string{strconv.Itoa(sl)}})
			expectKey(t, ctx, r, strconv.Itoa(sl))
		}
		// A classic PUBLISH reaches no sharded subscriber.
		b, _ := Message{Keyspace: "users", Keys: []string{"classic"}}.Marshal()
		if err := cc.Publish(ctx, testChannel, b).Err(); err != nil {
			t.Fatal(err)
		}
		spublish(t, ctx, cc, 7, Message{Keyspace: "users", Keys: []string{"after"}})
		expectKey(t, ctx, r, "after")
		// Proofs keep coming from the masters' PONGs.
		at := awaitProof(t, ctx, got, s.mono())
		awaitProof(t, ctx, got, at)
		if st := s.Stats(); !st.Healthy || st.Reconnects != 0 || st.Resets != 1 || st.Malformed != 0 {
			t.Fatalf("Stats = %+v; want healthy, one reset, no reconnect", st)
		}
	})

	t.Run("ConnectionKilled", func(t *testing.T) {
		admin := cl.Nodes[1].Client(t)
		if err := admin.Do(ctx, "CLIENT", "KILL", "TYPE", "pubsub").Err(); err != nil {
			t.Fatal(err)
		}
		untilHealthyAfterReset(t, ctx, s, r)
		if st := s.Stats(); st.Reconnects != 1 {
			t.Fatalf("Reconnects = %d; want 1", st.Reconnects)
		}
		spublish(t, ctx, cc, 5461, Message{Keyspace: "users", Keys: []string{"killed"}})
		expectKey(t, ctx, r, "killed")
	})

	t.Run("SlotMigration", func(t *testing.T) {
		const moved = 100 // from Nodes[0] to Nodes[2]
		spublish(t, ctx, cc, moved, Message{Keyspace: "users", Keys: []string{"before"}})
		expectKey(t, ctx, r, "before")
		if err := cl.MoveSlot(ctx, moved, 2); err != nil {
			t.Fatal(err)
		}
		untilHealthyAfterReset(t, ctx, s, r)
		if st := s.Stats(); st.Reconnects < 2 {
			t.Fatalf("Reconnects = %d; want at least 2", st.Reconnects)
		}
		// go-redis follows the MOVED to the new master.
		spublish(t, ctx, cc, moved, Message{Keyspace: "users", Keys: []string{"moved"}})
		expectKey(t, ctx, r, "moved")
	})

	t.Run("Reshard", func(t *testing.T) {
		before := s.Stats().Reconnects
		if err := cl.Reshard(ctx, 1, 0, 20); err != nil {
			t.Fatal(err)
		}
		untilHealthyAfterReset(t, ctx, s, r)
		for !s.Healthy() || s.Stats().Reconnects == before {
			await(t, ctx, r.health, "healthy after the reshard")
		}
		// Every slot is heard where it now is.
		for _, sl := range probe {
			key := "resharded" + strconv.Itoa(sl)
			spublish(t, ctx, cc, sl, Message{Keyspace: "users", Keys: []string{key}})
			for {
				m := await(t, ctx, r.msgs, "the message of "+key)
				if len(m.Keys) == 1 && m.Keys[0] == key {
					break
				}
				if !strings.HasPrefix(m.Keys[0], "resharded") {
					t.Fatalf("unexpected message %+v", m)
				}
			}
		}
	})

	t.Run("NodeAdded", func(t *testing.T) {
		const moved = 7
		added, err := cl.AddMaster(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := cl.MoveSlot(ctx, moved, added); err != nil {
			t.Fatal(err)
		}
		untilHealthyAfterReset(t, ctx, s, r)
		for !s.Healthy() {
			await(t, ctx, r.health, "healthy after the slot moved to the new master")
		}
		ch := slots.Channel(testChannel, moved)
		n, err := cl.Nodes[added].Client(t).PubSubShardNumSub(ctx, ch).Result()
		if err != nil || n[ch] != 1 {
			t.Fatalf("PUBSUB SHARDNUMSUB %s on the new master = %v, %v; want 1", ch, n, err)
		}
		spublish(t, ctx, cc, moved, Message{Keyspace: "users", Keys: []string{"on the new master"}})
		expectKey(t, ctx, r, "on the new master")
	})
}

func TestShardedOptions(t *testing.T) {
	srv := redistest.Start(t)
	if _, err := NewSubscriber(srv.Client(t), Options{Channel: "c", Handler: func(Message) {}, Sharded: true}); err == nil || !strings.Contains(err.Error(), "ClusterClient") {
		t.Errorf("Sharded on a plain client: err = %v; want one naming ClusterClient", err)
	}
	cc := redis.NewClusterClient(&redis.ClusterOptions{Addrs: []string{srv.Addr}})
	defer cc.Close()
	if _, err := NewSubscriber(cc, Options{Channel: "c{x}", Handler: func(Message) {}, Sharded: true}); err == nil || !strings.Contains(err.Error(), "'{'") {
		t.Errorf("Sharded with a channel holding '{': err = %v; want a refusal", err)
	}
}

func TestOwnSlots(t *testing.T) {
	nodes := "a 127.0.0.1:1@2 master - 0 0 1 connected 5461-10922\n" +
		"b 127.0.0.1:3@4 myself,master - 0 0 2 connected 0-99 200 [300->-a] [301-<-a] 400-401\n"
	got, err := ownSlots(nodes)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 103 || got[0] != 0 || got[99] != 99 || got[100] != 200 || got[101] != 400 || got[102] != 401 {
		t.Fatalf("ownSlots = %v", got)
	}
	for _, bad := range []string{
		"b 127.0.0.1:3@4 myself,slave a 0 0 2 connected\n",
		"b 127.0.0.1:3@4 myself,master - 0 0 2 connected 5-3\n",
		"b 127.0.0.1:3@4 myself,master - 0 0 2 connected 16384\n",
		"b 127.0.0.1:3@4 master - 0 0 2 connected 1\n",
	} {
		if s, err := ownSlots(bad); err == nil {
			t.Errorf("ownSlots(%q) = %v; want an error", bad, s)
		}
	}
}

// BenchmarkShardedSubscriptionMemory measures what a sharded subscription
// costs Redis: the growth of used_memory, summed over the masters of a
// 3-master Cluster, when 4 subscriptions to every slot's channel are
// opened and confirmed, per subscription (redis-bytes/sub). A replica with
// pubsub_mode sharded holds one such subscription.
func BenchmarkShardedSubscriptionMemory(b *testing.B) {
	const per = 4
	ctx := context.Background()
	cl := redistest.StartCluster(b)
	cc := cl.Client(b)
	used := func() int64 {
		var sum int64
		for _, n := range cl.Nodes {
			c := redis.NewClient(n.Options())
			info, err := c.Info(ctx, "memory").Result()
			c.Close()
			if err != nil {
				b.Fatal(err)
			}
			for line := range strings.Lines(info) {
				if v, ok := strings.CutPrefix(strings.TrimSpace(line), "used_memory:"); ok {
					x, err := strconv.ParseInt(v, 10, 64)
					if err != nil {
						b.Fatal(err)
					}
					sum += x
				}
			}
		}
		return sum
	}
	var total int64
	for b.Loop() {
		before := used()
		var subs []*ShardedSubscription
		for range per {
			s, err := SubscribeSharded(ctx, cc, testChannel, 10*time.Second)
			if err != nil {
				b.Fatal(err)
			}
			subs = append(subs, s)
			for confirmed := false; !confirmed; {
				v, err := s.ReceiveTimeout(ctx, 10*time.Second)
				if err != nil {
					b.Fatal(err)
				}
				_, confirmed = v.(*redis.Subscription)
			}
		}
		total += used() - before
		for _, s := range subs {
			s.Close()
		}
	}
	b.ReportMetric(float64(total)/float64(b.N*per), "redis-bytes/sub")
}
