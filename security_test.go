package tiercache_test

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/fx"

	"github.com/tiercache/tiercache"
	"github.com/tiercache/tiercache/codec"
	"github.com/tiercache/tiercache/internal/redistest"
)

// rejectTimeout bounds a Start that must fail: long enough for any
// handshake on loopback, so that running out means Start did not report
// the failure.
const rejectTimeout = 5 * time.Second

// setACLUser creates or replaces the ACL user name, enabled, with password
// and rules, through the admin client.
func setACLUser(t *testing.T, admin *redis.Client, name, password, rules string) {
	t.Helper()
	args := []any{"acl", "setuser", name, "reset", "on", ">" + password}
	for _, r := range strings.Fields(rules) {
		args = append(args, r)
	}
	if err := admin.Do(context.Background(), args...).Err(); err != nil {
		t.Fatalf("ACL SETUSER %s %s: %v", name, rules, err)
	}
}

// aclLog returns the entries of ACL LOG, read through the admin client.
func aclLog(t *testing.T, admin *redis.Client) []any {
	t.Helper()
	entries, err := admin.Do(context.Background(), "acl", "log").Slice()
	if err != nil {
		t.Fatalf("ACL LOG: %v", err)
	}
	return entries
}

func resetACLLog(t *testing.T, admin *redis.Client) {
	t.Helper()
	if err := admin.Do(context.Background(), "acl", "log", "reset").Err(); err != nil {
		t.Fatalf("ACL LOG RESET: %v", err)
	}
}

// rulesFor is tiercache.ACLRules for the server behind admin: from Redis
// 7.2 on it adds +client|setinfo, as ACLRules's documentation says to.
func rulesFor(t *testing.T, admin *redis.Client, namespace, channel string) string {
	t.Helper()
	rules, err := tiercache.ACLRules(namespace, channel)
	if err != nil {
		t.Fatal(err)
	}
	info, err := admin.Info(context.Background(), "server").Result()
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.Lines(info) {
		v, ok := strings.CutPrefix(strings.TrimSpace(line), "redis_version:")
		if !ok {
			continue
		}
		parts := strings.SplitN(v, ".", 3)
		major, _ := strconv.Atoi(parts[0])
		minor := 0
		if len(parts) > 1 {
			minor, _ = strconv.Atoi(parts[1])
		}
		if major > 7 || major == 7 && minor >= 2 {
			rules += " +client|setinfo"
		}
		return rules
	}
	t.Fatalf("INFO server without redis_version:\n%s", info)
	return ""
}

