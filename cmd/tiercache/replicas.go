package main

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/tiercache/tiercache"
)

func runReplicas(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newCommandFlags("replicas", []string{"replicas [--json] [connection flags]"}, `
Lists the live replicas of the namespace from the presence records they keep
in Redis ("<namespace>::replicas{<namespace>}:<id>", rewritten every heartbeat interval,
gone three intervals after a replica dies): host, pid, version, the state of
the invalidation bus and of the circuit breaker, keyspaces, L1 size, hit
ratio, the last invalidation it applied and when it last wrote its record.
--json prints the records as they are, a JSON array.`, true)
	asJSON := fs.Bool("json", false, "print the presence records as a JSON array")
	rest, err := fs.parse(args, stdout)
	if err != nil {
		return err
	}
	if len(rest) > 0 {
		return usageErrorf("no arguments expected, got %q", rest)
	}
	reps, listErr, err := fs.conn.replicas(ctx)
	if err != nil {
		return err
	}
	if *asJSON {
		if reps == nil {
			reps = []tiercache.Replica{}
		}
		if err := writeJSON(stdout, reps); err != nil {
			return err
		}
	} else {
		printReplicas(stdout, stderr, reps, fs.conn.namespace, time.Now())
	}
	if listErr != nil {
		return fmt.Errorf("some presence records could not be read: %w", listErr)
	}
	return nil
}

func printReplicas(stdout, stderr io.Writer, reps []tiercache.Replica, namespace string, now time.Time) {
	if len(reps) == 0 {
		fmt.Fprintf(stderr, "no live replica in namespace %q (replicas write presence records unless heartbeat_interval is negative)\n", namespace)
		return
	}
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tHOST\tPID\tVERSION\tBUS\tBREAKER\tKEYSPACES\tL1-ENTRIES\tL1-COST\tHIT%\tLAST-INVALIDATION\tSEEN")
	for _, r := range reps {
		bus := "down"
		if r.BusHealthy {
			bus = "healthy"
		}
		var names []string
		var reads uint64
		for name, ks := range r.Stats.Keyspaces {
			names = append(names, name)
			reads += ks.L1Hits + ks.L2Hits + ks.Misses + ks.Loads
		}
		slices.Sort(names)
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%s\t%s\t%d\t%s\t%s\t%s\t%s\n",
			r.ID, r.Host, r.PID, r.Version, bus, r.Breaker, dashIfEmpty(strings.Join(names, ",")),
			r.L1Entries, bytesIEC(r.L1Cost), percent(r.HitRatio, reads), age(now, r.LastInvalidation), age(now, r.Seen))
	}
	tw.Flush()
}

func dashIfEmpty(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
