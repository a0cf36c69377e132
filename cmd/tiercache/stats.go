package main

import (
	"context"
	"fmt"
	"io"
	"slices"
	"text/tabwriter"
	"time"

	"github.com/tiercache/tiercache"
)

// statsRow is one keyspace of one replica, or of all of them summed.
type statsRow struct {
	L1Hits        uint64        `json:"l1_hits"`
	L2Hits        uint64        `json:"l2_hits"`
	Misses        uint64        `json:"misses"`
	Loads         uint64        `json:"loads"`
	LoadErrors    uint64        `json:"load_errors"`
	HitRatio      float64       `json:"hit_ratio"`
	LoadP99       time.Duration `json:"load_p99_ns"` // the upper bound of the bucket holding the 99th percentile
	L1Entries     int64         `json:"l1_entries"`
	L1Cost        int64         `json:"l1_cost"`
	Published     uint64        `json:"published"`
	Invalidations uint64        `json:"invalidations"`
}

func rowOf(ks tiercache.KeyspaceStats) statsRow {
	return statsRow{
		L1Hits: ks.L1Hits, L2Hits: ks.L2Hits, Misses: ks.Misses, Loads: ks.Loads, LoadErrors: ks.LoadErrors,
		HitRatio: ks.HitRatio(), LoadP99: ks.LoadLatency.Quantile(0.99),
		L1Entries: ks.L1Entries, L1Cost: ks.L1Cost, Published: ks.Published, Invalidations: ks.Invalidations,
	}
}

func (r statsRow) reads() uint64 { return r.L1Hits + r.L2Hits + r.Misses + r.Loads }

// keyspaceStats is one keyspace: each replica's row, by id, and their sum.
type keyspaceStats struct {
	Replicas map[string]statsRow `json:"replicas"`
	Total    statsRow            `json:"total"`

	loads tiercache.Histogram // the replicas' load latencies, summed: the total's p99
}

// add adds the counters of replica id.
func (s *keyspaceStats) add(id string, ks tiercache.KeyspaceStats) {
	r := rowOf(ks)
	s.Replicas[id] = r
	t := &s.Total
	t.L1Hits += r.L1Hits
	t.L2Hits += r.L2Hits
	t.Misses += r.Misses
	t.Loads += r.Loads
	t.LoadErrors += r.LoadErrors
	t.L1Entries += r.L1Entries
	t.L1Cost += r.L1Cost
	t.Published += r.Published
	t.Invalidations += r.Invalidations
	t.HitRatio = tiercache.KeyspaceStats{L1Hits: t.L1Hits, L2Hits: t.L2Hits, Misses: t.Misses, Loads: t.Loads}.HitRatio()
	h := ks.LoadLatency
	if n := len(h.Counts); n > len(s.loads.Counts) {
		s.loads.Counts = append(s.loads.Counts, make([]uint64, n-len(s.loads.Counts))...)
	}
	for i, c := range h.Counts {
		s.loads.Counts[i] += c
	}
	s.loads.Sum += h.Sum
	t.LoadP99 = s.loads.Quantile(0.99)
}

func runStats(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newCommandFlags("stats", []string{"stats [--keyspace KEYSPACE] [--json] [connection flags]"}, `
Prints, from the presence records of the live replicas, each keyspace's
counters per replica and a TOTAL row summing the replicas: reads served from
L1 and from Redis, misses, loader calls and their errors, the hit ratio
(hits over hits, misses and loads), the 99th percentile of load latency (the
upper bound of its histogram bucket), L1 entries and bytes, invalidations
published by the keyspace's writes and keys evicted by invalidations from
the bus. The counters are those of each replica's last heartbeat. Records
are read, refused and escaped as by replicas ('tiercache replicas --help').
--json prints {"keyspaces": {KEYSPACE: {"replicas": {ID: {...}}, "total": {...}}}}.
With no live replica in the namespace, it says so on stderr, naming the
namespaces that have some, and exits 3, as replicas does.`, true)
	only := fs.String("keyspace", "", "only this `keyspace`")
	asJSON := fs.Bool("json", false, "print JSON")
	rest, err := fs.parse(args, stdout)
	if err != nil {
		return err
	}
	if len(rest) > 0 {
		return usageErrorf("no arguments expected, got %q (a keyspace goes with --keyspace)", rest)
	}
	if *only != "" {
		if err := checkKeyspaceName(*only); err != nil {
			return err
		}
	}
	reps, listErr, none, err := fs.conn.replicas(ctx)
	if err != nil {
		return err
	}
	if *only != "" && len(reps) > 0 && !slices.Contains(knownKeyspaces(reps), *only) {
		return usageErrorf("unknown keyspace %q: the %s in namespace %q use %s",
			*only, plural(len(reps), "live replica"), fs.conn.namespace, listOrNone(knownKeyspaces(reps)))
	}
	all := map[string]*keyspaceStats{}
	for _, r := range reps {
		for name, ks := range r.Stats.Keyspaces {
			if *only != "" && name != *only {
				continue
			}
			s := all[name]
			if s == nil {
				s = &keyspaceStats{Replicas: map[string]statsRow{}}
				all[name] = s
			}
			s.add(r.ID, ks)
		}
	}
	if *asJSON {
		err = writeJSON(stdout, map[string]any{"keyspaces": all})
	} else if none == nil {
		printStats(stdout, stderr, all, fs.conn.namespace)
	}
	if err == nil && none != nil {
		err = none
	}
	if err == nil && listErr != nil {
		err = fmt.Errorf("some presence records could not be read: %w", listErr)
	}
	return err
}

// printStats prints the rows of every keyspace as a table, the names of
// keyspaces and replicas through printable (they come from Redis).
func printStats(stdout, stderr io.Writer, all map[string]*keyspaceStats, namespace string) {
	if len(all) == 0 {
		fmt.Fprintf(stderr, "no live replica in namespace %q reports a keyspace\n", namespace)
		return
	}
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "KEYSPACE\tREPLICA\tL1-HITS\tL2-HITS\tMISSES\tLOADS\tLOAD-ERRORS\tHIT%\tLOAD-P99\tL1-ENTRIES\tL1-COST\tPUBLISHED\tINVALIDATIONS")
	line := func(ks, replica string, r statsRow) {
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%d\t%d\t%d\t%s\t%s\t%d\t%s\t%d\t%d\n", printable(ks), printable(replica),
			r.L1Hits, r.L2Hits, r.Misses, r.Loads, r.LoadErrors, percent(r.HitRatio, r.reads()),
			latency(r.LoadP99, r.Loads), r.L1Entries, bytesIEC(r.L1Cost), r.Published, r.Invalidations)
	}
	names := make([]string, 0, len(all))
	for name := range all {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		s := all[name]
		ids := make([]string, 0, len(s.Replicas))
		for id := range s.Replicas {
			ids = append(ids, id)
		}
		slices.Sort(ids)
		for _, id := range ids {
			line(name, id, s.Replicas[id])
		}
		line(name, "TOTAL", s.Total)
	}
	tw.Flush()
}