// userClient returns a client of addr that authenticates as user; it is
// closed in t.Cleanup.
func userClient(t *testing.T, addr, user, password string, hooks ...redis.Hook) *redis.Client {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: addr, Username: user, Password: password, ContextTimeoutEnabled: true})
	for _, h := range hooks {
		c.AddHook(h)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// pingHook reports each PING a client sent that Redis answered.
type pingHook chan struct{}

func (h pingHook) DialHook(next redis.DialHook) redis.DialHook { return next }
func (h pingHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		err := next(ctx, cmd)
		if cmd.Name() == "ping" && err == nil {
			select {
			case h <- struct{}{}:
			default:
			}
		}
		return err
	}
}
func (h pingHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

// receive waits for a value on ch, failing t after waitTimeout.
func receive[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	timer := time.NewTimer(waitTimeout)
	defer timer.Stop()
	select {
	case v := <-ch:
		return v
	case <-timer.C:
		t.Fatalf("no %s within %v", what, waitTimeout)
	}
	var zero T
	return zero
}

// TestACL runs every feature of tiercache on two replicas whose clients
// authenticate as a user holding exactly tiercache.ACLRules, and finds no
// refusal in ACL LOG. Then: a user without +publish, and a user whose keys
// are elsewhere.
func TestACL(t *testing.T) {
	srv := redistest.Start(t)
	admin := srv.Client(t)
	ctx := t.Context()
	const user, password = "tiercache", "acl-test-password"
	setACLUser(t, admin, user, password, rulesFor(t, admin, "", ""))
	resetACLLog(t, admin)

	pings := make(pingHook, 1)
	clock := &fakeClock{t: time.Now()}
	cfg := tiercache.Config{PingInterval: 10 * time.Millisecond}
	a := newReplicaOn(t, userClient(t, srv.Addr, user, password, pings), cfg, tiercache.WithClock(clock.Now))
	b := newReplicaOn(t, userClient(t, srv.Addr, user, password), cfg)
	var loads atomic.Int64
	load := countingLoader(&loads, func(k string) string { return "loaded-" + k })
	failing := func(context.Context, string) (string, error) { return "", errors.New("source down") }
	exists := func(keys ...string) int64 {
		t.Helper()
		n, err := admin.Exists(ctx, keys...).Result()
		if err != nil {
			t.Fatal(err)
		}
		return n
	}

	// Set, and its invalidation evicting B's L1 copy.
	ksA := mustKeyspace[string, string](t, a.c, "plain", tiercache.KeyspaceConfig{})
	ksB := mustKeyspace[string, string](t, b.c, "plain", tiercache.KeyspaceConfig{})
	setEvictsPeer(t, ksA, ksB, b, "as the ACL user")

	// GetOrLoad fills Redis (SET NX); the other replica reads it there.
	if v, err := ksA.GetOrLoad(ctx, "fill", load); err != nil || v != "loaded-fill" {
		t.Fatalf("GetOrLoad = %q, %v; want loaded-fill", v, err)
	}
	if exists(ksA.RedisKey("fill")) != 1 {
		t.Error("GetOrLoad did not fill Redis")
	}
	if v, err := ksB.GetOrLoad(ctx, "fill", failing); err != nil || v != "loaded-fill" {
		t.Errorf("B GetOrLoad(fill) = %q, %v; want loaded-fill from Redis", v, err)
	}

	// GetMany: one pipeline of GETs, one batch load, one pipeline of fills.
	var batch []string
	got, err := ksB.GetMany(ctx, []string{"k", "m1", "m2"}, func(_ context.Context, keys []string) (map[string]string, error) {
		batch = slices.Clone(keys)
		return map[string]string{"m1": "batch-m1", "m2": "batch-m2"}, nil
	})
	if err != nil {
		t.Fatalf("GetMany: %v", err)
	}
	if want := map[string]string{"k": "v2", "m1": "batch-m1", "m2": "batch-m2"}; !maps.Equal(got, want) {
		t.Errorf("GetMany = %v; want %v", got, want)
	}
	slices.Sort(batch)
	if !slices.Equal(batch, []string{"m1", "m2"}) {
		t.Errorf("batch loader got %v; want [m1 m2]", batch)
	}
	if n := exists(ksB.RedisKey("m1"), ksB.RedisKey("m2")); n != 2 {
		t.Errorf("GetMany filled %d of 2 keys in Redis", n)
	}

	// Delete, and its invalidation.
	if err := ksA.Delete(ctx, "k", "m1"); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	b.waitKeys(t, "plain", "k", "m1")
	if _, err := ksB.Get(ctx, "k"); !errors.Is(err, tiercache.ErrNotFound) {
		t.Errorf("B Get(k) after A's Delete = %v; want ErrNotFound", err)
	}

	// A coalesced batch of a Set, a Set and a Delete: the general write script.
	release, joined := make(chan struct{}), make(chan int, 8)
	releaseOnce := sync.OnceFunc(func() { close(release) })
	t.Cleanup(releaseOnce) // a failure below must not leave the writes held
	tiercache.HoldWrites(a.c, release, joined)
	errs := make(chan error, 3)
	go func() { errs <- ksA.Set(ctx, "c1", "1") }()
	go func() { errs <- ksA.Set(ctx, "c2", "2") }()
	go func() { errs <- ksA.Delete(ctx, "m2") }()
	for n := 0; n < 3; {
		n = receive(t, joined, "write joining the held batch")
	}
	releaseOnce()
	for range 3 {
		if err := receive(t, errs, "coalesced write"); err != nil {
			t.Errorf("coalesced write: %v", err)
		}
	}
	b.waitKeys(t, "plain", "c1", "c2", "m2")
	if n := exists(ksA.RedisKey("c1"), ksA.RedisKey("c2"), ksA.RedisKey("m2")); n != 2 {
		t.Errorf("after the coalesced batch Redis holds %d of c1, c2 and not m2; want 2", n)
	}

	// Leases: acquire, load, release with the value; a failed load drops
	// its lease.
	leaseA := mustKeyspace[string, string](t, a.c, "leased", leased)
	leaseB := mustKeyspace[string, string](t, b.c, "leased", leased)
	loads.Store(0)
	if v, err := leaseA.GetOrLoad(ctx, "x", load); err != nil || v != "loaded-x" {
		t.Fatalf("leased GetOrLoad = %q, %v", v, err)
	}
	if n := leaseA.Stats().Leases; n != 1 {
		t.Errorf("leases taken = %d; want 1", n)
	}
	if v, err := leaseB.GetOrLoad(ctx, "x", load); err != nil || v != "loaded-x" || loads.Load() != 1 {
		t.Errorf("B leased GetOrLoad = %q, %v after %d loads; want loaded-x after 1", v, err, loads.Load())
	}
	if _, err := leaseA.GetOrLoad(ctx, "y", failing); err == nil {
		t.Error("leased GetOrLoad with a failing loader = nil error")
	}
	if exists(leaseA.RedisKey("y")) != 0 {
		t.Error("a failed leased load left its lease in Redis")
	}

	// Negative caching: a tombstone in Redis that the other replica reads.
	negCfg := tiercache.KeyspaceConfig{NegativeTTL: time.Minute}
	negA := mustKeyspace[string, string](t, a.c, "neg", negCfg)
	negB := mustKeyspace[string, string](t, b.c, "neg", negCfg)
	missing := func(context.Context, string) (string, error) { return "", tiercache.ErrNotFound }
	if _, err := negA.GetOrLoad(ctx, "gone", missing); !errors.Is(err, tiercache.ErrNotFound) {
		t.Errorf("GetOrLoad(missing) = %v; want ErrNotFound", err)
	}
	if raw, err := admin.Get(ctx, negA.RedisKey("gone")).Bytes(); err != nil || !codec.IsTombstone(raw) {
		t.Errorf("Redis holds %q, %v for a missing key; want a tombstone", raw, err)
	}
	if _, err := negB.Get(ctx, "gone"); !errors.Is(err, tiercache.ErrNotFound) {
		t.Errorf("B Get(tombstoned) = %v; want ErrNotFound", err)
	}

	// Tags: the tagger's and SetTagged's, on writes and fills; then
	// InvalidateTags, once taking a tag set whole (RENAME) and once merging
	// it with a pending set an earlier failed call left (ZUNIONSTORE).
	tagger := tiercache.WithTags(func(string, string) []string { return []string{"all"} })
	tagCfg := tiercache.KeyspaceConfig{TTL: time.Minute}
	tagsA := mustKeyspace(t, a.c, "tags", tagCfg, tagger)
	tagsB := mustKeyspace(t, b.c, "tags", tagCfg, tagger)
	if err := tagsA.Set(ctx, "t1", "1"); err != nil {
		t.Fatalf("Set with a tagger: %v", err)
	}
	if err := tagsA.SetTagged(ctx, "t2", "2", "extra"); err != nil {
		t.Fatalf("SetTagged: %v", err)
	}
	if _, err := tagsA.GetOrLoad(ctx, "t3", load); err != nil {
		t.Fatalf("GetOrLoad with a tagger: %v", err)
	}
	const allSet, extraSet = "tiercache::tag:{tags:all}", "tiercache::tag:{tags:extra}"
	leftover := redis.Z{Score: float64(time.Now().Add(time.Hour).UnixMilli()), Member: tagsA.RedisKey("t4")}
	if err := admin.ZAdd(ctx, extraSet+":pending", leftover).Err(); err != nil {
		t.Fatal(err)
	}
	if err := tagsA.InvalidateTags(ctx, "all", "extra"); err != nil {
		t.Fatalf("InvalidateTags: %v", err)
	}
	b.waitKeys(t, "tags", "t1", "t2", "t3")
	for _, k := range []string{"t1", "t2", "t3"} {
		if _, err := tagsB.Get(ctx, k); !errors.Is(err, tiercache.ErrNotFound) {
			t.Errorf("B Get(%s) after InvalidateTags = %v; want ErrNotFound", k, err)
		}
	}
	if n := exists(allSet, allSet+":pending", extraSet, extraSet+":pending"); n != 0 {
		t.Errorf("%d tag sets left after InvalidateTags; want 0", n)
	}

	// Write-through: the write marker (HINCRBY, HSET, HGET, PEXPIRE), then
	// the value with its invalidation.
	src := newDB()
	wtA := mustKeyspace[string, string](t, a.c, "wt", tiercache.KeyspaceConfig{}, tiercache.WithWriter(src.write))
	if err := wtA.Write(ctx, "w", "v1"); err != nil {
		t.Fatalf("Write as the ACL user: %v", err)
	}
	if n := exists("tiercache:wt:w"); n != 1 || src.rows["w"] != "v1" {
		t.Errorf("after Write: key in Redis %d, source %q; want 1, v1", n, src.rows["w"])
	}

	// Write-behind: the record with the value, and a flush of it.
	flushed := make(chan map[string]string, 16)
	wb := mustKeyspace[string, string](t, a.c, "wb", tiercache.KeyspaceConfig{
		WriteBehind: tiercache.WriteBehindConfig{Interval: 10 * time.Millisecond}},
		tiercache.WithWriteBehind(func(_ context.Context, m map[string]string) error {
			flushed <- m
			return nil
		}))
	if err := wb.WriteBehind(ctx, "w", "v1"); err != nil {
		t.Fatalf("WriteBehind as the ACL user: %v", err)
	}
	select {
	case m := <-flushed:
		if m["w"] != "v1" {
			t.Errorf("write-behind flushed %v; want w=v1", m)
		}
	case <-time.After(waitTimeout):
		t.Fatal("write-behind never flushed as the ACL user")
	}

	// Counters: Incr, a flush when a count is due, and Count.
	views := newCounterDB()
	cnt := mustKeyspace[string, struct{}](t, a.c, "cnt", tiercache.KeyspaceConfig{
		Counter: tiercache.CounterConfig{Every: 2, Interval: 10 * time.Millisecond}}, tiercache.WithCounter[string, struct{}](views.flush))
	for range 2 {
		if _, err := cnt.Incr(ctx, "p", 1); err != nil {
			t.Fatalf("Incr as the ACL user: %v", err)
		}
	}
	views.awaitSum(t, "p", 2)
	if n, err := cnt.Count(ctx, "p"); err != nil || n != 2 {
		t.Errorf("Count as the ACL user = %d, %v; want 2", n, err)
	}

	// Early refresh: a hit at expiry refreshes in the background (GET, load,
	// compare-and-set script); the other replica reads with PTTL.
	xfCfg := tiercache.KeyspaceConfig{TTL: time.Hour, EarlyRefresh: 1}
	xfA := mustKeyspace[string, string](t, a.c, "xf", xfCfg)
	xfB := mustKeyspace[string, string](t, b.c, "xf", xfCfg)
	refreshed := make(chan struct{}, 1)
	tiercache.OnRefreshDone(xfA, func() { refreshed <- struct{}{} })
	var version atomic.Int64
	xload := func(context.Context, string) (string, error) {
		clock.Add(time.Second) // the load takes one second of the clock
		return strconv.FormatInt(version.Add(1), 10), nil
	}
	if v, err := xfA.GetOrLoad(ctx, "hot", xload); err != nil || v != "1" {
		t.Fatalf("GetOrLoad with early refresh = %q, %v; want 1", v, err)
	}
	waitL1(t, xfA, func() bool {
		before := xfA.Stats().L1Hits
		v, err := xfA.GetOrLoad(ctx, "hot", xload)
		return err == nil && v == "1" && xfA.Stats().L1Hits > before
	})
	clock.Add(2 * time.Hour)
	if v, err := xfA.GetOrLoad(ctx, "hot", xload); err != nil || v != "1" {
		t.Fatalf("GetOrLoad at expiry = %q, %v; want the current 1", v, err)
	}
	receive(t, refreshed, "early refresh")
	b.waitKeys(t, "xf", "hot")
	if n := xfA.Stats().Refreshes; n != 1 {
		t.Errorf("refreshes = %d; want 1", n)
	}
	if v, err := xfB.GetOrLoad(ctx, "hot", failing); err != nil || v != "2" {
		t.Errorf("B GetOrLoad after the refresh = %q, %v; want 2 from Redis", v, err)
	}

	// A client on another DB sends SELECT on each connection.
	dbClient := redis.NewClient(&redis.Options{Addr: srv.Addr, Username: user, Password: password, DB: 1})
	t.Cleanup(func() { dbClient.Close() })
	dbKS := mustKeyspace[string, string](t, newReplicaOn(t, dbClient, cfg).c, "plain", tiercache.KeyspaceConfig{})
	if err := dbKS.Set(ctx, "db1", "x"); err != nil {
		t.Errorf("Set on DB 1: %v", err)
	}

	// The bus's health checks: a PING on the subscription, then one on the
	// data path, which the hook sees; twice, so a full round has run.
	for range 2 {
		receive(t, pings, "data-path PING of the bus")
	}

	if entries := aclLog(t, admin); len(entries) != 0 {
		t.Errorf("ACL LOG after every feature ran under ACLRules: %d entries; want none:\n%v", len(entries), entries)
	}

	t.Run("NoPublish", func(t *testing.T) {
		// Everything but +publish: SUBSCRIBE works, and a write script fails
		// at its PUBLISH, which comes first: Redis keeps the old value, so
		// the replicas that were not told are not stale.
		rules := strings.Fields(rulesFor(t, admin, "", ""))
		rules = slices.DeleteFunc(rules, func(r string) bool { return r == "+publish" })
		setACLUser(t, admin, "nopublish", password, strings.Join(rules, " "))
		c := newReplicaOn(t, userClient(t, srv.Addr, "nopublish", password), tiercache.Config{})
		ksC := mustKeyspace[string, string](t, c.c, "plain", tiercache.KeyspaceConfig{})

		if err := ksA.Set(ctx, "np", "old"); err != nil {
			t.Fatal(err)
		}
		b.waitKeys(t, "plain", "np")
		waitL1(t, ksB, func() bool {
			before := ksB.Stats().L1Hits
			v, err := ksB.Get(ctx, "np")
			return err == nil && v == "old" && ksB.Stats().L1Hits > before
		})
		// Redis 7.2 and later say NOPERM; 7.0 says only that the user
		// "can't run this command or subcommand".
		err := ksC.Set(ctx, "np", "new")
		if !errors.Is(err, tiercache.ErrNotPublished) ||
			!strings.Contains(err.Error(), "NOPERM") && !strings.Contains(err.Error(), "can't run this command") {
			t.Fatalf("Set without +publish = %v; want ErrNotPublished naming NOPERM", err)
		}
		t.Logf("Set without +publish: %v", err)
		ksA.EvictLocal("np")
		if v, err := ksA.Get(ctx, "np"); err != nil || v != "old" {
			t.Errorf("Redis after the failed Set holds %q, %v; want old: the script failed before it wrote", v, err)
		}
		// No invalidation of np reaches B before a later one of A's.
		if err := ksA.Set(ctx, "marker", "m"); err != nil {
			t.Fatal(err)
		}
		b.waitFor(t, func(i tiercache.Invalidation) bool {
			if i.Keyspace == "plain" && slices.Contains(i.Keys, "np") {
				t.Errorf("B received an invalidation of np: %+v", i)
			}
			return i.Keyspace == "plain" && slices.Contains(i.Keys, "marker")
		})
		if v, err := ksB.Get(ctx, "np"); err != nil || v != "old" {
			t.Errorf("B Get(np) = %q, %v; want old, what Redis still holds", v, err)
		}
	})

	t.Run("OtherKeys", func(t *testing.T) {
		// The channel is allowed, the keys are not: every read and write of a
		// tiercache key is refused, and nothing reaches Redis.
		resetACLLog(t, admin)
		setACLUser(t, admin, "elsewhere", password, rulesFor(t, admin, "elsewhere", "tiercache:invalidate"))
		d := newReplicaOn(t, userClient(t, srv.Addr, "elsewhere", password), tiercache.Config{})
		ksD := mustKeyspace[string, string](t, d.c, "plain", tiercache.KeyspaceConfig{})
		if v, err := ksD.Get(ctx, "c1"); err == nil || !strings.Contains(err.Error(), "NOPERM") {
			t.Errorf("Get of a tiercache key by a user of other keys = %q, %v; want a NOPERM error", v, err)
		}
		if err := ksD.Set(ctx, "c1", "overwritten"); err == nil || !strings.Contains(err.Error(), "NOPERM") {
			t.Errorf("Set by a user of other keys = %v; want a NOPERM error", err)
		}
		if err := ksD.Set(ctx, "fresh", "x"); err == nil {
			t.Error("Set of a new key by a user of other keys = nil error")
		}
		if v, err := ksD.GetOrLoad(ctx, "loaded", load); err != nil || v != "loaded-loaded" {
			t.Errorf("GetOrLoad by a user of other keys = %q, %v; want the loader's value", v, err)
		}
		ksA.EvictLocal("c1")
		if v, err := ksA.Get(ctx, "c1"); err != nil || v != "1" {
			t.Errorf("c1 after refused writes = %q, %v; want 1", v, err)
		}
		if n := exists(ksA.RedisKey("fresh"), ksA.RedisKey("loaded")); n != 0 {
			t.Errorf("%d keys written by a user of other keys; want 0", n)
		}
		if entries := aclLog(t, admin); len(entries) == 0 {
			t.Error("ACL LOG empty after refused key accesses")
		}
	})

	for _, mode := range []string{tiercache.PubSubSharded, tiercache.PubSubClassic} {
		t.Run("Cluster_"+mode, func(t *testing.T) { testACLCluster(t, ctx, mode) })
	}
}

// testACLCluster is TestACL on a Cluster with invalidations in mode. A
// Cluster client also asks for the slots and the command table; a classic
// subscriber probes every master on a channel of its own, a sharded one
// reads every master's slots and subscribes to the slot channels.
func testACLCluster(t *testing.T, ctx context.Context, mode string) {
	const user, password = "tiercache", "acl-test-password"
	{
		cl := redistest.StartCluster(t)
		rules := ""
		for _, n := range cl.Nodes {
			nc := n.Client(t)
			if rules == "" {
				rules = rulesFor(t, nc, "cl", "")
			}
			setACLUser(t, nc, user, password, rules)
			resetACLLog(t, nc)
		}
		var reps []*replica
		var kss []*tiercache.Keyspace[string, int]
		for range 2 {
			cc := redis.NewClusterClient(&redis.ClusterOptions{
				Addrs: cl.Addrs(), Username: user, Password: password, ContextTimeoutEnabled: true,
			})
			t.Cleanup(func() { cc.Close() })
			r := newReplicaOn(t, cc, tiercache.Config{Namespace: "cl", PingInterval: 10 * time.Millisecond, PubSubMode: mode})
			if got := r.c.PubSubMode(); got != mode {
				t.Fatalf("PubSubMode = %q; want %q", got, mode)
			}
			reps = append(reps, r)
			kss = append(kss, mustKeyspace[string, int](t, r.c, "ks", tiercache.KeyspaceConfig{}))
		}
		keys := make([]string, 10)
		for i := range keys {
			keys[i] = fmt.Sprintf("key-%d", i)
			if err := kss[0].Set(ctx, keys[i], i); err != nil {
				t.Fatalf("Set on a cluster as the ACL user: %v", err)
			}
		}
		reps[1].waitKeys(t, "ks", keys...)
		if m, err := kss[1].GetMany(ctx, keys, nil); err != nil || len(m) != len(keys) {
			t.Errorf("GetMany on a cluster = %d values, %v; want %d", len(m), err, len(keys))
		}
		if err := kss[1].Delete(ctx, keys...); err != nil {
			t.Errorf("Delete on a cluster: %v", err)
		}
		reps[0].waitKeys(t, "ks", keys...)
		for i, n := range cl.Nodes {
			if entries := aclLog(t, n.Client(t)); len(entries) != 0 {
				t.Errorf("node %d: ACL LOG under ACLRules: %v; want none", i, entries)
			}
		}
	}
}

// ACLRules fills in the defaults of New and escapes glob characters, which
// Redis ACL patterns would otherwise match.
func TestACLRulesPatterns(t *testing.T) {
	tests := []struct {
		name                    string
		giveNamespace, giveChan string
		wantKeys, wantChannel   string
	}{
		{"Defaults", "", "", "~tiercache:*", "&tiercache:invalidate"},
		{"DefaultChannel", "shop", "", "~shop:*", "&shop:invalidate"},
		{"Glob", "a*b?", `c[1]\`, `~a\*b\?:*`, `&c\[1\]\\`},
		{"Unicode", "café", "", "~café:*", "&café:invalidate"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rules, err := tiercache.ACLRules(tt.giveNamespace, tt.giveChan)
			if err != nil {
				t.Fatalf("ACLRules(%q, %q): %v", tt.giveNamespace, tt.giveChan, err)
			}
			fields := strings.Fields(rules)
			if !slices.Contains(fields, tt.wantKeys) || !slices.Contains(fields, tt.wantChannel) {
				t.Errorf("ACLRules(%q, %q) = %s; want %s and %s in it", tt.giveNamespace, tt.giveChan, rules, tt.wantKeys, tt.wantChannel)
			}
			if i := slices.Index(fields, "-@all"); i < 0 || slices.ContainsFunc(fields[:i], func(f string) bool { return strings.HasPrefix(f, "+") }) {
				t.Errorf("ACLRules = %s; want -@all before every +command", rules)
			}
		})
	}
}

// ACLRules refuses, wrapping ErrInvalidConfig and naming the culprit, a
// namespace or channel that its rules cannot express, rather than return
// rules that split, quote or hide it.
func TestACLRulesRefuses(t *testing.T) {
	tests := []struct {
		name                    string
		giveNamespace, giveChan string
		wantErr                 string
	}{
		{"SpaceInNamespace", "my app", "", `namespace "my app": holds whitespace (U+0020)`},
		{"TabInChannel", "", "inv\tch", `channel "inv\tch": holds whitespace (U+0009)`},
		{"NewlineInNamespace", "a\nb", "", `namespace "a\nb": holds whitespace (U+000A)`},
		{"NoBreakSpace", "a\u00a0b", "", "holds whitespace (U+00A0)"},
		{"DoubleQuote", `a"b`, "", `holds a quote (U+0022)`},
		{"SingleQuote", "", "it's", `channel "it's": holds a quote (U+0027)`},
		{"Escape", "\x1b[31m", "", `namespace "\x1b[31m": holds U+001B, which is not printable`},
		{"NUL", "", "a\x00", "holds U+0000, which is not printable"},
		{"C1", "\u009bns", "", "holds U+009B, which is not printable"},
		{"BidiOverride", "ns\u202e", "", "holds U+202E, which is not printable"},
		{"InvalidUTF8", "ns\xff", "", `namespace "ns\xff": not valid UTF-8`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rules, err := tiercache.ACLRules(tt.giveNamespace, tt.giveChan)
			if !errors.Is(err, tiercache.ErrInvalidConfig) || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("ACLRules(%q, %q) error = %v; want ErrInvalidConfig saying %s", tt.giveNamespace, tt.giveChan, err, tt.wantErr)
			}
			if rules != "" {
				t.Errorf("ACLRules(%q, %q) = %q with its error; want no rules", tt.giveNamespace, tt.giveChan, rules)
			}
		})
	}
}

