package catalog

import (
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/tiercache/tiercache"
)

// Report is what RunDemo measured: the same load run with the cache and
// without it.
type Report struct {
	// Options are the options of the run, defaults applied.
	Options DemoOptions `json:"options"`
	// Cached is the run with the cache, Uncached the run without.
	Cached   Phase `json:"cached"`
	Uncached Phase `json:"uncached"`
	// FailSafe is the run with the cache and fail-safe on, made only with
	// a database outage (DemoOptions.DBOutage).
	FailSafe *Phase `json:"fail_safe,omitempty"`
}

// Phase is one run of the load.
type Phase struct {
	// Cached says whether the replicas read through the cache, FailSafe
	// whether with fail-safe on.
	Cached   bool `json:"cached"`
	FailSafe bool `json:"fail_safe,omitempty"`
	// FailSafeHits counts the product pages and listings served by
	// fail-safe (their last known value, the database failing).
	FailSafeHits int64 `json:"fail_safe_hits,omitempty"`
	// Elapsed is how long the load ran.
	Elapsed time.Duration `json:"elapsed_ns"`
	// Requests counts the requests answered 200, Errors those that failed
	// (transport errors and answers other than 200 and 409), of every kind.
	Requests int64 `json:"requests"`
	Errors   int64 `json:"errors"`
	// Detail, Listing and Update are the product pages, the category
	// listings and the updates.
	Detail  RequestStats `json:"detail"`
	Listing RequestStats `json:"listing"`
	Update  RequestStats `json:"update"`
	// DBQueries counts every statement the replicas ran, the view
	// counter's flushes included.
	DBQueries int64 `json:"db_queries"`
	// UpdateRetries counts the update tries the replicas ran again after
	// losing a race with another update of the product (ErrConflict).
	UpdateRetries int64 `json:"update_retries"`
	// StaleReads counts the product pages that returned a version older
	// than one an update had returned before the read began, and that the
	// replica read after it had applied that update's invalidation (the
	// replica that wrote applies it before answering). tiercache promises
	// none; without the cache every such read counts.
	StaleReads int64 `json:"stale_reads"`
	// WindowReads counts the product pages that returned such an older
	// version before their replica had applied the update's invalidation:
	// the tens of microseconds the invalidation takes to arrive, which
	// tiercache's contract leaves open.
	WindowReads int64 `json:"window_reads"`
	// Views is the view counter's accounting.
	Views ViewStats `json:"views"`
	// Tiers holds each replica's reads per tier, by keyspace (product and
	// category); empty without the cache.
	Tiers []TierStats `json:"tiers,omitempty"`
	// PubSubKill is what the kill of every pub/sub connection did, with
	// DemoOptions.KillPubSubAt; nil otherwise.
	PubSubKill *PubSubKill `json:"pubsub_kill,omitempty"`
	// Lag is the invalidation lag: from an update's Write returning on one
	// replica to each other replica's eviction of the product. Zero
	// without the cache.
	Lag LagStats `json:"lag"`
	// Samples are the progress samples, one per DemoOptions.ProgressEvery.
	Samples []Sample `json:"samples,omitempty"`
}

// RequestsPerSecond is the phase's throughput.
func (p Phase) RequestsPerSecond() float64 {
	if p.Elapsed <= 0 {
		return 0
	}
	return float64(p.Requests) / p.Elapsed.Seconds()
}

// HitRatio is the share of product and listing reads, on every replica,
// served from L1 or Redis; 0 without the cache.
func (p Phase) HitRatio() float64 {
	var t TierStats
	for _, s := range p.Tiers {
		t.L1Hits += s.L1Hits
		t.L2Hits += s.L2Hits
		t.Misses += s.Misses
		t.Loads += s.Loads
	}
	return t.HitRatio()
}

// RequestStats describes the requests of one kind.
type RequestStats struct {
	// Requests counts those answered 200; Errors those that failed;
	// Conflicts the updates refused with 409 (the product kept changing
	// under them).
	Requests  int64 `json:"requests"`
	Errors    int64 `json:"errors"`
	Conflicts int64 `json:"conflicts,omitempty"`
	// DBQueries sums the statements they ran (HeaderDBQueries).
	DBQueries int64 `json:"db_queries"`
	// P50 and P99 are latency quantiles, as the client saw them.
	P50 time.Duration `json:"p50_ns"`
	P99 time.Duration `json:"p99_ns"`
}

