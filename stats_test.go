package tiercache_test

import (
	"context"
	"errors"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tiercache/tiercache"
	"github.com/tiercache/tiercache/internal/redistest"
	"github.com/tiercache/tiercache/l2"
)

// TestStatsCountsEachPath drives two replicas through a known sequence and
// checks each counter of KeyspaceStats it moves, on the replica that moved
// it, with exact values.
func TestStatsCountsEachPath(t *testing.T) {
	srv := redistest.Start(t)
	ctx := context.Background()
	a := newReplica(t, srv, tiercache.Config{})
	b := newReplica(t, srv, tiercache.Config{})
	ksA, _ := tiercache.NewKeyspace[string, string](a.c, "st", tiercache.KeyspaceConfig{})
	ksB, _ := tiercache.NewKeyspace[string, string](b.c, "st", tiercache.KeyspaceConfig{})
	var loads atomic.Int64
	load := countingLoader(&loads, func(k string) string { return "v-" + k })

	if _, err := ksA.GetOrLoad(ctx, "k1", load); err != nil { // L2 read (miss), one load, fills
		t.Fatal(err)
	}
	ksA.Wait()
	if _, err := ksA.Get(ctx, "k1"); err != nil { // L1 hit
		t.Fatal(err)
	}
	if _, err := ksB.Get(ctx, "k1"); err != nil { // L2 hit on b
		t.Fatal(err)
	}
	if _, err := ksA.Get(ctx, "absent"); !errors.Is(err, tiercache.ErrNotFound) { // L2 read, miss
		t.Fatalf("Get(absent) = %v; want ErrNotFound", err)
	}
	if err := ksA.Set(ctx, "k2", "x"); err != nil {
		t.Fatal(err)
	}
	b.waitKeys(t, "st", "k2")
	if err := ksA.Delete(ctx, "k1", "k2"); err != nil {
		t.Fatal(err)
	}
	b.waitKeys(t, "st", "k1", "k2")

	sa, sb := a.c.Stats(), b.c.Stats()
	ga, gb := sa.Keyspaces["st"], sb.Keyspaces["st"]
	tests := []struct {
		give      string
		got, want uint64
	}{
		{"a L1Hits", ga.L1Hits, 1},
		{"a L2Hits", ga.L2Hits, 0},
		{"a Misses", ga.Misses, 1},
		{"a Loads", ga.Loads, 1},
		{"a LoadErrors", ga.LoadErrors, 0},
		{"a Sets", ga.Sets, 1},
		{"a Deletes", ga.Deletes, 2},
		{"a Published", ga.Published, 2}, // one Set, one Delete of two keys
		{"a Coalesced", ga.Coalesced, 0},
		{"a LoadLatency count", ga.LoadLatency.Count(), 1},
		{"a L2ReadLatency count", ga.L2ReadLatency.Count(), 2}, // GetOrLoad's and Get(absent)'s reads
		{"a L2WriteLatency count", ga.L2WriteLatency.Count(), 2},
		{"b L2Hits", gb.L2Hits, 1},
		{"b L1Hits", gb.L1Hits, 0},
		{"b Loads", gb.Loads, 0},
		{"b Invalidations", gb.Invalidations, 3}, // k2, then k1 and k2
		{"b L2ReadLatency count", gb.L2ReadLatency.Count(), 1},
		{"b Published", gb.Published, 0},
	}
	for _, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("%s = %d; want %d", tt.give, tt.got, tt.want)
		}
	}
	if got := loads.Load(); got != 1 {
		t.Errorf("loader calls = %d; want 1", got)
	}
	if sa.InstanceID != a.c.InstanceID() {
		t.Errorf("Stats.InstanceID = %q; want %q", sa.InstanceID, a.c.InstanceID())
	}
	if sb.LastInvalidation.IsZero() || time.Since(sb.LastInvalidation) > waitTimeout {
		t.Errorf("b's LastInvalidation = %v; want the recent delete", sb.LastInvalidation)
	}
	if !sa.Bus.Healthy || sa.Breaker.State != l2.BreakerClosed {
		t.Errorf("a's bus healthy %v, breaker %v; want healthy and closed", sa.Bus.Healthy, sa.Breaker.State)
	}
	if got := sb.Bus.Received; got < 2 {
		t.Errorf("b's Bus.Received = %d; want at least the 2 invalidations of a", got)
	}
	if h := ga.LoadLatency; h.Sum <= 0 || h.Mean() != h.Sum || h.Quantile(0.99) == 0 {
		t.Errorf("a's LoadLatency = %+v (mean %v, p99 %v); want one positive observation", h, h.Mean(), h.Quantile(0.99))
	}
	if got, want := sa.HitRatio(), 1.0/3; got != want { // 1 hit of 1 hit + 1 miss + 1 load
		t.Errorf("a's HitRatio = %v; want %v", got, want)
	}
}