// TLSConfig.Build: nothing when disabled; otherwise TLS 1.2 at least, the
// CA file's roots and the server name asked for.
func TestTLSConfigBuild(t *testing.T) {
	srv := redistest.StartTLS(t)
	if cfg, err := (tiercache.TLSConfig{}).Build(); cfg != nil || err != nil {
		t.Errorf("Build of the zero TLSConfig = %v, %v; want nil, nil", cfg, err)
	}
	if _, err := (tiercache.TLSConfig{CAFile: srv.CAFile}).Build(); !errors.Is(err, tiercache.ErrInvalidConfig) {
		t.Errorf("Build of a CA file without enabled = %v; want ErrInvalidConfig, not a plain-text client", err)
	}
	cfg, err := tiercache.TLSConfig{Enabled: true, CAFile: srv.CAFile, ServerName: "localhost"}.Build()
	if err != nil {
		t.Fatal(err)
	}
	if cfg.MinVersion != tls.VersionTLS12 || cfg.ServerName != "localhost" || cfg.RootCAs == nil || cfg.InsecureSkipVerify {
		t.Errorf("Build = MinVersion %x, ServerName %q, RootCAs %v, InsecureSkipVerify %t; want TLS 1.2, localhost, the CA, false",
			cfg.MinVersion, cfg.ServerName, cfg.RootCAs, cfg.InsecureSkipVerify)
	}
	opts, err := tiercache.RedisConfig{Addrs: []string{srv.Addr}, TLS: tiercache.TLSConfig{Enabled: true, CAFile: srv.CAFile}}.ClientOptions()
	if err != nil {
		t.Fatal(err)
	}
	c := redis.NewUniversalClient(opts)
	defer c.Close()
	if err := c.Ping(t.Context()).Err(); err != nil {
		t.Errorf("Ping with ClientOptions over TLS = %v", err)
	}
}

