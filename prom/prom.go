package prom

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/tiercache/tiercache"
	"github.com/tiercache/tiercache/l2"
)

// Label names. No label ever holds a key.
const (
	labelKeyspace = "keyspace"
	labelTier     = "tier"
	labelOp       = "op"
	labelReason   = "reason"
	labelState    = "state"
)

// ksMetric is a series per keyspace whose only label is keyspace.
type ksMetric struct {
	desc  *prometheus.Desc
	typ   prometheus.ValueType
	value func(tiercache.KeyspaceStats) float64
}

// Collector is a prometheus.Collector of the counters of one
// tiercache.Cache. Create it with NewCollector. It is safe for concurrent
// use, as a registry requires. Every field is set by NewCollector and never
// written again.
type Collector struct {
	c      *tiercache.Cache // nil: Collect reports nothing
	bounds []float64        // tiercache.LatencyBuckets, in seconds

	perKeyspace []ksMetric // the series labelled by keyspace only

	hits         *prometheus.Desc // keyspace, tier
	writes       *prometheus.Desc // keyspace, op
	loadDuration *prometheus.Desc // keyspace
	l2Duration   *prometheus.Desc // keyspace, op

	busReceived   *prometheus.Desc
	busDropped    *prometheus.Desc // reason
	busReconnects *prometheus.Desc
	busHealthy    *prometheus.Desc

	replayGaps, replays, replayed, replayFlushes *prometheus.Desc

	breakerState    *prometheus.Desc // state
	breakerOpens    *prometheus.Desc
	breakerRejected *prometheus.Desc
}

// The interface a registry needs.
var _ prometheus.Collector = (*Collector)(nil)