// QueriesPerRequest is DBQueries over Requests, 0 without requests.
func (r RequestStats) QueriesPerRequest() float64 {
	if r.Requests == 0 {
		return 0
	}
	return float64(r.DBQueries) / float64(r.Requests)
}

// ViewStats is the view counter's accounting.
type ViewStats struct {
	// Views counts the views the replicas counted.
	Views int64 `json:"views"`
	// DBWrites counts the database writes of view counts (a counter flush
	// with the cache, a view without), RowsWritten the product rows they
	// updated.
	DBWrites    int64 `json:"db_writes"`
	RowsWritten int64 `json:"rows_written"`
	// InDB is the sum of the views column once every replica had stopped:
	// Views when no counted view was lost.
	InDB int64 `json:"in_db"`
}

// TierStats counts one replica's reads of one keyspace per tier.
type TierStats struct {
	Instance string `json:"instance"`
	Keyspace string `json:"keyspace"`
	L1Hits   uint64 `json:"l1_hits"`
	L2Hits   uint64 `json:"l2_hits"`
	Misses   uint64 `json:"misses"`
	Loads    uint64 `json:"loads"`
	// CoherenceChecks and CoherenceViolations are the replica's coherence
	// audit of the keyspace (tiercache.KeyspaceStats).
	CoherenceChecks     uint64 `json:"coherence_checks"`
	CoherenceViolations uint64 `json:"coherence_violations"`
}

func (t TierStats) reads() uint64 { return t.L1Hits + t.L2Hits + t.Misses + t.Loads }

func ratio(n, d uint64) float64 {
	if d == 0 {
		return 0
	}
	return float64(n) / float64(d)
}

// L1Ratio is the share of reads served from L1.
func (t TierStats) L1Ratio() float64 { return ratio(t.L1Hits, t.reads()) }

// L2Ratio is the share of reads served from Redis.
func (t TierStats) L2Ratio() float64 { return ratio(t.L2Hits, t.reads()) }

// HitRatio is the share of reads served from either tier.
func (t TierStats) HitRatio() float64 { return ratio(t.L1Hits+t.L2Hits, t.reads()) }

// LagStats is the distribution of invalidation lags.
type LagStats struct {
	// Samples counts the (update, other replica) pairs measured.
	Samples int `json:"samples"`
	// P50, P99 and Max are quantiles of the lag; an eviction applied
	// before the Write returned has a negative lag.
	P50 time.Duration `json:"p50_ns"`
	P99 time.Duration `json:"p99_ns"`
	Max time.Duration `json:"max_ns"`
	// BeforeReturn counts the evictions applied before the Write returned.
	BeforeReturn int `json:"before_return"`
	// Missing counts the pairs for which no eviction was seen.
	Missing int `json:"missing"`
	// Replicas is the same, per replica that evicted.
	Replicas []ReplicaLag `json:"replicas,omitempty"`
}

// ReplicaLag is the invalidation lag of the evictions of one replica.
type ReplicaLag struct {
	Instance string        `json:"instance"`
	Samples  int           `json:"samples"`
	P50      time.Duration `json:"p50_ns"`
	P99      time.Duration `json:"p99_ns"`
	Max      time.Duration `json:"max_ns"`
}

// Sample is one progress line.
type Sample struct {
	Elapsed   time.Duration `json:"elapsed_ns"`
	Requests  int64         `json:"requests"`   // finished so far
	PerSecond float64       `json:"per_second"` // since the sample before
	HitRatio  float64       `json:"hit_ratio"`  // so far; -1 without the cache
}