// startCache builds a Cache on client and starts it within rejectTimeout.
// It returns Start's error; a started Cache is stopped in t.Cleanup.
func startCache(t *testing.T, client redis.UniversalClient, cfg tiercache.Config, opts ...tiercache.Option) error {
	t.Helper()
	c, err := tiercache.New(client, cfg, opts...)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), rejectTimeout)
	defer cancel()
	if err := c.Start(ctx); err != nil {
		return err
	}
	t.Cleanup(func() {
		if err := c.Stop(context.Background()); err != nil {
			t.Errorf("Stop = %v", err)
		}
	})
	return nil
}

// tlsClient returns a client of addr over TLS configured by cfg (nil: plain
// text), closed in t.Cleanup.
func tlsClient(t *testing.T, addr string, cfg *tls.Config) *redis.Client {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: addr, TLSConfig: cfg, ContextTimeoutEnabled: true})
	t.Cleanup(func() { c.Close() })
	return c
}

// TestTLS runs two replicas on a TLS-only redis-server: writes, reads and
// pub/sub invalidations go over TLS. A client that does not trust the
// server's CA, or does not speak TLS, fails at Start; so does the fx module
// given the wrong CA file.
func TestTLS(t *testing.T) {
	srv := redistest.StartTLS(t)
	ctx := t.Context()
	a := newReplicaOn(t, tlsClient(t, srv.Addr, srv.ClientTLS()), tiercache.Config{})
	b := newReplicaOn(t, tlsClient(t, srv.Addr, srv.ClientTLS()), tiercache.Config{})
	ksA := mustKeyspace[string, string](t, a.c, "tls", tiercache.KeyspaceConfig{})
	ksB := mustKeyspace[string, string](t, b.c, "tls", tiercache.KeyspaceConfig{})
	setEvictsPeer(t, ksA, ksB, b, "over TLS")

	t.Run("WrongCA", func(t *testing.T) {
		other, err := tiercache.TLSConfig{Enabled: true, CAFile: srv.OtherCAFile}.Build()
		if err != nil {
			t.Fatal(err)
		}
		err = startCache(t, tlsClient(t, srv.Addr, other), tiercache.Config{})
		var unknown x509.UnknownAuthorityError
		if !errors.As(err, &unknown) && (err == nil || !strings.Contains(err.Error(), "unknown authority")) {
			t.Errorf("Start with a client trusting another CA = %v; want an error saying x509: certificate signed by unknown authority", err)
		}
	})

	t.Run("Plaintext", func(t *testing.T) {
		// The server closes a plain-text connection without a word, which
		// the client cannot tell from a server going down: with RequireRedis
		// Start fails; without it Start is degraded, and nothing is ever
		// exchanged in plain text (the bus never subscribes, writes fail).
		if err := startCache(t, tlsClient(t, srv.Addr, nil), tiercache.Config{RequireRedis: true}); err == nil {
			t.Error("Start with a plain-text client on the TLS port, RequireRedis = nil; want an error")
		} else {
			t.Logf("Start with a plain-text client: %v", err)
		}
		c, err := tiercache.New(tlsClient(t, srv.Addr, nil), tiercache.Config{Breaker: tiercache.BreakerConfig{Failures: -1}})
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Start(ctx); err != nil {
			t.Fatalf("degraded Start = %v", err)
		}
		defer c.Stop(context.Background())
		ks := mustKeyspace[string, string](t, c, "plain", tiercache.KeyspaceConfig{})
		if err := ks.Set(ctx, "k", "v"); !errors.Is(err, tiercache.ErrNotPublished) {
			t.Errorf("Set over plain text to a TLS port = %v; want ErrNotPublished", err)
		}
		if c.Healthy() {
			t.Error("a plain-text bus on a TLS port is healthy")
		}
	})

	t.Run("Module", func(t *testing.T) {
		tests := []struct {
			name string
			give tiercache.TLSConfig
		}{
			{"CA", tiercache.TLSConfig{Enabled: true, CAFile: srv.CAFile}},
			{"ClientCertificate", tiercache.TLSConfig{Enabled: true, CAFile: srv.CAFile, CertFile: srv.ClientCertFile, KeyFile: srv.ClientKeyFile}},
			{"ServerName", tiercache.TLSConfig{Enabled: true, CAFile: srv.CAFile, ServerName: "localhost"}},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				var ks *tiercache.Keyspace[string, string]
				app := fx.New(fx.NopLogger,
					fx.Supply(tiercache.Config{Redis: tiercache.RedisConfig{Addrs: []string{srv.Addr}, TLS: tt.give}}),
					tiercache.Module,
					tiercache.ProvideKeyspace[string, string]("tls"),
					fx.Invoke(func(k *tiercache.Keyspace[string, string]) { ks = k }),
				)
				startCtx, cancel := context.WithTimeout(ctx, waitTimeout)
				defer cancel()
				if err := app.Start(startCtx); err != nil {
					t.Fatalf("fx app over TLS: Start = %v", err)
				}
				if err := ks.Set(ctx, "via-fx", "x"); err != nil {
					t.Errorf("Set through the module's TLS client: %v", err)
				}
				if err := app.Stop(startCtx); err != nil {
					t.Errorf("fx app over TLS: Stop = %v", err)
				}
			})
		}
	})

	t.Run("ModuleWrongCA", func(t *testing.T) {
		app := fx.New(fx.NopLogger,
			fx.Supply(tiercache.Config{Redis: tiercache.RedisConfig{
				Addrs: []string{srv.Addr},
				TLS:   tiercache.TLSConfig{Enabled: true, CAFile: srv.OtherCAFile},
			}}),
			tiercache.Module,
			fx.Invoke(func(*tiercache.Cache) {}),
		)
		startCtx, cancel := context.WithTimeout(ctx, rejectTimeout)
		defer cancel()
		err := app.Start(startCtx)
		if err == nil {
			app.Stop(ctx)
			t.Fatal("fx app trusting another CA: Start = nil; want an error")
		}
		if !strings.Contains(err.Error(), "unknown authority") {
			t.Errorf("fx app trusting another CA: Start = %v; want it to say x509: certificate signed by unknown authority", err)
		}
	})

	t.Run("ModuleBadFiles", func(t *testing.T) {
		tests := []struct {
			name string
			give tiercache.TLSConfig
		}{
			{"MissingCA", tiercache.TLSConfig{Enabled: true, CAFile: srv.CAFile + ".missing"}},
			{"CAWithoutCertificate", tiercache.TLSConfig{Enabled: true, CAFile: srv.ClientKeyFile}},
			{"CertWithoutKey", tiercache.TLSConfig{Enabled: true, CAFile: srv.CAFile, CertFile: srv.ClientCertFile}},
			{"KeyNotMatchingCert", tiercache.TLSConfig{Enabled: true, CertFile: srv.ClientCertFile, KeyFile: srv.ClientCertFile}},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				app := fx.New(fx.NopLogger,
					fx.Supply(tiercache.Config{Redis: tiercache.RedisConfig{Addrs: []string{srv.Addr}, TLS: tt.give}}),
					tiercache.Module,
					fx.Invoke(func(*tiercache.Cache) {}),
				)
				if err := app.Err(); !errors.Is(err, tiercache.ErrInvalidConfig) {
					t.Errorf("fx app with TLS %+v: %v; want ErrInvalidConfig", tt.give, err)
				}
			})
		}
	})
}

