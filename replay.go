package tiercache

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tiercache/tiercache/bus"
	"github.com/tiercache/tiercache/l2"
)

// ReplayStats counts what the replica did with the numbers of the
// invalidations it received (see Config.Replay).
type ReplayStats struct {
	// SequenceGaps counts the times a log's number jumped past the next
	// one, or stood behind its head at a health check: messages the replica
	// had not received, read back from the log (or, when the log no
	// longer held them, answered with a flush, counted in Flushes too).
	SequenceGaps uint64 `json:"sequence_gaps"`
	// Replays counts the resubscriptions (and message losses of the bus)
	// answered by reading what the replica missed back from the logs, its
	// L1 kept.
	Replays uint64 `json:"replays"`
	// Replayed counts the messages read back from the logs and applied.
	Replayed uint64 `json:"replayed"`
	// Flushes counts the resubscriptions, and gaps, answered with a flush
	// of every L1 instead: the replica had no positions yet (its first
	// subscription), a log no longer reached back to them, Redis could not
	// be read, or a publisher that does not number its messages was heard.
	Flushes uint64 `json:"flushes"`
	// Unnumbered reports that the replica received an invalidation without
	// a number (from a replica with replay off, an older version, or a
	// service publishing on its own): from then on it flushes on every
	// resubscription, since it cannot read back what such a publisher sent.
	Unnumbered bool `json:"unnumbered"`
}

// replayer keeps the replica's position in every log of invalidations
// (l2.LogOptions): the number of the last message of each log it applied.
// The bus's dispatcher goroutine (Handler, OnReset) and the head check use
// it, one at a time.
type replayer struct {
	store *l2.Store
	all   []int // every log's index

	mu     sync.Mutex // protects pos and synced, and orders catch-ups
	pos    []uint64   // by log index
	synced bool       // pos holds a position for every log

	unnumbered                       atomic.Bool
	gaps, replays, replayed, flushes atomic.Uint64
	onCatchUp                        func(logs, applied int, err error) // tests
}

// logOptions returns the logs the write scripts keep for cfg.Replay.
func logOptions(cfg Config) l2.LogOptions {
	if cfg.Replay.MaxCount < 0 {
		return l2.LogOptions{}
	}
	return l2.LogOptions{Prefix: cfg.Namespace + "::", MaxCount: cfg.Replay.MaxCount, MaxAge: cfg.Replay.MaxAge}
}

// newReplayer returns the replayer of store's logs, or nil when it keeps
// none.
func newReplayer(store *l2.Store) *replayer {
	n := store.Logs()
	if n == 0 {
		return nil
	}
	r := &replayer{store: store, all: make([]int, n), pos: make([]uint64, n)}
	for i := range r.all {
		r.all[i] = i
	}
	return r
}

func (r *replayer) stats() ReplayStats {
	if r == nil {
		return ReplayStats{}
	}
	return ReplayStats{
		SequenceGaps: r.gaps.Load(),
		Replays:      r.replays.Load(),
		Replayed:     r.replayed.Load(),
		Flushes:      r.flushes.Load(),
		Unnumbered:   r.unnumbered.Load(),
	}
}

var (
	errRegressed = errors.New("a log's counter went back (a failover lost writes, or Redis lost it)")
	errTrimmed   = errors.New("the log no longer holds every message missed")
)

