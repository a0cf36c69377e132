package tiercache

import (
	"context"
	"fmt"
	"strings"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"github.com/tiercache/tiercache/l2"
)

// meterName is the instrumentation scope of the instruments.
const meterName = "github.com/tiercache/tiercache"

// WithMeterProvider reports the Cache's counters and latencies through an
// OpenTelemetry meter from mp; the default reports nothing. Under fx, a
// metric.MeterProvider in the graph is used.
//
// Counters and gauges are observed from Stats at each collection, so they
// cost nothing between collections and nothing at all on an L1 hit; the
// latency histograms (tiercache.load.duration, tiercache.l2.duration) are
// recorded as loads and Redis calls happen. Instruments follow the OTel
// conventions: dotted names, UCUM units, and the attributes
// tiercache.keyspace, tiercache.tier, tiercache.op, tiercache.reason and
// tiercache.state (closed, half_open, open), never a key. The README lists
// every instrument.
func WithMeterProvider(mp metric.MeterProvider) Option {
	return func(c *Cache) { c.mp = mp }
}

// meters are the instruments of a Cache with a MeterProvider.
type meters struct {
	load, l2 metric.Float64Histogram
	reg      metric.Registration // the callback of the observed instruments
}

// obsInt describes one observed instrument: its name, unit, description,
// and whether it is a counter (monotonic) or a gauge.
type obsInt struct {
	name, unit, desc string
	gauge            bool
}

// Indexes of cacheInstruments.
const (
	iHits = iota
	iMisses
	iLoads
	iLoadErrors
	iL2Errors
	iCorrupt
	iWrites
	iPublished
	iCoalesced
	iApplied
	iFlushes
	iStaleFills
	iCoherenceChecks
	iCoherenceViolations
	iL1Entries
	iL1Cost
	iL1MaxCost
	iWBPending
	iReceived
	iDropped
	iReconnects
	iHealthy
	iBreakerState
	iBreakerOpens
	iBreakerRejected
	iReplayGaps
	iReplays
	iReplayed
	iReplayFlushes
)

// cacheInstruments are the observed instruments, in the order of their indexes.
var cacheInstruments = []obsInt{
	{"tiercache.hits", "{hit}", "Reads served from a tier (tiercache.tier: l1, l2, l1_stale, negative).", false},
	{"tiercache.misses", "{miss}", "Reads found in neither tier and not loaded.", false},
	{"tiercache.loads", "{load}", "Loader calls (a GetMany batch counts once).", false},
	{"tiercache.load.errors", "{error}", "Loader calls that returned an error.", false},
	{"tiercache.l2.errors", "{error}", "Redis failures on the read and fill paths.", false},
	{"tiercache.l2.corrupt", "{value}", "Undecodable values found in Redis, deleted.", false},
	{"tiercache.writes", "{write}", "Set calls and deleted keys (tiercache.op: set, delete).", false},
	{"tiercache.invalidations.published", "{message}", "Invalidations published by this replica's writes.", false},
	{"tiercache.writes.coalesced", "{write}", "Writes that joined another write's script and invalidation.", false},
	{"tiercache.invalidations.applied", "{key}", "Keys evicted from L1 by invalidations from the bus.", false},
	{"tiercache.l1.flushes", "{flush}", "Whole-L1 flushes (bus resets, flush messages).", false},
	{"tiercache.l1.stale_fills_prevented", "{fill}", "Fills refused because their key was invalidated, or L1 flushed, while they loaded.", false},
	{"tiercache.coherence.checks", "{check}", "L1 entries the audit compared with Redis.", false},
	{"tiercache.coherence.violations", "{entry}", "L1 entries still different from Redis, and still served, max_staleness after the audit found them different.", false},
	{"tiercache.l1.entries", "{entry}", "Live entries in L1.", true},
	{"tiercache.l1.cost", "By", "Cost held in L1, in bytes: encoded values plus 400 B of bookkeeping per entry.", true},
	{"tiercache.l1.max_cost", "By", "Configured L1 maximum cost.", true},
	{"tiercache.write_behind.pending", "{record}", "Write-behind records this replica holds unacknowledged.", true},
	{"tiercache.bus.received", "{message}", "Messages read from the invalidation channel.", false},
	{"tiercache.bus.dropped", "{message}", "Messages dropped (tiercache.reason: overflow, malformed).", false},
	{"tiercache.bus.reconnects", "{reconnect}", "Subscriptions confirmed after the first.", false},
	{"tiercache.bus.healthy", "1", "1 while the bus is subscribed and answering (L1 serves), else 0.", true},
	{"tiercache.breaker.state", "1", "1 for the circuit breaker's current state (tiercache.state), 0 for the others.", true},
	{"tiercache.breaker.opens", "{open}", "Changes of the circuit breaker to open.", false},
	{"tiercache.breaker.rejected", "{call}", "Redis calls refused by the open circuit breaker.", false},
	{"tiercache.replay.gaps", "{gap}", "Sequence gaps: invalidations missed without a disconnection, found by their numbers.", false},
	{"tiercache.replay.replays", "{replay}", "Resubscriptions answered by reading the missed invalidations back from Redis, L1 kept.", false},
	{"tiercache.replay.replayed", "{message}", "Invalidations read back from the logs in Redis and applied.", false},
	{"tiercache.replay.flushes", "{flush}", "Resubscriptions and gaps answered with a flush of every L1 instead of a replay.", false},
}