// TestStatsL1EntriesAndCost checks the L1 gauges against what was filled.
func TestStatsL1EntriesAndCost(t *testing.T) {
	srv := redistest.Start(t)
	ctx := context.Background()
	r := newReplica(t, srv, tiercache.Config{})
	const maxCost = 1 << 20
	ks, _ := tiercache.NewKeyspace[int64, string](r.c, "gauges", tiercache.KeyspaceConfig{L1MaxCost: maxCost})
	var loads atomic.Int64
	for i := range int64(5) {
		if _, err := ks.GetOrLoad(ctx, i, countingLoader(&loads, func(k int64) string { return "value " + strconv.FormatInt(k, 10) })); err != nil {
			t.Fatal(err)
		}
	}
	ks.Wait()
	s := r.c.Stats().Keyspaces["gauges"]
	if s.L1Entries != 5 {
		t.Errorf("L1Entries = %d; want 5", s.L1Entries)
	}
	if s.L1Cost <= 0 || s.L1Cost > maxCost {
		t.Errorf("L1Cost = %d; want in (0, %d]", s.L1Cost, maxCost)
	}
	if s.L1MaxCost != maxCost {
		t.Errorf("L1MaxCost = %d; want %d", s.L1MaxCost, maxCost)
	}
	entries, cost := r.c.Stats().L1()
	if entries != 5 || cost != s.L1Cost {
		t.Errorf("Stats.L1() = %d, %d; want 5, %d", entries, cost, s.L1Cost)
	}
	if err := ks.Delete(ctx, 0, 1); err != nil {
		t.Fatal(err)
	}
	ks.Wait()
	if got := r.c.Stats().Keyspaces["gauges"].L1Entries; got != 3 {
		t.Errorf("L1Entries after deleting 2 = %d; want 3", got)
	}
}

// TestStatsCoalescedAndStaleFills checks the counters of two races: writes
// that share one script, and a load that an invalidation overtook.
func TestStatsCoalescedAndStaleFills(t *testing.T) {
	srv := redistest.Start(t)
	ctx := context.Background()
	a := newReplica(t, srv, tiercache.Config{})
	b := newReplica(t, srv, tiercache.Config{})
	ksA, _ := tiercache.NewKeyspace[string, int](a.c, "race", tiercache.KeyspaceConfig{})
	ksB, _ := tiercache.NewKeyspace[string, int](b.c, "race", tiercache.KeyspaceConfig{})

	// Two Sets on a while the first one's script is held: the second joins
	// its batch, and one script publishes one invalidation for both.
	release, joined := make(chan struct{}), make(chan int, 4)
	tiercache.HoldWrites(a.c, release, joined)
	errs := make(chan error, 2)
	go func() { errs <- ksA.Set(ctx, "x", 1) }()
	go func() { errs <- ksA.Set(ctx, "y", 2) }()
	timer := time.NewTimer(waitTimeout)
	defer timer.Stop()
	select {
	case n := <-joined: // the leader is held: the other write joins its batch
		if n != 2 {
			t.Fatalf("the joined batch holds %d writes; want 2", n)
		}
	case <-timer.C:
		t.Fatal("the second Set never joined the held batch")
	}
	close(release)
	for range 2 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if s := a.c.Stats().Keyspaces["race"]; s.Coalesced != 1 || s.Published != 1 || s.Sets != 2 {
		t.Errorf("a: Coalesced %d, Published %d, Sets %d; want 1, 1, 2", s.Coalesced, s.Published, s.Sets)
	}

	// b loads "k"; a writes it meanwhile; b's fill must be refused.
	started, hold := make(chan struct{}), make(chan struct{})
	done := make(chan error, 1)
	go func() {
		_, err := ksB.GetOrLoad(ctx, "k", func(context.Context, string) (int, error) {
			close(started)
			<-hold
			return 1, nil
		})
		done <- err
	}()
	<-started
	if err := ksA.Set(ctx, "k", 2); err != nil {
		t.Fatal(err)
	}
	b.waitKeys(t, "race", "k")
	close(hold)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	ksB.Wait()
	if got := b.c.Stats().Keyspaces["race"].StaleFillsPrevented; got < 1 {
		t.Errorf("b's StaleFillsPrevented = %d; want at least the refused fill", got)
	}
}

func TestHistogramQuantile(t *testing.T) {
	bounds := tiercache.LatencyBuckets()
	counts := func(at map[int]uint64) []uint64 {
		c := make([]uint64, len(bounds)+1)
		for i, n := range at {
			c[i] = n
		}
		return c
	}
	tests := []struct {
		give string
		h    tiercache.Histogram
		q    float64
		want time.Duration
	}{
		{"empty", tiercache.Histogram{Counts: counts(nil)}, 0.99, 0},
		{"one bucket", tiercache.Histogram{Counts: counts(map[int]uint64{3: 10})}, 0.5, bounds[3]},
		{"p50 of two buckets", tiercache.Histogram{Counts: counts(map[int]uint64{0: 50, 5: 50})}, 0.5, bounds[0]},
		{"p99 of two buckets", tiercache.Histogram{Counts: counts(map[int]uint64{0: 50, 5: 50})}, 0.99, bounds[5]},
		{"above every bound", tiercache.Histogram{Counts: counts(map[int]uint64{len(bounds): 1})}, 0.5, bounds[len(bounds)-1]},
	}
	for _, tt := range tests {
		t.Run(tt.give, func(t *testing.T) {
			if got := tt.h.Quantile(tt.q); got != tt.want {
				t.Errorf("Quantile(%v) = %v; want %v", tt.q, got, tt.want)
			}
		})
	}
}
