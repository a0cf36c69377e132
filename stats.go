package tiercache

import (
	"context"
	"log/slog"
	"sync/atomic"
	"time"
	"unsafe"

	"go.opentelemetry.io/otel/metric"

	"github.com/tiercache/tiercache/bus"
	"github.com/tiercache/tiercache/l2"
)

// Stats is a snapshot of a Cache's counters. Each counter is read
// atomically; together they are not one instant's.
type Stats struct {
	// InstanceID is the replica's id (Config.InstanceID).
	InstanceID string `json:"instance_id"`
	// Bus holds the invalidation bus counters and health: messages
	// received, dropped (Overflows) and refused (Malformed), resets and
	// reconnects.
	Bus bus.Stats `json:"bus"`
	// Breaker holds the state and counters of the circuit breaker around
	// Redis (Config.Breaker).
	Breaker l2.BreakerStats `json:"breaker"`
	// Replay counts the invalidations the replica read back from the logs
	// in Redis instead of flushing its L1, and the flushes it could not
	// avoid (Config.Replay).
	Replay ReplayStats `json:"replay"`
	// LastInvalidation is when the bus last handed this replica an
	// invalidation (a reset included); zero before the first.
	LastInvalidation time.Time `json:"last_invalidation"`
	// ProofAge is how long ago the bus sent the PING (or, on a Cluster, the
	// probes) whose answer last proved that every invalidation published
	// before it had been applied; L1 serves reads only while it is under
	// Config.MaxStaleness. -1 before the first proof.
	ProofAge time.Duration `json:"proof_age"`
	// Keyspaces holds each keyspace's counters, by name.
	Keyspaces map[string]KeyspaceStats `json:"keyspaces"`
}

// HitRatio is the share of reads of every keyspace served from either tier
// (see KeyspaceStats.HitRatio); 0 before the first read.
func (s Stats) HitRatio() float64 {
	var t KeyspaceStats
	for _, ks := range s.Keyspaces {
		t.L1Hits += ks.L1Hits
		t.L2Hits += ks.L2Hits
		t.Misses += ks.Misses
		t.Loads += ks.Loads
	}
	return t.HitRatio()
}

// L1 sums the L1 entries and cost of every keyspace.
func (s Stats) L1() (entries, cost int64) {
	for _, ks := range s.Keyspaces {
		entries += ks.L1Entries
		cost += ks.L1Cost
	}
	return entries, cost
}

