package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tiercache/tiercache"
	"github.com/tiercache/tiercache/bus"
	"github.com/tiercache/tiercache/internal/slots"
)

// checkPoll is how often check reads the presence records while it waits.
const checkPoll = 20 * time.Millisecond

// checkLine is one replica as check --json prints it.
type checkLine struct {
	ID      string        `json:"id"`
	Host    string        `json:"host"`
	Applied bool          `json:"applied"`
	Lag     time.Duration `json:"lag,omitempty"` // nanoseconds from the publication to the replica's bus handing it over
}

func runCheck(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newCommandFlags("check", []string{"check [--wait DURATION] [--json] [connection flags]"}, `
Publishes a canary invalidation, which evicts nothing, and waits at most
--wait until every live replica of the namespace (from the presence records,
read before the canary) has written in its record that its bus applied it:
a replica writes its record as soon as it applies a canary. Prints, per
replica, whether it applied the canary and how long after the publication
its bus handed it over (the replica's clock against this one's: across
hosts, their skew counts). Exits 0 when every replica applied it, 1 when one
did not within --wait, 3 when the namespace has no live replica. A replica
with heartbeats off (heartbeat_interval negative) writes no record and is
not checked.`, true)
	wait := fs.Duration("wait", 5*time.Second, "how long to wait for every replica")
	asJSON := fs.Bool("json", false, "print the replicas as a JSON array")
	rest, err := fs.parse(args, stdout)
	if err != nil {
		return err
	}
	switch {
	case len(rest) > 0:
		return usageErrorf("no arguments expected, got %q", rest)
	case *wait <= 0:
		return usageErrorf("--wait %v: want a positive duration", *wait)
	}
	client, err := fs.conn.connect(ctx)
	if err != nil {
		return err
	}
	defer client.Close()
	ns := fs.conn.namespace
	reps, listErr := tiercache.ListReplicas(ctx, client, ns)
	if len(reps) == 0 {
		if listErr != nil {
			return firstErrors(listErr, shownErrors)
		}
		return fs.conn.noReplica(ctx, client)
	}
	var raw [8]byte
	_, _ = rand.Read(raw[:]) // crypto/rand.Read never fails
	id := hex.EncodeToString(raw[:])
	published := time.Now()
	if _, err := publishMessage(ctx, client, fs.conn.channel, fs.conn.sharded(client), bus.Message{Origin: cliOrigin(), Canary: id}); err != nil {
		return err
	}
	applied := make(map[string]time.Time, len(reps))
	deadline := time.NewTimer(*wait)
	defer deadline.Stop()
	tick := time.NewTicker(checkPoll)
	defer tick.Stop()
	for len(applied) < len(reps) {
		now, err := tiercache.ListReplicas(ctx, client, ns)
		if now == nil && err != nil {
			return firstErrors(err, shownErrors)
		}
		for _, r := range now {
			if r.Canary == id {
				applied[r.ID] = r.CanaryAt
			}
		}
		if len(applied) == len(reps) {
			break
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("interrupted: %w", ctx.Err())
		case <-deadline.C:
			return finishCheck(stdout, reps, applied, published, *asJSON, *wait)
		case <-tick.C:
		}
	}
	return finishCheck(stdout, reps, applied, published, *asJSON, *wait)
}

// finishCheck prints the replicas and returns an error when one of them did
// not apply the canary.
func finishCheck(w io.Writer, reps []tiercache.Replica, applied map[string]time.Time, published time.Time, asJSON bool, wait time.Duration) error {
	lines := make([]checkLine, len(reps))
	missed := 0
	for i, r := range reps {
		lines[i] = checkLine{ID: r.ID, Host: r.Host}
		if at, ok := applied[r.ID]; ok {
			lines[i].Applied, lines[i].Lag = true, max(at.Sub(published), 0)
		} else {
			missed++
		}
	}
	if asJSON {
		if err := writeJSON(w, lines); err != nil {
			return err
		}
	} else {
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "REPLICA\tHOST\tAPPLIED\tLAG")
		for _, l := range lines {
			lag, yes := "-", "no"
			if l.Applied {
				lag, yes = l.Lag.Round(time.Microsecond).String(), "yes"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", escapeText(l.ID), escapeText(l.Host), yes, lag)
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	if missed > 0 {
		return fmt.Errorf("%d of %d replicas did not apply the canary within %v", missed, len(reps), wait)
	}
	return nil
}

// publishMessage publishes m on channel, or, sharded, on the sharded
// channel of slot 0 (a sharded subscriber listens to the channels of every
// slot); it returns the channel it published on.
func publishMessage(ctx context.Context, client redis.UniversalClient, channel string, sharded bool, m bus.Message) (string, error) {
	if !sharded {
		return channel, bus.Publish(ctx, client, channel, m)
	}
	channel = slots.Channel(channel, 0)
	b, err := m.Marshal()
	if err != nil {
		return channel, err
	}
	if err := client.SPublish(ctx, channel, b).Err(); err != nil {
		return channel, fmt.Errorf("spublish on %q: %w", channel, err)
	}
	return channel, nil
}