// newMeters creates the instruments of c on mp and registers the callback
// that observes c.Stats.
func newMeters(c *Cache, mp metric.MeterProvider) (*meters, error) {
	m := mp.Meter(meterName)
	bounds := make([]float64, len(latencyBounds))
	for i, b := range latencyBounds {
		bounds[i] = b.Seconds()
	}
	var (
		ms  meters
		err error
	)
	ms.load, err = m.Float64Histogram("tiercache.load.duration", metric.WithUnit("s"),
		metric.WithDescription("Duration of loader calls."), metric.WithExplicitBucketBoundaries(bounds...))
	if err != nil {
		return nil, fmt.Errorf("tiercache: otel: %w", err)
	}
	ms.l2, err = m.Float64Histogram("tiercache.l2.duration", metric.WithUnit("s"),
		metric.WithDescription("Duration of Redis reads and writes (tiercache.op: read, write)."), metric.WithExplicitBucketBoundaries(bounds...))
	if err != nil {
		return nil, fmt.Errorf("tiercache: otel: %w", err)
	}
	obs := make([]metric.Int64Observable, len(cacheInstruments))
	all := make([]metric.Observable, len(cacheInstruments))
	for i, in := range cacheInstruments {
		unit, desc := metric.WithUnit(in.unit), metric.WithDescription(in.desc)
		if in.gauge {
			obs[i], err = m.Int64ObservableGauge(in.name, unit, desc)
		} else {
			obs[i], err = m.Int64ObservableCounter(in.name, unit, desc)
		}
		all[i] = obs[i]
		if err != nil {
			return nil, fmt.Errorf("tiercache: otel: %w", err)
		}
	}
	ms.reg, err = m.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		observeStats(o, obs, c.Stats())
		return nil
	}, all...)
	if err != nil {
		return nil, fmt.Errorf("tiercache: otel: %w", err)
	}
	return &ms, nil
}