// KeyspaceStats counts what one keyspace did since it was created.
type KeyspaceStats struct {
	L1Hits              uint64 `json:"l1_hits"`               // reads served from L1
	L2Hits              uint64 `json:"l2_hits"`               // reads served from Redis
	Misses              uint64 `json:"misses"`                // reads found in neither tier (and not loaded)
	Loads               uint64 `json:"loads"`                 // loader calls (a GetMany batch counts once)
	LoadErrors          uint64 `json:"load_errors"`           // loader calls that returned an error
	L2Errors            uint64 `json:"l2_errors"`             // Redis failures on the read or fill path
	Corrupt             uint64 `json:"corrupt"`               // undecodable values found in Redis (deleted)
	Sets                uint64 `json:"sets"`                  // Set calls
	Deletes             uint64 `json:"deletes"`               // keys passed to Delete
	Published           uint64 `json:"published"`             // invalidations this keyspace's writes published (a coalesced batch publishes one)
	Coalesced           uint64 `json:"coalesced"`             // writes that joined another write's script and invalidation
	Invalidations       uint64 `json:"invalidations"`         // keys evicted by invalidations from the bus
	Flushes             uint64 `json:"flushes"`               // whole-L1 flushes (bus resets, flush messages)
	StaleFillsPrevented uint64 `json:"stale_fills_prevented"` // fills Redis refused: a write, delete or tag invalidation came after the read that missed
	NegativeHits        uint64 `json:"negative_hits"`         // reads answered not-found from the negative cache in L1
	Leases              uint64 `json:"leases"`                // leases taken to load a key (KeyspaceConfig.Lease)
	LeaseWaits          uint64 `json:"lease_waits"`           // loads avoided: another replica's lease delivered the value
	LeaseTimeouts       uint64 `json:"lease_timeouts"`        // waits for another replica's lease that ran out; loaded here
	Refreshes           uint64 `json:"refreshes"`             // early refreshes that replaced a value
	TagDeletes          uint64 `json:"tag_deletes"`           // keys deleted by InvalidateTags
	Warmed              uint64 `json:"warmed"`                // keys the warmer found or loaded
	WarmErrors          uint64 `json:"warm_errors"`           // warm list or batch failures
	StaleHits           uint64 `json:"stale_hits"`            // reads served from L1 while Redis was unreachable (KeyspaceConfig.ServeStale)
	FailSafeHits        uint64 `json:"fail_safe_hits"`        // expired values served because the loader failed, timed out or was throttled (KeyspaceConfig.FailSafe), or past SoftTimeout
	CoherenceChecks     uint64 `json:"coherence_checks"`      // L1 entries the audit compared with Redis (Config.AuditRate)
	CoherenceViolations uint64 `json:"coherence_violations"`  // of those, entries still different from Redis, and still served, MaxStaleness later

	CounterFlushes uint64 `json:"counter_flushes"` // CounterFlusher calls that succeeded
	CounterErrors  uint64 `json:"counter_errors"`  // counter flushes that failed (retried later)

	// L1Entries is the number of live entries in L1 now (the negative cache
	// not included). Stats walks L1 to count them.
	L1Entries int64 `json:"l1_entries"`
	// L1Cost is the cost L1 holds now, in bytes: for each entry, the heap
	// its decoded value holds (the codec's bound) plus 400 bytes of
	// bookkeeping, dead entries not yet evicted included; it stays within
	// L1MaxCost.
	L1Cost int64 `json:"l1_cost"`
	// L1MaxCost is KeyspaceConfig.L1MaxCost; 0 without L1.
	L1MaxCost int64 `json:"l1_max_cost"`

	// LoadLatency is the distribution of loader calls' durations.
	LoadLatency Histogram `json:"load_latency"`
	// L2ReadLatency is the distribution of the Redis reads of Get,
	// GetOrLoad and GetMany (one per GetMany call), failed ones included.
	L2ReadLatency Histogram `json:"l2_read_latency"`
	// L2WriteLatency is the distribution of Set and Delete's Redis writes,
	// each with its invalidation, as their caller waited for it (a write
	// coalesced with others included).
	L2WriteLatency Histogram `json:"l2_write_latency"`

	// WriteBehind holds the write-behind counters and queue depth; zero
	// without WithWriteBehind.
	WriteBehind WriteBehindStats `json:"write_behind"`
}

// HitRatio is the share of reads served from L1 or Redis: (L1Hits + L2Hits)
// over those plus Misses and Loads; 0 before the first read. A GetMany that
// loads counts one load however many keys it loads, so with batch loads the
// ratio is an upper bound.
func (s KeyspaceStats) HitRatio() float64 {
	hits := s.L1Hits + s.L2Hits
	if all := hits + s.Misses + s.Loads; all > 0 {
		return float64(hits) / float64(all)
	}
	return 0
}

// latencyBounds are the upper bounds of the latency histograms' buckets:
// from Redis on loopback (tens of µs) to a slow external API (seconds).
var latencyBounds = [...]time.Duration{
	50 * time.Microsecond, 100 * time.Microsecond, 250 * time.Microsecond, 500 * time.Microsecond,
	time.Millisecond, 2500 * time.Microsecond, 5 * time.Millisecond, 10 * time.Millisecond,
	25 * time.Millisecond, 50 * time.Millisecond, 100 * time.Millisecond, 250 * time.Millisecond,
	500 * time.Millisecond, time.Second, 2500 * time.Millisecond, 5 * time.Second, 10 * time.Second,
}

