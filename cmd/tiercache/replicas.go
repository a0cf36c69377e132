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

func runReplicas(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newCommandFlags("replicas", []string{"replicas [--json] [connection flags]"}, fmt.Sprintf(`
Lists the live replicas of the namespace from the presence records they keep
in Redis ("<namespace>::replicas{<namespace>}:<id>", rewritten every heartbeat interval,
gone three intervals after a replica dies): host, pid, version, the state of
the invalidation bus and of the circuit breaker, keyspaces, L1 size, hit
ratio, the last invalidation it applied and when it last wrote its record.
--json prints the records as they are, a JSON array.
A record is not listed, but named on stderr (and the exit code is 1), when
it is over %d KiB (no more is read of it), names more than %d keyspaces, or
has an id, host, version or keyspace name that is too long or holds a
character that is not printable (control characters, so escape sequences).
Strings that are not printable are shown quoted and escaped ("\x1b[2J"), in
JSON as \u escapes.

With no live replica in the namespace, it says so on stderr and exits 3
(--json prints []), naming the namespaces that have live replicas, found by
a bounded SCAN for their presence indexes ("*::replicas{*}", at most %d
SCAN calls of COUNT %d per server, %d namespaces named at most): a wrong
--namespace (or %s) shows at once.`, tiercache.MaxReplicaRecord>>10, tiercache.MaxReplicaKeyspaces,
		namespaceScanRounds, namespaceScanCount, shownNamespaces, envNamespace), true)
	asJSON := fs.Bool("json", false, "print the presence records as a JSON array")
	rest, err := fs.parse(args, stdout)
	if err != nil {
		return err
	}
	if len(rest) > 0 {
		return usageErrorf("no arguments expected, got %q", rest)
	}
	reps, listErr, none, err := fs.conn.replicas(ctx)
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
		printReplicas(stdout, reps, time.Now())
	}
	if none != nil {
		return none
	}
	if listErr != nil {
		return fmt.Errorf("some presence records could not be read: %w", listErr)
	}
	return nil
}

// shownKeyspaces is how many keyspaces of a replica the table names; --json
// has them all.
const shownKeyspaces = 20

// printReplicas prints reps as a table. Every string of a record is printed
// through printable: a presence record may have been written by anyone who
// can write to Redis.
func printReplicas(stdout io.Writer, reps []tiercache.Replica, now time.Time) {
	if len(reps) == 0 {
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
		for i, n := range names {
			names[i] = printable(n)
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%s\t%s\t%d\t%s\t%s\t%s\t%s\n",
			printable(r.ID), printable(r.Host), r.PID, printable(r.Version), bus, printable(r.Breaker), dashIfEmpty(shortList(names, shownKeyspaces)),
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