// NewCollector returns a Collector of c's counters, to register once on a
// prometheus.Registerer. A nil c gives a Collector that describes its
// metrics and collects none.
//
// The Collector reads c.Stats() at each scrape and holds nothing else of
// c; a Collector of a stopped Cache reports the counters' last values.
func NewCollector(c *tiercache.Cache) *Collector {
	ks := []string{labelKeyspace}
	desc := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc("tiercache_"+name, help, labels, nil)
	}
	counter := func(name, help string, v func(tiercache.KeyspaceStats) uint64) ksMetric {
		return ksMetric{desc(name, help, ks...), prometheus.CounterValue,
			func(s tiercache.KeyspaceStats) float64 { return float64(v(s)) }}
	}
	gauge := func(name, help string, v func(tiercache.KeyspaceStats) int64) ksMetric {
		return ksMetric{desc(name, help, ks...), prometheus.GaugeValue,
			func(s tiercache.KeyspaceStats) float64 { return float64(v(s)) }}
	}
	bounds := tiercache.LatencyBuckets()
	col := &Collector{
		c:      c,
		bounds: make([]float64, len(bounds)),
		perKeyspace: []ksMetric{
			counter("misses_total", "Reads found in neither tier and not loaded.",
				func(s tiercache.KeyspaceStats) uint64 { return s.Misses }),
			counter("loads_total", "Loader calls (a GetMany batch counts once).",
				func(s tiercache.KeyspaceStats) uint64 { return s.Loads }),
			counter("load_errors_total", "Loader calls that returned an error (not-found excluded).",
				func(s tiercache.KeyspaceStats) uint64 { return s.LoadErrors }),
			counter("l2_errors_total", "Redis failures on the read and fill paths.",
				func(s tiercache.KeyspaceStats) uint64 { return s.L2Errors }),
			counter("l2_corrupt_values_total", "Undecodable values found in Redis, deleted.",
				func(s tiercache.KeyspaceStats) uint64 { return s.Corrupt }),
			counter("invalidations_published_total", "Invalidations published by this replica's writes (a coalesced batch publishes one).",
				func(s tiercache.KeyspaceStats) uint64 { return s.Published }),
			counter("writes_coalesced_total", "Writes that joined another write's script and invalidation.",
				func(s tiercache.KeyspaceStats) uint64 { return s.Coalesced }),
			counter("invalidated_keys_total", "Keys named by invalidations from the bus, evicted from L1.",
				func(s tiercache.KeyspaceStats) uint64 { return s.Invalidations }),
			counter("l1_flushes_total", "Whole-L1 flushes (bus resets, flush messages).",
				func(s tiercache.KeyspaceStats) uint64 { return s.Flushes }),
			counter("stale_fills_prevented_total", "Fills refused because their key was invalidated, or L1 flushed, while they loaded.",
				func(s tiercache.KeyspaceStats) uint64 { return s.StaleFillsPrevented }),
			counter("coherence_checks_total", "L1 entries the audit compared with Redis.",
				func(s tiercache.KeyspaceStats) uint64 { return s.CoherenceChecks }),
			counter("coherence_violations_total", "L1 entries still different from Redis, and still served, max_staleness after the audit found them different.",
				func(s tiercache.KeyspaceStats) uint64 { return s.CoherenceViolations }),
			gauge("l1_entries", "Live entries in L1 (the negative cache not included).",
				func(s tiercache.KeyspaceStats) int64 { return s.L1Entries }),
			gauge("l1_cost_bytes", "Cost held in L1, in bytes: encoded values plus 400 B of bookkeeping per entry.",
				func(s tiercache.KeyspaceStats) int64 { return s.L1Cost }),
			gauge("l1_max_cost_bytes", "Configured L1 maximum cost, in bytes; 0 without L1.",
				func(s tiercache.KeyspaceStats) int64 { return s.L1MaxCost }),
			gauge("write_behind_pending_records", "Write-behind records this replica holds unacknowledged.",
				func(s tiercache.KeyspaceStats) int64 { return s.WriteBehind.Pending }),
		},
		hits: desc("hits_total", "Reads served from a tier (tier: l1, l2, l1_stale, negative).",
			labelKeyspace, labelTier),
		writes: desc("writes_total", "Set calls and deleted keys (op: set, delete).",
			labelKeyspace, labelOp),
		loadDuration: desc("load_duration_seconds", "Duration of loader calls.",
			labelKeyspace),
		l2Duration: desc("l2_duration_seconds", "Duration of Redis reads and writes (op: read, write).",
			labelKeyspace, labelOp),

		busReceived: desc("bus_messages_received_total", "Messages read from the invalidation channel, well-formed or not."),
		busDropped: desc("bus_messages_dropped_total", "Messages dropped (reason: overflow, malformed).",
			labelReason),
		busReconnects: desc("bus_reconnects_total", "Subscriptions confirmed after the first."),
		busHealthy:    desc("bus_healthy", "1 while the bus is subscribed and answering (L1 serves), else 0."),

		replayGaps:    desc("replay_gaps_total", "Sequence gaps: invalidations missed without a disconnection, found by their numbers."),
		replays:       desc("replay_replays_total", "Resubscriptions answered by reading the missed invalidations back from Redis, L1 kept."),
		replayed:      desc("replay_replayed_messages_total", "Invalidations read back from the logs in Redis and applied."),
		replayFlushes: desc("replay_flushes_total", "Resubscriptions and gaps answered with a flush of every L1 instead of a replay."),

		breakerState: desc("breaker_state", "1 for the circuit breaker's current state (state: closed, half_open, open), 0 for the others.",
			labelState),
		breakerOpens:    desc("breaker_opens_total", "Changes of the circuit breaker to open."),
		breakerRejected: desc("breaker_rejected_total", "Redis calls refused by the open circuit breaker."),
	}
	for i, b := range bounds {
		col.bounds[i] = b.Seconds()
	}
	return col
}

// descs lists every Desc of col, in a fixed order.
func (col *Collector) descs() []*prometheus.Desc {
	ds := make([]*prometheus.Desc, 0, len(col.perKeyspace)+15)
	for _, m := range col.perKeyspace {
		ds = append(ds, m.desc)
	}
	return append(ds, col.hits, col.writes, col.loadDuration, col.l2Duration,
		col.busReceived, col.busDropped, col.busReconnects, col.busHealthy,
		col.breakerState, col.breakerOpens, col.breakerRejected,
		col.replayGaps, col.replays, col.replayed, col.replayFlushes)
}