// LatencyBuckets returns the upper bounds of the buckets of every
// Histogram, in increasing order: 50µs to 10s.
func LatencyBuckets() []time.Duration { return append([]time.Duration(nil), latencyBounds[:]...) }

// Histogram is a snapshot of a latency distribution.
type Histogram struct {
	// Counts[i] counts the observations in bucket i: at most
	// LatencyBuckets()[i] and above the bound before it. The last count,
	// one more than the bounds, is of the observations above every bound.
	Counts []uint64 `json:"counts"`
	// Sum is the sum of every observation.
	Sum time.Duration `json:"sum_ns"`
}

// Count is the number of observations.
func (h Histogram) Count() uint64 {
	var n uint64
	for _, c := range h.Counts {
		n += c
	}
	return n
}

// Mean is the mean observation, 0 with none.
func (h Histogram) Mean() time.Duration {
	if n := h.Count(); n > 0 {
		return h.Sum / time.Duration(n)
	}
	return 0
}

// Quantile returns the upper bound of the bucket holding the q-quantile
// (0 < q <= 1), so an estimate from above: 0 with no observation, and the
// largest bound when the quantile is above it.
func (h Histogram) Quantile(q float64) time.Duration {
	n := h.Count()
	if n == 0 {
		return 0
	}
	rank := uint64(q * float64(n))
	if rank < 1 {
		rank = 1
	}
	var seen uint64
	for i, c := range h.Counts {
		seen += c
		if seen >= rank && i < len(latencyBounds) {
			return latencyBounds[i]
		}
	}
	return latencyBounds[len(latencyBounds)-1]
}

// latency records a latency distribution: one bucket counter per bound and
// a sum, and the keyspace's OpenTelemetry histogram when a MeterProvider was
// given (WithMeterProvider). It is on the Redis and loader paths, never on
// an L1 hit.
type latency struct {
	counts [len(latencyBounds) + 1]atomic.Uint64
	sum    atomic.Int64 // nanoseconds

	otel  metric.Float64Histogram // nil without a MeterProvider
	attrs metric.RecordOption     // the keyspace (and op) attributes of otel
}

// observe records one duration d; ctx carries what an OTel exemplar needs.
func (l *latency) observe(ctx context.Context, d time.Duration) {
	i := 0
	for i < len(latencyBounds) && d > latencyBounds[i] {
		i++
	}
	l.counts[i].Add(1)
	l.sum.Add(int64(d))
	if l.otel != nil {
		l.otel.Record(ctx, d.Seconds(), l.attrs)
	}
}

// since records the time since start, read on the real clock.
func (l *latency) since(ctx context.Context, start time.Time) { l.observe(ctx, time.Since(start)) }

func (l *latency) snapshot() Histogram {
	h := Histogram{Counts: make([]uint64, len(l.counts)), Sum: time.Duration(l.sum.Load())}
	for i := range l.counts {
		h.Counts[i] = l.counts[i].Load()
	}
	return h
}

// ksCounters are the live counters of a keyspace. l1Hits is striped because
// every core increments it on the hottest path; the rest are rarer.
type ksCounters struct {
	l1Hits        stripedCounter
	l2Hits        atomic.Uint64
	misses        atomic.Uint64
	loads         atomic.Uint64
	loadErrors    atomic.Uint64
	l2Errors      atomic.Uint64
	corrupt       atomic.Uint64
	sets          atomic.Uint64
	deletes       atomic.Uint64
	published     atomic.Uint64
	coalesced     atomic.Uint64
	invalidations atomic.Uint64
	flushes       atomic.Uint64
	negativeHits  atomic.Uint64
	leases        atomic.Uint64
	leaseWaits    atomic.Uint64
	leaseTimeouts atomic.Uint64
	refreshes     atomic.Uint64
	tagDeletes    atomic.Uint64
	warmed        atomic.Uint64
	warmErrors    atomic.Uint64
	staleHits     atomic.Uint64
	failSafeHits  atomic.Uint64
	staleFills    atomic.Uint64 // fills refused before L1 (and L2) by unchanged; l1 counts its own refusals

	coherenceChecks, coherenceViolations atomic.Uint64 // the audit (audit.go)

	counterFlushes atomic.Uint64
	counterErrors  atomic.Uint64

	loadLatency, l2Read, l2Write latency
}

