package tiercache_test

import (
	"context"
	"errors"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tiercache/tiercache"
	"github.com/tiercache/tiercache/internal/redistest"
)

// TestPresenceRecordLifecycle: a replica's record is in Redis once Start
// returns, with its identity, a TTL of three heartbeats and its stats;
// WritePresence refreshes the stats; Stop removes it.
func TestPresenceRecordLifecycle(t *testing.T) {
	srv := redistest.Start(t)
	ctx := context.Background()
	const interval = time.Hour // the ticker never fires here: WritePresence does
	a := newReplica(t, srv, tiercache.Config{InstanceID: "replica-a", HeartbeatInterval: interval})
	ks, _ := tiercache.NewKeyspace[string, string](a.c, "pres", tiercache.KeyspaceConfig{})

	rs, err := tiercache.ListReplicas(ctx, a.client, "")
	if err != nil {
		t.Fatal(err)
	}
	if len(rs) != 1 {
		t.Fatalf("ListReplicas = %d records; want 1", len(rs))
	}
	host, _ := os.Hostname()
	r := rs[0]
	if r.ID != "replica-a" || r.Namespace != tiercache.DefaultNamespace || r.Host != host || r.PID != os.Getpid() ||
		!r.BusHealthy || r.Breaker != "closed" || r.Interval != interval || r.Version == "" || r.Started.IsZero() {
		t.Errorf("record after Start = %+v; want replica-a of this process, healthy, closed", r)
	}
	ttl, err := a.client.PTTL(ctx, tiercache.PresenceKey("", "replica-a")).Result()
	if err != nil {
		t.Fatal(err)
	}
	if ttl <= 2*interval || ttl > 3*interval {
		t.Errorf("record TTL = %v; want three heartbeats (%v)", ttl, 3*interval)
	}

	var loads atomic.Int64
	if _, err := ks.GetOrLoad(ctx, "k", countingLoader(&loads, func(k string) string { return k })); err != nil {
		t.Fatal(err)
	}
	ks.Wait()
	if _, err := ks.Get(ctx, "k"); err != nil {
		t.Fatal(err)
	}
	if err := a.c.WritePresence(ctx); err != nil {
		t.Fatal(err)
	}
	rs, err = tiercache.ListReplicas(ctx, a.client, "")
	if err != nil || len(rs) != 1 {
		t.Fatalf("ListReplicas = %v, %v; want one record", rs, err)
	}
	r = rs[0]
	got := r.Stats.Keyspaces["pres"]
	if got.L1Hits != 1 || got.Loads != 1 || r.L1Entries != 1 || r.L1Cost <= 0 || r.HitRatio != 0.5 || r.LastInvalidation.IsZero() {
		t.Errorf("record after one load and one hit: L1Hits %d, Loads %d, L1Entries %d, L1Cost %d, HitRatio %v, LastInvalidation %v",
			got.L1Hits, got.Loads, r.L1Entries, r.L1Cost, r.HitRatio, r.LastInvalidation)
	}

	if err := a.c.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if n, err := a.client.Exists(ctx, tiercache.PresenceKey("", "replica-a")).Result(); err != nil || n != 0 {
		t.Errorf("record after Stop: exists %d, %v; want gone", n, err)
	}
	if err := a.c.WritePresence(ctx); !errors.Is(err, tiercache.ErrClosed) {
		t.Errorf("WritePresence after Stop = %v; want ErrClosed", err)
	}
}

// TestPresenceHeartbeatTicks: the heartbeat rewrites the record every
// interval, counted by a hook, not waited for by sleeping.
func TestPresenceHeartbeatTicks(t *testing.T) {
	srv := redistest.Start(t)
	beats := make(chan error, 16)
	r := newReplica(t, srv, tiercache.Config{HeartbeatInterval: 10 * time.Millisecond}, tiercache.WithBeatHook(func(err error) {
		select {
		case beats <- err:
		default:
		}
	}))
	timer := time.NewTimer(waitTimeout)
	defer timer.Stop()
	for i := range 3 { // Start's write, then two ticks
		select {
		case err := <-beats:
			if err != nil {
				t.Fatalf("beat %d: %v", i, err)
			}
		case <-timer.C:
			t.Fatalf("%d heartbeats within %v; want 3", i, waitTimeout)
		}
	}
	rs, err := tiercache.ListReplicas(context.Background(), r.client, "")
	if err != nil || len(rs) != 1 || rs[0].ID != r.c.InstanceID() {
		t.Fatalf("ListReplicas = %+v, %v; want this replica", rs, err)
	}
}