// WriteText writes the report as a table.
func (r Report) WriteText(w io.Writer) error {
	o := r.Options
	var b strings.Builder
	db := "one SQLite file (in-process: microseconds a statement)"
	if o.QueryLatency > 0 {
		db = fmt.Sprintf("one SQLite file, each statement delayed %v to emulate a networked database", o.QueryLatency)
	}
	fmt.Fprintf(&b, "Catalog demo: %d replicas (fx apps, one process), %s, Redis %s\n", o.Replicas, db, o.RedisAddr)
	fmt.Fprintf(&b, "%d products in %d categories, Zipf s=%.2f; %.0f%% updates, %.0f%% listings, the rest product pages; %d workers\n\n",
		o.Products, o.Categories, o.ZipfS, 100*o.UpdateShare, 100*o.ListingShare, o.Workers)

	on, off := r.Cached, r.Uncached
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', tabwriter.AlignRight)
	row := func(name, a, c string) { fmt.Fprintf(tw, "%s\t%s\t%s\t\n", name, a, c) }
	row("", "cache on", "cache off")
	row("requests", thousands(on.Requests), thousands(off.Requests))
	row("requests/s", thousands(int64(on.RequestsPerSecond())), thousands(int64(off.RequestsPerSecond())))
	row("errors", thousands(on.Errors), thousands(off.Errors))
	for _, k := range []struct {
		name    string
		on, off RequestStats
	}{{"product page", on.Detail, off.Detail}, {"category listing", on.Listing, off.Listing}, {"update", on.Update, off.Update}} {
		row(k.name+": requests", thousands(k.on.Requests), thousands(k.off.Requests))
		row("  DB queries/request", fmt.Sprintf("%.2f", k.on.QueriesPerRequest()), fmt.Sprintf("%.2f", k.off.QueriesPerRequest()))
		row("  p50 / p99", latencies(k.on), latencies(k.off))
	}
	row("update retries (lost a race)", thousands(on.UpdateRetries), thousands(off.UpdateRetries))
	row("update conflicts (409)", thousands(on.Update.Conflicts), thousands(off.Update.Conflicts))
	row("DB queries, all", thousands(on.DBQueries), thousands(off.DBQueries))
	row("hit ratio", fmt.Sprintf("%.3f", on.HitRatio()), "-")
	row("stale reads", thousands(on.StaleReads), thousands(off.StaleReads))
	row("old version in the invalidation window", thousands(on.WindowReads), "-")
	row("views counted", thousands(on.Views.Views), thousands(off.Views.Views))
	row("  DB writes of views", thousands(on.Views.DBWrites), thousands(off.Views.DBWrites))
	row("  rows written", thousands(on.Views.RowsWritten), thousands(off.Views.RowsWritten))
	row("  views in the DB after stop", thousands(on.Views.InDB), thousands(off.Views.InDB))
	tw.Flush()

	if fs := r.FailSafe; fs != nil {
		fmt.Fprintf(&b, "\nDatabase outage: the database failed for %v in the middle of each run; products and listings live %v in the cache, fail-safe serves them up to %v past it:\n",
			o.DBOutage, DemoOutageTTL, DemoOutageMaxAge)
		tw = tabwriter.NewWriter(&b, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintf(tw, "\trequests sent\terrors\tpage errors\tlisting errors\tupdate errors\tfail-safe reads\tstale reads\t\n")
		for _, p := range []struct {
			name string
			ph   Phase
		}{{"cache on, fail-safe off", on}, {"cache on, fail-safe on", *fs}, {"cache off", off}} {
			fsReads := "-"
			if p.ph.Cached {
				fsReads = thousands(p.ph.FailSafeHits)
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t\n", p.name, thousands(p.ph.Requests+p.ph.Errors), thousands(p.ph.Errors),
				thousands(p.ph.Detail.Errors), thousands(p.ph.Listing.Errors), thousands(p.ph.Update.Errors), fsReads, thousands(p.ph.StaleReads))
		}
		tw.Flush()
		b.WriteString("  Updates fail while the database is down whatever the cache does; fail-safe turns the failed reads of expired pages into their last known value.\n")
	}

	fmt.Fprintf(&b, "\nUpdates: p99 %s with the cache, %s without; %.2f DB queries per update with the cache, %.2f without.\n",
		latencyOrDash(on.Update, on.Update.P99), latencyOrDash(off.Update, off.Update.P99), on.Update.QueriesPerRequest(), off.Update.QueriesPerRequest())
	b.WriteString(wrapText(r.updateNote(false), 100, "  "))

	if len(on.Tiers) > 0 {
		b.WriteString("\nReads per tier, cache on:\n")
		tw = tabwriter.NewWriter(&b, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintf(tw, "replica\tkeyspace\tL1 hits\tRedis hits\tDB loads\tL1\tRedis\tDB\taudit checks\tviolations\t\n")
		for _, t := range on.Tiers {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%.1f%%\t%.1f%%\t%.1f%%\t%s\t%s\t\n", t.Instance, t.Keyspace,
				thousands(int64(t.L1Hits)), thousands(int64(t.L2Hits)), thousands(int64(t.Loads+t.Misses)),
				100*t.L1Ratio(), 100*t.L2Ratio(), 100*(1-t.HitRatio()),
				thousands(int64(t.CoherenceChecks)), thousands(int64(t.CoherenceViolations)))
		}
		tw.Flush()
	}
	l := on.Lag
	fmt.Fprintf(&b, "\nInvalidation lag (an update's Write returning on one replica -> each other replica evicted the product):\n")
	fmt.Fprintf(&b, "  %s samples, p50 %v, p99 %v, max %v (negative: before); %s applied before the Write returned, %s not seen\n",
		thousands(int64(l.Samples)), roundLatency(l.P50), roundLatency(l.P99), roundLatency(l.Max), thousands(int64(l.BeforeReturn)), thousands(int64(l.Missing)))
	for _, rl := range l.Replicas {
		fmt.Fprintf(&b, "  %s: %s samples, p50 %v, p99 %v, max %v\n", rl.Instance, thousands(int64(rl.Samples)), roundLatency(rl.P50), roundLatency(rl.P99), roundLatency(rl.Max))
	}
	if k := on.PubSubKill; k != nil {
		b.WriteString("\n" + wrapText(k.String()+".", 100, "  "))
	}
	fmt.Fprintf(&b, "\nAudit: each replica compares up to %d of its L1 entries a second with Redis (checks); a violation is one still different, and served, max_staleness later.\n", tiercache.DefaultAuditRate)
	fmt.Fprintf(&b, "\nStale reads: a product page that began after the replica applied the invalidation of an update that had returned, and served an older version.\n")
	fmt.Fprintf(&b, "Views: with the cache, the counter reaches SQLite every %d views of a product or every %v; without, every view is a write.\n",
		o.ViewsEvery, o.ViewsInterval)
	_, err := io.WriteString(w, b.String())
	return err
}

// updateNote says what the update latencies measure and what makes them
// long with the cache, from what the service does: in a sentence or three
// for the HTML chart's caption when short, in full otherwise.
func (r Report) updateNote(short bool) string {
	on, off, o := r.Cached, r.Uncached, r.Options
	var b strings.Builder
	if short {
		b.WriteString("Update p99: the client's wait for PUT /products/{id}: reading the product (from the cache with it, else the database), the write-through Write (SQLite's write transaction, then Redis) and the listing's invalidation.")
	} else {
		fmt.Fprintf(&b, "An update's latency is the client's wait for PUT /products/{id}, answered 200: the service reads the product "+
			"(with the cache, its cached page, usually from L1; without, %d statements), writes it through (tiercache's Write runs SQLite's "+
			"write transaction, a compare-and-set on the version, then stores the value with its invalidation in Redis in one script) and "+
			"invalidates the category's listing by its tag (two Redis round trips)", DetailQueries)
		if on.UpdateRetries+off.UpdateRetries > 0 {
			fmt.Fprintf(&b, "; a try that lost a race to another update of the product (or started from a cached page an update had "+
				"just replaced) is run again, reading the database (%s tries with the cache, %s without)",
				thousands(on.UpdateRetries), thousands(off.UpdateRetries))
		}
		b.WriteString(".")
	}
	if v := on.Views; v.DBWrites > 0 && o.QueryLatency > 0 && !short {
		fmt.Fprintf(&b, " Every write waits for SQLite's one write lock: with the cache the view counter's flushes take it %s times, "+
			"each for two statements; without, every view takes it, for one.", thousands(v.DBWrites))
	}
	return b.String()
}

func latencies(r RequestStats) string {
	if r.Requests == 0 {
		return "-"
	}
	return fmt.Sprintf("%v / %v", roundLatency(r.P50), roundLatency(r.P99))
}

// roundLatency keeps three significant digits or so.
func roundLatency(d time.Duration) time.Duration {
	switch {
	case d >= 100*time.Millisecond:
		return d.Round(time.Millisecond)
	case d >= 100*time.Microsecond:
		return d.Round(10 * time.Microsecond)
	default:
		return d.Round(time.Microsecond)
	}
}

// wrapText breaks s into lines of at most width bytes where it can, at
// spaces, each line after indent and ending with a newline.
func wrapText(s string, width int, indent string) string {
	var b strings.Builder
	line := 0
	for i, w := range strings.Fields(s) {
		if i > 0 && line+1+len(w) > width {
			b.WriteString("\n")
			line = 0
		}
		if line == 0 {
			b.WriteString(indent)
			line = len(indent)
		} else {
			b.WriteString(" ")
			line++
		}
		b.WriteString(w)
		line += len(w)
	}
	b.WriteString("\n")
	return b.String()
}

// thousands formats n with thin separators: 12,345.
func thousands(n int64) string {
	s := strconv.FormatInt(n, 10)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}