// catchUp reads the heads of logs, and the entries of those whose head is
// past the replica's position, and applies every message numbered after the
// position, through apply. It fails, applying what it read or not, when a
// log went back or no longer holds every number after the position: the
// caller must flush.
func (r *replayer) catchUp(ctx context.Context, logs []int, lim bus.Limits, apply func(bus.Message)) (applied int, err error) {
	defer func() {
		if r.onCatchUp != nil {
			r.onCatchUp(len(logs), applied, err)
		}
	}()
	heads, err := r.store.LogHeads(ctx, logs, false)
	if err != nil {
		return 0, err
	}
	var behind []int
	var want []uint64
	for j, i := range logs {
		switch h := heads[j]; {
		case h < r.pos[i]:
			return 0, fmt.Errorf("log %d at %d, behind the replica's %d: %w", i, h, r.pos[i], errRegressed)
		case h > r.pos[i]:
			behind = append(behind, i)
			want = append(want, h)
		}
	}
	if len(behind) == 0 {
		return 0, nil
	}
	entries, err := r.store.LogEntries(ctx, behind)
	if err != nil {
		return 0, err
	}
	var msgs []bus.Message
	for j, i := range behind {
		seqs, ms := r.read(entries[j], i, lim)
		// The messages after the position, from the one numbered next (a
		// sync starts every counter, so the position is never 0).
		from := slices.IndexFunc(seqs, func(n uint64) bool { return n == r.pos[i]+1 })
		if from < 0 {
			return 0, fmt.Errorf("log %d: nothing numbered after %d: %w", i, r.pos[i], errTrimmed)
		}
		for k := from; k < len(seqs); k++ {
			if k > from && (seqs[k] != seqs[k-1]+1 || ms[k].first) {
				return 0, fmt.Errorf("log %d: %d after %d: %w", i, seqs[k], seqs[k-1], errTrimmed)
			}
			msgs = append(msgs, ms[k].m)
		}
		if last := seqs[len(seqs)-1]; last < want[j] {
			return 0, fmt.Errorf("log %d ends at %d, its head is %d: %w", i, last, want[j], errTrimmed)
		}
		r.pos[i] = seqs[len(seqs)-1]
	}
	for _, m := range msgs {
		apply(m)
	}
	r.replayed.Add(uint64(len(msgs)))
	return len(msgs), nil
}

// logged is one message read back from a log.
type logged struct {
	m     bus.Message
	first bool // the first number its counter gave (l2.LogEntry.First)
}

// read decodes the entries of log i, skipping those that are not messages
// of that log: the numbers around them show what they hid.
func (r *replayer) read(entries []l2.LogEntry, i int, lim bus.Limits) ([]uint64, []logged) {
	seqs := make([]uint64, 0, len(entries))
	ms := make([]logged, 0, len(entries))
	for _, e := range entries {
		m, err := bus.Unmarshal([]byte(e.Msg), lim)
		if err != nil || m.Seq == 0 {
			continue
		}
		if idx, ok := r.store.LogIndex(m.Log); !ok || idx != i {
			continue
		}
		seqs = append(seqs, m.Seq)
		ms = append(ms, logged{m: m, first: e.First})
	}
	return seqs, ms
}

// sync reads every log's head as the replica's position, after a flush.
func (r *replayer) sync(ctx context.Context) error {
	heads, err := r.store.LogHeads(ctx, r.all, true)
	r.synced = err == nil
	if err != nil {
		return err
	}
	copy(r.pos, heads)
	return nil
}

// replayTimeout bounds one catch-up or sync: its reads have the store's
// budgets; this only keeps a stuck one from holding the dispatcher.
const replayTimeout = 5 * time.Second

// receive is the bus's Handler: it checks the number of a numbered message
// against the replica's position in its log, reads back what a jump skipped
// (or flushes, when the log cannot tell), then applies the message.
func (c *Cache) receive(m bus.Message) {
	if r := c.replay; r != nil {
		// Held while the message is applied too: the head check's
		// catch-ups apply messages one at a time with the dispatcher's.
		r.mu.Lock()
		defer r.mu.Unlock()
	}
	if r := c.replay; r != nil && m.Canary == "" {
		switch i, ok := r.store.LogIndex(m.Log); {
		case !ok || m.Seq == 0 && m.Log == "":
			// Not numbered, or in a log this replica does not know: it
			// cannot be read back.
			if !r.unnumbered.Swap(true) {
				c.log.Warn("tiercache: an invalidation without a sequence number: from now on every resubscription flushes L1 (replay cannot read back what such a publisher sends)", "origin", m.Origin, "keyspace", m.Keyspace)
			}
		case !r.synced:
		case m.Seq == 0:
			// Published again after an ASK redirection: numbered in its
			// log on the importing master, the number lost on the way
			// (l2's runPub). The log has it.
			r.gaps.Add(1)
			c.catchUpOrFlush([]int{i}, "a message published again")
		case m.Seq > r.pos[i]+1:
			r.gaps.Add(1)
			c.catchUpOrFlush([]int{i}, "sequence gap")
			fallthrough
		default:
			r.pos[i] = max(r.pos[i], m.Seq)
		}
	}
	c.handle(m)
}