// TestPresenceOffAndBadRecords: with heartbeats off nothing is written and
// WritePresence says why; ListReplicas returns the good records of several
// replicas by ID, skipping a garbage one and naming it in the error.
func TestPresenceOffAndBadRecords(t *testing.T) {
	srv := redistest.Start(t)
	ctx := context.Background()
	off := newReplica(t, srv, tiercache.Config{InstanceID: "off", HeartbeatInterval: -1})
	if err := off.c.WritePresence(ctx); !errors.Is(err, tiercache.ErrInvalidConfig) {
		t.Errorf("WritePresence with heartbeats off = %v; want ErrInvalidConfig", err)
	}
	newReplica(t, srv, tiercache.Config{InstanceID: "b"})
	newReplica(t, srv, tiercache.Config{InstanceID: "a"})
	newReplica(t, srv, tiercache.Config{InstanceID: "other-ns", Namespace: "elsewhere"})
	if err := off.client.Set(ctx, tiercache.PresenceKey("", "garbage"), "not json", 0).Err(); err != nil {
		t.Fatal(err)
	}
	if err := off.client.ZAdd(ctx, tiercache.PresenceIndexKey(""), redis.Z{Score: 1e15, Member: "garbage"}).Err(); err != nil {
		t.Fatal(err)
	}
	// A member whose record expired and that no beat has dropped yet.
	if err := off.client.ZAdd(ctx, tiercache.PresenceIndexKey(""), redis.Z{Score: 1e15, Member: "gone"}).Err(); err != nil {
		t.Fatal(err)
	}
	rs, err := tiercache.ListReplicas(ctx, off.client, "")
	if err == nil || !strings.Contains(err.Error(), "garbage") {
		t.Errorf("ListReplicas error = %v; want one naming the garbage record", err)
	}
	var ids []string
	for _, r := range rs {
		ids = append(ids, r.ID)
	}
	if got, want := strings.Join(ids, ","), "a,b"; got != want {
		t.Errorf("ListReplicas IDs = %s; want %s (sorted, this namespace only, none for off)", got, want)
	}
}

// TestPresenceCluster: on a Cluster, the records and their index share a
// slot, so the beat's script runs there, and ListReplicas finds every
// replica, whichever master it is connected through.
func TestPresenceCluster(t *testing.T) {
	cl := redistest.StartCluster(t)
	ctx := context.Background()
	for _, id := range []string{"ra", "rb", "rc"} {
		newReplicaOn(t, cl.Client(t), tiercache.Config{Namespace: "cl", InstanceID: id})
	}
	rs, err := tiercache.ListReplicas(ctx, cl.Client(t), "cl")
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, r := range rs {
		ids = append(ids, r.ID)
	}
	if got, want := strings.Join(ids, ","), "ra,rb,rc"; got != want {
		t.Errorf("ListReplicas on a Cluster = %s; want %s", got, want)
	}
}

// TestPresenceIndexDropsTheDead: a replica that died without Stop leaves
// the index once its record expired, at the next beat of any replica, by
// Redis's clock; and Stop takes a replica out of the index at once.
func TestPresenceIndexDropsTheDead(t *testing.T) {
	srv := redistest.Start(t)
	ctx := context.Background()
	a := newReplica(t, srv, tiercache.Config{InstanceID: "a", HeartbeatInterval: time.Hour})
	idx := tiercache.PresenceIndexKey("")
	if err := a.client.ZAdd(ctx, idx, redis.Z{Score: 1, Member: "dead"}).Err(); err != nil { // expired in 1970
		t.Fatal(err)
	}
	if err := a.c.WritePresence(ctx); err != nil {
		t.Fatal(err)
	}
	members, err := a.client.ZRange(ctx, idx, 0, -1).Result()
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(members, ","); got != "a" {
		t.Errorf("index after a beat = %s; want only a", got)
	}
	if err := a.c.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if n, err := a.client.Exists(ctx, idx).Result(); err != nil || n != 0 {
		t.Errorf("index after its last replica stopped: exists %d, %v; want gone", n, err)
	}
}
