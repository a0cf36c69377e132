package tiercache_test

import (
	"context"
	"testing"
	"time"

	"github.com/tiercache/tiercache"
	"github.com/tiercache/tiercache/internal/redistest"
)

// TestAudit makes the L1 of a replica stale behind its back: the bytes of
// a key it holds are replaced in Redis with a raw SET, which publishes
// nothing. The audit compares the entry with Redis (a check), finds it
// different, and max_staleness later, the entry still held and served,
// counts a violation. In another keyspace the entry is evicted within the
// bound, as an invalidation would evict it: a check, no violation. The
// clock of the checks is injected; the audit is stepped by hand.
func TestAudit(t *testing.T) {
	srv := redistest.Start(t)
	ctx := context.Background()
	clock := &fakeClock{t: time.Date(2026, 12, 4, 12, 0, 0, 0, time.UTC)}
	r := newReplicaOn(t, srv.Client(t), tiercache.Config{Namespace: "au"},
		tiercache.WithClock(clock.Now), tiercache.NoAuditJob())
	stale := mustKeyspace[string, string](t, r.c, "stale", tiercache.KeyspaceConfig{})
	fixed := mustKeyspace[string, string](t, r.c, "fixed", tiercache.KeyspaceConfig{})
	raw := srv.Client(t)
	for _, ks := range []*tiercache.Keyspace[string, string]{stale, fixed} {
		if err := ks.Set(ctx, "k", "v1"); err != nil {
			t.Fatal(err)
		}
		r.waitKeys(t, ks.Name(), "k")                            // the Set's own echo, which evicts k
		if v, err := ks.Get(ctx, "k"); err != nil || v != "v1" { // from Redis, into L1
			t.Fatalf("Get = %q, %v", v, err)
		}
		ks.Wait()
	}
	stats := func(name string) tiercache.KeyspaceStats { return r.c.Stats().Keyspaces[name] }

	tiercache.AuditNow(r.c, ctx)
	for _, name := range []string{"stale", "fixed"} {
		if s := stats(name); s.CoherenceChecks != 1 || s.CoherenceViolations != 0 {
			t.Fatalf("%s after a check of an entry equal to Redis: checks %d, violations %d; want 1, 0", name, s.CoherenceChecks, s.CoherenceViolations)
		}
	}

	// Behind the replicas' back: other bytes, same TTL, no invalidation.
	for _, ks := range []*tiercache.Keyspace[string, string]{stale, fixed} {
		key := ks.RedisKey("k")
		b, err := raw.Get(ctx, key).Bytes()
		if err != nil {
			t.Fatal(err)
		}
		if err := raw.Set(ctx, key, append(b, 0), time.Hour).Err(); err != nil {
			t.Fatal(err)
		}
	}
	tiercache.AuditNow(r.c, ctx) // different: to check again after max_staleness
	fixed.EvictLocal("k")        // as an invalidation in time would
	clock.Add(tiercache.DefaultMaxStaleness - time.Nanosecond)
	tiercache.AuditNow(r.c, ctx) // not due yet
	if s := stats("stale"); s.CoherenceViolations != 0 {
		t.Fatalf("violations before max_staleness passed: %d; want 0", s.CoherenceViolations)
	}
	clock.Add(time.Nanosecond)
	tiercache.AuditNow(r.c, ctx)
	if s := stats("stale"); s.CoherenceViolations != 1 || s.CoherenceChecks < 2 {
		t.Errorf("stale: checks %d, violations %d; want at least 2 checks and 1 violation", s.CoherenceChecks, s.CoherenceViolations)
	}
	if v, err := stale.Get(ctx, "k"); err != nil || v != "v1" {
		t.Errorf("the stale entry is no longer served (%q, %v): the violation proves nothing", v, err)
	}
	if s := stats("fixed"); s.CoherenceViolations != 0 || s.CoherenceChecks != 2 {
		t.Errorf("fixed: checks %d, violations %d; want 2, 0", s.CoherenceChecks, s.CoherenceViolations)
	}
}

// TestAuditOff checks that a negative audit_rate records and checks
// nothing, and that an audit_rate over 1000 is refused.
func TestAuditOff(t *testing.T) {
	srv := redistest.Start(t)
	ctx := context.Background()
	r := newReplicaOn(t, srv.Client(t), tiercache.Config{Namespace: "au", AuditRate: -1})
	ks := mustKeyspace[string, string](t, r.c, "v", tiercache.KeyspaceConfig{})
	if err := ks.Set(ctx, "k", "v1"); err != nil {
		t.Fatal(err)
	}
	r.waitKeys(t, "v", "k")
	if _, err := ks.Get(ctx, "k"); err != nil {
		t.Fatal(err)
	}
	ks.Wait()
	tiercache.AuditNow(r.c, ctx)
	if s := r.c.Stats().Keyspaces["v"]; s.CoherenceChecks != 0 {
		t.Errorf("checks with the audit off: %d; want 0", s.CoherenceChecks)
	}
	if _, err := tiercache.New(srv.Client(t), tiercache.Config{AuditRate: 1001}); err == nil {
		t.Errorf("audit_rate 1001 accepted")
	}
}