// Describe sends the Desc of every metric the Collector reports. On a nil
// Collector it sends nothing.
func (col *Collector) Describe(ch chan<- *prometheus.Desc) {
	if col == nil {
		return
	}
	for _, d := range col.descs() {
		ch <- d
	}
}

// Collect takes one Stats snapshot of the Cache and sends its metrics. On a
// nil Collector, or one of a nil Cache, it sends nothing.
func (col *Collector) Collect(ch chan<- prometheus.Metric) {
	if col == nil || col.c == nil {
		return
	}
	s := col.c.Stats()
	for name, k := range s.Keyspaces {
		for _, m := range col.perKeyspace {
			ch <- prometheus.MustNewConstMetric(m.desc, m.typ, m.value(k), name)
		}
		counter := func(d *prometheus.Desc, v uint64, label string) {
			ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), name, label)
		}
		counter(col.hits, k.L1Hits, "l1")
		counter(col.hits, k.L2Hits, "l2")
		counter(col.hits, k.StaleHits, "l1_stale")
		counter(col.hits, k.FailSafeHits, "fail_safe")
		counter(col.hits, k.NegativeHits, "negative")
		counter(col.writes, k.Sets, "set")
		counter(col.writes, k.Deletes, "delete")
		ch <- col.histogram(col.loadDuration, k.LoadLatency, name)
		ch <- col.histogram(col.l2Duration, k.L2ReadLatency, name, "read")
		ch <- col.histogram(col.l2Duration, k.L2WriteLatency, name, "write")
	}
	ch <- prometheus.MustNewConstMetric(col.busReceived, prometheus.CounterValue, float64(s.Bus.Received))
	ch <- prometheus.MustNewConstMetric(col.busDropped, prometheus.CounterValue, float64(s.Bus.Overflows), "overflow")
	ch <- prometheus.MustNewConstMetric(col.busDropped, prometheus.CounterValue, float64(s.Bus.Malformed), "malformed")
	ch <- prometheus.MustNewConstMetric(col.busReconnects, prometheus.CounterValue, float64(s.Bus.Reconnects))
	ch <- prometheus.MustNewConstMetric(col.busHealthy, prometheus.GaugeValue, boolFloat(s.Bus.Healthy))
	for _, st := range [...]struct {
		state l2.BreakerState
		label string
	}{
		{l2.BreakerClosed, "closed"},
		{l2.BreakerHalfOpen, "half_open"},
		{l2.BreakerOpen, "open"},
	} {
		ch <- prometheus.MustNewConstMetric(col.breakerState, prometheus.GaugeValue, boolFloat(s.Breaker.State == st.state), st.label)
	}
	ch <- prometheus.MustNewConstMetric(col.breakerOpens, prometheus.CounterValue, float64(s.Breaker.Opens))
	ch <- prometheus.MustNewConstMetric(col.breakerRejected, prometheus.CounterValue, float64(s.Breaker.Rejected))
	for _, c := range [...]struct {
		d *prometheus.Desc
		v uint64
	}{
		{col.replayGaps, s.Replay.SequenceGaps},
		{col.replays, s.Replay.Replays},
		{col.replayed, s.Replay.Replayed},
		{col.replayFlushes, s.Replay.Flushes},
	} {
		ch <- prometheus.MustNewConstMetric(c.d, prometheus.CounterValue, float64(c.v))
	}
}

// histogram converts h, whose counts are per bucket, to a constant
// Prometheus histogram, whose buckets are cumulative and keyed by their
// upper bound in seconds. The observations above every bound (h's last
// count) are in the implicit +Inf bucket, which is the total count.
func (col *Collector) histogram(d *prometheus.Desc, h tiercache.Histogram, labels ...string) prometheus.Metric {
	buckets := make(map[float64]uint64, len(col.bounds))
	var cum uint64
	for i, b := range col.bounds {
		if i < len(h.Counts) {
			cum += h.Counts[i]
		}
		buckets[b] = cum
	}
	return prometheus.MustNewConstHistogram(d, h.Count(), h.Sum.Seconds(), buckets, labels...)
}

func boolFloat(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