// TestNoSecretsInLogs drives the failures that tiercache logs and returns,
// with a password set, and finds the password in no log record and no
// error; nor in RedisConfig logged by slog or formatted by fmt.
func TestNoSecretsInLogs(t *testing.T) {
	var secret, wrong [12]byte
	rand.Read(secret[:])
	rand.Read(wrong[:])
	password, wrongPassword := "pw-"+hex.EncodeToString(secret[:]), "pw-"+hex.EncodeToString(wrong[:])
	srv := redistest.Start(t, "--requirepass", password)
	logs, log := newLogger()
	logged := func() string {
		logs.mu.Lock()
		defer logs.mu.Unlock()
		return logs.buf.String()
	}
	ctx := t.Context()
	var errs []error
	cfg := tiercache.Config{Redis: tiercache.RedisConfig{
		Addrs:    []string{srv.Addr},
		Username: "default",
		Password: password,
	}}

	// The configuration itself, through slog (JSON and text) and fmt.
	log.Info("config", "redis", cfg.Redis, "config", cfg)
	slog.New(slog.NewTextHandler(logs, nil)).Info("config", "redis", cfg.Redis, "config", cfg)
	formatted := fmt.Sprintf("%v %+v %s %#v %v %+v %#v", cfg.Redis, cfg.Redis, cfg.Redis, cfg.Redis, cfg, cfg, cfg)
	if !strings.Contains(logged(), "REDACTED") || !strings.Contains(formatted, "REDACTED") {
		t.Errorf("the password is not shown as REDACTED:\n%s\n%s", logged(), formatted)
	}

	// A wrong password: Start fails, directly and through the module.
	bad := redis.NewClient(&redis.Options{Addr: srv.Addr, Password: wrongPassword, ContextTimeoutEnabled: true})
	t.Cleanup(func() { bad.Close() })
	if err := startCache(t, bad, tiercache.Config{}, tiercache.WithLogger(log)); err == nil {
		t.Error("Start with a wrong password = nil; want an error")
	} else {
		errs = append(errs, err)
	}
	badCfg := cfg
	badCfg.Redis.Password = wrongPassword
	app := fx.New(fx.NopLogger, fx.Supply(badCfg, log), tiercache.Module, fx.Invoke(func(*tiercache.Cache) {}))
	startCtx, cancel := context.WithTimeout(ctx, rejectTimeout)
	defer cancel()
	if err := app.Start(startCtx); err == nil {
		app.Stop(ctx)
		t.Error("fx app with a wrong password: Start = nil; want an error")
	} else {
		errs = append(errs, err)
	}

	// The right password, then Redis killed: reads, fills and writes fail.
	good := redis.NewClient(&redis.Options{Addr: srv.Addr, Password: password, ContextTimeoutEnabled: true})
	t.Cleanup(func() { good.Close() })
	r := newReplicaOn(t, good, tiercache.Config{}, tiercache.WithLogger(log))
	ks := mustKeyspace[string, string](t, r.c, "s", tiercache.KeyspaceConfig{})
	if err := ks.Set(ctx, "k", "v"); err != nil {
		t.Fatal(err)
	}
	srv.Kill()
	load := func(context.Context, string) (string, error) { return "loaded", nil }
	if v, err := ks.GetOrLoad(ctx, "other", load); err != nil || v != "loaded" {
		t.Errorf("GetOrLoad with Redis down = %q, %v; want the loader's value", v, err)
	}
	for _, err := range []error{
		func() error { _, err := ks.Get(ctx, "absent"); return err }(),
		ks.Set(ctx, "k", "v2"),
		ks.Delete(ctx, "k"),
	} {
		if err == nil {
			t.Error("a call reaching a killed Redis returned nil")
			continue
		}
		errs = append(errs, err)
	}
	if err := r.c.Stop(ctx); err != nil {
		errs = append(errs, err)
	}

	out := logged()
	if !strings.Contains(out, `"level":"WARN"`) {
		t.Errorf("no warning logged for the failures driven:\n%s", out)
	}
	for _, s := range []string{password, wrongPassword} {
		if strings.Contains(out, s) {
			t.Errorf("a password is in the logs:\n%s", out)
		}
		if strings.Contains(formatted, s) {
			t.Errorf("a password is in RedisConfig or Config formatted by fmt: %s", formatted)
		}
		for _, err := range errs {
			if strings.Contains(err.Error(), s) {
				t.Errorf("a password is in a returned error: %v", err)
			}
		}
	}
}

