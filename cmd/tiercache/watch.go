package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tiercache/tiercache/bus"
)

const (
	// watchIdle is how long watch waits for a message before it PINGs the
	// subscription, in --timeout; a PING unanswered within --timeout drops
	// the subscription.
	watchIdle = 5
	// watchMaxBackoff bounds the wait between two subscription attempts.
	watchMaxBackoff = 2 * time.Second
	// watchShownKeys is how many keys a text line shows; --json shows all.
	watchShownKeys = 20
)

// watchLine is one message as --json prints it.
type watchLine struct {
	Time     time.Time `json:"time"`
	Origin   string    `json:"origin"`
	Keyspace string    `json:"keyspace"`
	Keys     []string  `json:"keys"`
	Tags     []string  `json:"tags"`
	Flush    bool      `json:"flush"`
	Size     int       `json:"size"`            // bytes on the wire
	Error    string    `json:"error,omitempty"` // set, and the rest empty, for a message bus.Unmarshal refused
}

func runWatch(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newCommandFlags("watch", []string{"watch [--count N] [--for DURATION] [--json] [connection flags]"}, `
Subscribes to the invalidation channel (with sharded pub/sub, the
--pubsub-mode default on a Cluster: to the channel of every hash slot on
every master) and prints every message as it arrives, decoded as the replicas decode it (bus.Unmarshal, bounded): time,
origin (the publisher's instance id, "" for other services), keyspace, keys,
tags and flush. A message the replicas would refuse prints a line saying why,
with its size, and watch goes on. "subscribed to CHANNEL" goes to stderr once
Redis has confirmed the subscription. A subscription lost, or silent (after
5 times --timeout without a message, a PING unanswered within --timeout), is
made again; what was published meanwhile is missed, and watch says so. watch runs until --count messages, --for, or
SIGINT/SIGTERM, and exits 0 then.`, true)
	count := fs.Int("count", 0, "exit after `N` messages, malformed ones included (0: no limit)")
	dur := fs.Duration("for", 0, "exit after this long (0: until a signal)")
	asJSON := fs.Bool("json", false, "print one JSON object per line")
	rest, err := fs.parse(args, stdout)
	if err != nil {
		return err
	}
	switch {
	case len(rest) > 0:
		return usageErrorf("no arguments expected, got %q", rest)
	case *count < 0:
		return usageErrorf("--count %d: want 0 or more", *count)
	case *dur < 0:
		return usageErrorf("--for %v: want 0 or more", *dur)
	}
	client, err := fs.conn.connect(ctx)
	if err != nil {
		return err
	}
	defer client.Close()
	if *dur > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, *dur)
		defer cancel()
	}
	w := &watcher{client: client, channel: fs.conn.channel, sharded: fs.conn.sharded(client), timeout: fs.conn.timeout, count: *count, json: *asJSON, stdout: stdout, stderr: stderr}
	return w.run(ctx)
}

// watcher is one run of watch.
type watcher struct {
	client  redis.UniversalClient
	channel string
	sharded bool // SSUBSCRIBE to every slot's channel on every master (bus.SubscribeSharded)
	timeout time.Duration
	count   int
	json    bool
	stdout  io.Writer
	stderr  io.Writer

	mu sync.Mutex // protects ps
	ps watchSub   // the subscription; replaced when it goes silent, nil once ctx is done
}

// watchSub is what watch uses of a subscription: a *redis.PubSub, a
// *bus.ShardedSubscription, or a failedSub.
type watchSub interface {
	ReceiveTimeout(ctx context.Context, timeout time.Duration) (any, error)
	Ping(ctx context.Context, payload ...string) error
	Close() error
}

// failedSub is a sharded subscription that could not be opened: its first
// receive returns why.
type failedSub struct{ err error }

func (f failedSub) ReceiveTimeout(context.Context, time.Duration) (any, error) { return nil, f.err }
func (f failedSub) Ping(context.Context, ...string) error                      { return f.err }
func (f failedSub) Close() error                                               { return nil }

// subscribe opens a new subscription to the channel: classic, or sharded
// on every master (a sharded one does not reconnect by itself: a failure
// is followed by a new one).
func (w *watcher) subscribe(ctx context.Context) watchSub {
	if !w.sharded {
		return w.client.Subscribe(ctx, w.channel)
	}
	ss, err := bus.SubscribeSharded(ctx, w.client.(*redis.ClusterClient), w.channel, w.timeout)
	if err != nil {
		return failedSub{err}
	}
	return ss
}

// swap installs ps as the subscription and closes the one before.
func (w *watcher) swap(ps watchSub) {
	w.mu.Lock()
	old := w.ps
	w.ps = ps
	w.mu.Unlock()
	if old != nil {
		old.Close()
	}
}