func (ks *Keyspace[K, V]) stats() KeyspaceStats {
	s := &ks.st
	l1s := ks.l1.Stats()
	return KeyspaceStats{
		L1Hits:              s.l1Hits.load(),
		L2Hits:              s.l2Hits.Load(),
		Misses:              s.misses.Load(),
		Loads:               s.loads.Load(),
		LoadErrors:          s.loadErrors.Load(),
		L2Errors:            s.l2Errors.Load(),
		Corrupt:             s.corrupt.Load(),
		Sets:                s.sets.Load(),
		Deletes:             s.deletes.Load(),
		Published:           s.published.Load(),
		Coalesced:           s.coalesced.Load(),
		Invalidations:       s.invalidations.Load(),
		Flushes:             s.flushes.Load(),
		StaleFillsPrevented: s.staleFills.Load() + l1s.StaleRejected + ks.neg.Stats().StaleRejected,
		NegativeHits:        s.negativeHits.Load(),
		Leases:              s.leases.Load(),
		LeaseWaits:          s.leaseWaits.Load(),
		LeaseTimeouts:       s.leaseTimeouts.Load(),
		Refreshes:           s.refreshes.Load(),
		TagDeletes:          s.tagDeletes.Load(),
		Warmed:              s.warmed.Load(),
		WarmErrors:          s.warmErrors.Load(),
		StaleHits:           s.staleHits.Load(),
		FailSafeHits:        s.failSafeHits.Load(),
		CoherenceChecks:     s.coherenceChecks.Load(),
		CoherenceViolations: s.coherenceViolations.Load(),

		CounterFlushes: s.counterFlushes.Load(),
		CounterErrors:  s.counterErrors.Load(),

		L1Entries: int64(ks.l1.Len()),
		L1Cost:    l1s.Cost,
		L1MaxCost: ks.l1.MaxCost(),

		LoadLatency:    s.loadLatency.snapshot(),
		L2ReadLatency:  s.l2Read.snapshot(),
		L2WriteLatency: s.l2Write.snapshot(),

		WriteBehind: ks.WriteBehindStats(),
	}
}

// firstWarn logs its first message at warn level and the rest at debug, so
// an event that can repeat per request (a corrupt value read by every
// replica) is seen once without flooding the log; Stats counts them all.
type firstWarn struct{ done atomic.Bool }

func (w *firstWarn) log(l *slog.Logger, msg string, args ...any) {
	level := slog.LevelDebug
	if !w.done.Swap(true) {
		level = slog.LevelWarn
	}
	l.Log(context.Background(), level, msg, args...)
}

// counterStripes is the number of cache-line-padded cells of a stripedCounter.
const counterStripes = 64

// stripedCounter spreads increments over padded cells so that parallel hits
// do not all write one cache line. A goroutine picks its cell from the
// address of its own stack, so it keeps writing the same line (which stays in
// its core's cache) instead of one picked at random, which bounced lines
// between cores and cost ~20% of parallel hit throughput (measured).
type stripedCounter struct {
	cells [counterStripes]struct {
		n atomic.Uint64
		_ [56]byte // pad to a 64-byte cache line
	}
}

func (c *stripedCounter) add() {
	var onStack byte
	a := uintptr(unsafe.Pointer(&onStack))
	c.cells[(a>>11^a>>17)%counterStripes].n.Add(1)
}

func (c *stripedCounter) load() uint64 {
	var n uint64
	for i := range c.cells {
		n += c.cells[i].n.Load()
	}
	return n
}