// observeStats reports s through obs, indexed as cacheInstruments.
func observeStats(o metric.Observer, obs []metric.Int64Observable, s Stats) {
	u := func(i int, v uint64, kv ...attribute.KeyValue) {
		o.ObserveInt64(obs[i], int64(v), metric.WithAttributes(kv...))
	}
	i64 := func(i int, v int64, kv ...attribute.KeyValue) {
		o.ObserveInt64(obs[i], v, metric.WithAttributes(kv...))
	}
	for name, k := range s.Keyspaces {
		ks := attribute.String("tiercache.keyspace", name)
		u(iHits, k.L1Hits, ks, attribute.String("tiercache.tier", "l1"))
		u(iHits, k.L2Hits, ks, attribute.String("tiercache.tier", "l2"))
		u(iHits, k.StaleHits, ks, attribute.String("tiercache.tier", "l1_stale"))
		u(iHits, k.FailSafeHits, ks, attribute.String("tiercache.tier", "fail_safe"))
		u(iHits, k.NegativeHits, ks, attribute.String("tiercache.tier", "negative"))
		u(iMisses, k.Misses, ks)
		u(iLoads, k.Loads, ks)
		u(iLoadErrors, k.LoadErrors, ks)
		u(iL2Errors, k.L2Errors, ks)
		u(iCorrupt, k.Corrupt, ks)
		u(iWrites, k.Sets, ks, attribute.String("tiercache.op", "set"))
		u(iWrites, k.Deletes, ks, attribute.String("tiercache.op", "delete"))
		u(iPublished, k.Published, ks)
		u(iCoalesced, k.Coalesced, ks)
		u(iApplied, k.Invalidations, ks)
		u(iFlushes, k.Flushes, ks)
		u(iStaleFills, k.StaleFillsPrevented, ks)
		u(iCoherenceChecks, k.CoherenceChecks, ks)
		u(iCoherenceViolations, k.CoherenceViolations, ks)
		i64(iL1Entries, k.L1Entries, ks)
		i64(iL1Cost, k.L1Cost, ks)
		i64(iL1MaxCost, k.L1MaxCost, ks)
		i64(iWBPending, k.WriteBehind.Pending, ks)
	}
	u(iReceived, s.Bus.Received)
	u(iDropped, s.Bus.Overflows, attribute.String("tiercache.reason", "overflow"))
	u(iDropped, s.Bus.Malformed, attribute.String("tiercache.reason", "malformed"))
	u(iReconnects, s.Bus.Reconnects)
	i64(iHealthy, boolInt(s.Bus.Healthy))
	for _, st := range []l2.BreakerState{l2.BreakerClosed, l2.BreakerHalfOpen, l2.BreakerOpen} {
		i64(iBreakerState, boolInt(s.Breaker.State == st), attribute.String("tiercache.state", strings.ReplaceAll(st.String(), "-", "_")))
	}
	u(iBreakerOpens, s.Breaker.Opens)
	u(iBreakerRejected, s.Breaker.Rejected)
	u(iReplayGaps, s.Replay.SequenceGaps)
	u(iReplays, s.Replay.Replays)
	u(iReplayed, s.Replay.Replayed)
	u(iReplayFlushes, s.Replay.Flushes)
}

// attach gives the latency histograms of a keyspace called name their OTel
// instruments; without meters it does nothing.
func (ms *meters) attach(name string, st *ksCounters) {
	if ms == nil {
		return
	}
	ks := attribute.String("tiercache.keyspace", name)
	st.loadLatency.otel = ms.load
	st.loadLatency.attrs = metric.WithAttributeSet(attribute.NewSet(ks))
	st.l2Read.otel = ms.l2
	st.l2Read.attrs = metric.WithAttributeSet(attribute.NewSet(ks, attribute.String("tiercache.op", "read")))
	st.l2Write.otel = ms.l2
	st.l2Write.attrs = metric.WithAttributeSet(attribute.NewSet(ks, attribute.String("tiercache.op", "write")))
}

// close unregisters the callback; without meters it does nothing.
func (ms *meters) close() error {
	if ms == nil {
		return nil
	}
	if err := ms.reg.Unregister(); err != nil {
		return fmt.Errorf("otel: %w", err)
	}
	return nil
}

func boolInt(b bool) int64 {
	if b {
		return 1
	}
	return 0
}