func (w *watcher) run(ctx context.Context) error {
	// Closing the subscription is what interrupts a blocked receive.
	stop := context.AfterFunc(ctx, func() { w.swap(nil) })
	defer stop()
	defer w.swap(nil)

	ps := w.subscribe(ctx)
	w.swap(ps)
	var (
		seen     int
		subs     int  // confirmations received
		pinged   bool // a PING awaits its PONG
		failing  bool // the last receive failed
		backoff  time.Duration
		deadline = time.Now().Add(w.timeout) // for the first confirmation
	)
	for {
		wait := watchIdle * w.timeout
		switch {
		case subs == 0:
			wait = max(time.Until(deadline), time.Millisecond)
		case pinged:
			wait = w.timeout
		}
		msg, err := ps.ReceiveTimeout(ctx, wait)
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			var ne net.Error
			timeout := errors.As(err, &ne) && ne.Timeout()
			switch {
			case subs == 0 && (timeout || !time.Now().Before(deadline)):
				return fmt.Errorf("subscribe to %q: no confirmation within %v: %w", w.channel, w.timeout, err)
			case timeout && !pinged:
				pinged = true
				if err := ps.Ping(ctx); err == nil {
					continue
				}
				fallthrough
			case timeout:
				fmt.Fprintf(w.stderr, "subscription to %s silent for %v: subscribing again\n", w.channel, w.timeout)
				pinged = false
				ps = w.subscribe(ctx)
				w.swap(ps)
				if ctx.Err() != nil { // stop may have run before the swap
					return nil
				}
				continue
			}
			if !failing {
				fmt.Fprintf(w.stderr, "subscription to %s lost: %v: subscribing again\n", w.channel, err)
				failing = true
			}
			backoff = min(max(2*backoff, 50*time.Millisecond), watchMaxBackoff)
			if !sleepCtx(ctx, backoff) {
				return nil
			}
			if w.sharded { // a classic PubSub reconnects by itself
				ps = w.subscribe(ctx)
				w.swap(ps)
				if ctx.Err() != nil {
					return nil
				}
			}
			continue
		}
		pinged, failing, backoff = false, false, 0
		switch m := msg.(type) {
		case *redis.Subscription:
			if m.Kind != "subscribe" {
				continue
			}
			if subs++; subs == 1 {
				fmt.Fprintf(w.stderr, "subscribed to %s\n", m.Channel)
			} else {
				fmt.Fprintf(w.stderr, "subscribed to %s again: messages published meanwhile were missed\n", m.Channel)
			}
		case *redis.Message:
			if err := w.print(time.Now(), m.Payload); err != nil {
				return err
			}
			if seen++; w.count > 0 && seen >= w.count {
				return nil
			}
		}
	}
}

// sleepCtx waits d, or until ctx is done; it reports whether d passed.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// print prints one message received at t.
func (w *watcher) print(t time.Time, payload string) error {
	m, err := bus.Unmarshal([]byte(payload), bus.Limits{})
	line := watchLine{Time: t, Origin: m.Origin, Keyspace: m.Keyspace, Keys: m.Keys, Tags: m.Tags, Flush: m.Flush, Size: len(payload)}
	if err != nil {
		line = watchLine{Time: t, Size: len(payload), Error: err.Error()}
	}
	if w.json {
		if line.Keys == nil {
			line.Keys = []string{}
		}
		if line.Tags == nil {
			line.Tags = []string{}
		}
		b, err := json.Marshal(line)
		if err != nil {
			return fmt.Errorf("encode json: %w", err)
		}
		_, err = w.stdout.Write(append(escapeJSON(b), '\n'))
		return err
	}
	ts := t.Format("2006-01-02T15:04:05.000000Z07:00")
	if line.Error != "" {
		_, err := fmt.Fprintf(w.stdout, "%s malformed message of %d bytes: %s\n", ts, line.Size, escapeText(line.Error))
		return err
	}
	_, err = fmt.Fprintf(w.stdout, "%s origin=%q keyspace=%q keys=%s tags=%s flush=%t\n",
		ts, line.Origin, line.Keyspace, quotedList(line.Keys, watchShownKeys), quotedList(line.Tags, watchShownKeys), line.Flush)
	return err
}

// quotedList formats ss as ["a" "b"], showing the first n and how many
// more there are.
func quotedList(ss []string, n int) string {
	var b strings.Builder
	b.WriteByte('[')
	for i, s := range ss {
		if i == n {
			fmt.Fprintf(&b, " ...%d more", len(ss)-n)
			break
		}
		if i > 0 {
			b.WriteByte(' ')
		}
		fmt.Fprintf(&b, "%q", s)
	}
	b.WriteByte(']')
	return b.String()
}