// TestACLDocumented checks that the ACL line of docs/operations.md is what
// ACLRules returns, so the two cannot drift apart.
func TestACLDocumented(t *testing.T) {
	b, err := os.ReadFile("docs/operations.md")
	if err != nil {
		t.Fatal(err)
	}
	rules, err := tiercache.ACLRules("", "")
	if err != nil {
		t.Fatal(err)
	}
	want := "ACL SETUSER tiercache on >PASSWORD " + rules
	if !strings.Contains(string(b), want+"\n") {
		t.Errorf("docs/operations.md does not hold the ACL line\n%s", want)
	}
}

// setEvictsPeer sets k on ksA, waits until b's ksB serves it from L1, sets
// it again, and checks that b then reads the new value: the invalidation
// reached b (how says over what, for messages).
func setEvictsPeer(t *testing.T, ksA, ksB *tiercache.Keyspace[string, string], b *replica, how string) {
	t.Helper()
	ctx := t.Context()
	if err := ksA.Set(ctx, "k", "v1"); err != nil {
		t.Fatalf("Set %s: %v", how, err)
	}
	b.waitKeys(t, ksB.Name(), "k")
	waitL1(t, ksB, func() bool {
		before := ksB.Stats().L1Hits
		v, err := ksB.Get(ctx, "k")
		return err == nil && v == "v1" && ksB.Stats().L1Hits > before
	})
	if err := ksA.Set(ctx, "k", "v2"); err != nil {
		t.Fatal(err)
	}
	b.waitKeys(t, ksB.Name(), "k")
	if v, err := ksB.Get(ctx, "k"); err != nil || v != "v2" {
		t.Errorf("B Get(k) after A's Set %s = %q, %v; want v2", how, v, err)
	}
}