// resync is the bus's OnReset: after a (re)subscription or a loss of
// messages in the bus, it reads back from the logs what the replica may
// have missed and keeps its L1; it flushes every L1 instead when it cannot:
// at the first subscription, after an unnumbered message, after a message
// it could not read, or when a log does not reach back.
func (c *Cache) resync() {
	r := c.replay
	unreadable := c.flushNext.Swap(false)
	if r == nil {
		c.flushAll()
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.synced || r.unnumbered.Load() || unreadable {
		r.flushes.Add(1)
		c.flushL1()
		c.syncLogs()
		c.flushed()
		return
	}
	if c.catchUpOrFlush(r.all, "resubscription") {
		r.replays.Add(1)
		c.lastInv.Store(time.Now().UnixNano())
		if c.onInv != nil {
			c.onInv(Invalidation{Reset: true})
		}
	}
}

// catchUpOrFlush catches up on logs, or flushes every L1 and takes every
// log's head as its position when that fails. It reports whether it caught
// up. r.mu is held. After a flush, the hook hears of the reset once the
// heads are read: the resync's Redis calls are over by then.
func (c *Cache) catchUpOrFlush(logs []int, why string) bool {
	r := c.replay
	ctx, cancel := context.WithTimeout(c.stopCtx, replayTimeout)
	defer cancel()
	_, err := r.catchUp(ctx, logs, bus.Limits{}, c.handle)
	if err == nil {
		return true
	}
	c.log.Info("tiercache: flushing L1: cannot read back the invalidations missed", "after", why, "err", err)
	r.flushes.Add(1)
	c.flushL1()
	c.syncLogs()
	c.flushed()
	return false
}

// syncLogs takes every log's head as the replica's position, after a
// flush; when Redis cannot be read, the next resubscription flushes again.
// r.mu is held.
func (c *Cache) syncLogs() {
	ctx, cancel := context.WithTimeout(c.stopCtx, replayTimeout)
	defer cancel()
	if err := c.replay.sync(ctx); err != nil {
		c.log.Debug("tiercache: cannot read the logs' heads: the next resubscription flushes L1", "err", err)
	}
}

// headCheckJob finds a message lost without a disconnection, which no later
// message of its log reveals (the last one before a quiet spell): every
// Replay.CheckInterval it reads the log's head, and once the bus has proved
// itself caught up with a PING sent after that read, a position still
// behind that head is a gap, caught up on as any other. On a server that is
// not a Cluster only: a Cluster has a log per slot, and sharded pub/sub
// proves each master's messages with its own PINGs.
func (c *Cache) headCheckJob() job {
	return job{name: "replay head check", run: func(ctx context.Context) {
		t := time.NewTicker(c.cfg.Replay.CheckInterval)
		defer t.Stop()
		var last headRead
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			last = c.checkHead(ctx, last)
		}
	}}
}

// headRead is a head of the only log, read at a time.
type headRead struct {
	head uint64
	at   time.Time
}

// checkHead compares the position with prev, the head read at the last
// check, when the bus has proved itself caught up since; then reads the
// head again and returns it.
func (c *Cache) checkHead(ctx context.Context, prev headRead) headRead {
	r := c.replay
	if prev.head != 0 && c.sub.Healthy() {
		if age := c.sub.ProofAge(); age >= 0 && age < c.now().Sub(prev.at) {
			r.mu.Lock()
			if r.synced && r.pos[0] < prev.head {
				r.gaps.Add(1)
				c.catchUpOrFlush(r.all, "head check")
			}
			r.mu.Unlock()
		}
	}
	at := c.now()
	heads, err := r.store.LogHeads(ctx, r.all, false)
	if err != nil {
		return headRead{}
	}
	return headRead{head: heads[0], at: at}
}
