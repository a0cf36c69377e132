package bus

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tiercache/tiercache/internal/slots"
)

// Sharded pub/sub on a Cluster.
//
// With Options.Sharded, writers SPUBLISH each invalidation on the channel
// of the hash slot of the keys it names (slots.Channel: Options.Channel
// followed by a {hash tag} of that slot), and the message stays on the
// master that owns the slot: no cluster-bus broadcast. The subscriber
// therefore holds one connection per master and SSUBSCRIBEs, on each, to
// the channel of every slot that master serves (one SSUBSCRIBE per slot:
// Redis refuses channels of several slots in one). The set of connections
// is one subscription: it is confirmed once every slot's channel is, and
// any failure of any connection abandons all of them, with the usual
// reset when the next set is confirmed. That covers the topology's moves:
//
//   - a slot that migrates: Redis unsubscribes the slot's channel on the
//     master that lost it (an sunsubscribe), which is a failure;
//   - a master that fails: its connection breaks, and the next set is
//     opened once another master serves its slots;
//   - a master added: it gets slots by migration, so the above.
//
// Each master's own CLUSTER NODES says which slots it serves, and the next
// set is opened only when the masters' answers cover every slot exactly
// once. A PING goes to every connection of the set, and the set answers
// with one PONG once every connection has answered it: everything that any
// master delivered before its PONG has then been received, which is the
// proof Options.MaxStaleness asks for. No probe rounds: nothing crosses the
// cluster bus.

// subscription is what the read loop and the pinger use of a subscription:
// a *redis.PubSub, or a shardSet with Options.Sharded.
type subscription interface {
	Receive(ctx context.Context) (any, error)
	Ping(ctx context.Context, payload ...string) error
	Close() error
}

var (
	_ subscription = (*redis.PubSub)(nil)
	_ subscription = (*shardSet)(nil)
)

// errSlotMoved is the failure of a shard connection that Redis
// unsubscribed from a slot's channel: the slot moved to another master.
var errSlotMoved = errors.New("bus: a slot's sharded channel was unsubscribed (slot migrated)")

// errSetClosed is returned by a shardSet's Receive after Close.
var errSetClosed = errors.New("bus: sharded subscription closed")

// shardItem is one item a shard connection hands to the set's reader.
type shardItem struct {
	v   any
	err error
}

// shardSet is the subscription of Options.Sharded: one *redis.PubSub per
// master, each read by its own goroutine into one queue.
type shardSet struct {
	base    string
	members []*redis.PubSub
	addrs   []string // each member's master, for errors
	out     chan shardItem
	done    chan struct{} // closed by Close
	close   sync.Once
	wg      sync.WaitGroup

	mu       sync.Mutex
	want     int               // SSUBSCRIBE confirmations that make the set confirmed
	got      int               // received so far
	pings    uint64            // PINGs written to every member (Ping calls)
	answered []uint64          // PONGs each member returned: its answers to the first PINGs, in order
	payloads map[uint64]string // payload of each PING, by number, until every member answered it
	emitted  uint64            // PINGs answered by every member
}

// subscribeSharded opens a shardSet within the handshake bound: it reads
// every master's slots, opens one connection per master that serves some,
// and sends one SSUBSCRIBE per slot. The confirmation comes later, through
// Receive. It returns nil on failure or Stop.
func (s *Subscriber) subscribeSharded(ctx context.Context) subscription {
	hctx, cancel := context.WithTimeout(ctx, s.timeout*shardedHandshake)
	defer cancel()
	set, err := openShards(ctx, hctx, s.cluster, s.opts.Channel, s.shardChannels())
	if err != nil {
		if ctx.Err() == nil {
			s.log.Debug("bus: sharded subscribe failed", "error", err)
			s.loss("subscribe", err, false)
		}
		return nil
	}
	if !s.install(set) {
		set.Close()
		return nil
	}
	return set
}

// shardedHandshake is how many handshake bounds (Options.PingTimeout, at
// least a second) a sharded subscription may take: it writes 16384
// SSUBSCRIBEs, one per slot, over the masters' connections, which a loaded
// machine (a busy Redis, the race detector) has been seen to take more than
// a second over. A longer handshake only holds off the retry; the replica
// bypasses L1 until it is subscribed either way.
const shardedHandshake = 4

// openShards opens a shardSet of cc for base, whose slots' channels are
// chans: run is the context the connections live in, hctx bounds the
// handshake.
func openShards(run, hctx context.Context, cc *redis.ClusterClient, base string, chans []string) (*shardSet, error) {
	var (
		mu      sync.Mutex
		masters []*redis.Client
		owned   [][]int
	)
	err := cc.ForEachMaster(hctx, func(ctx context.Context, c *redis.Client) error {
		nodes, err := c.ClusterNodes(ctx).Result()
		if err != nil {
			return fmt.Errorf("cluster nodes on %s: %w", c.Options().Addr, err)
		}
		mine, err := ownSlots(nodes)
		if err != nil {
			return fmt.Errorf("cluster nodes on %s: %w", c.Options().Addr, err)
		}
		mu.Lock()
		defer mu.Unlock()
		masters = append(masters, c)
		owned = append(owned, mine)
		return nil
	})
	if err != nil {
		return nil, err
	}
	var served [slots.Count]bool
	n := 0
	for _, mine := range owned {
		for _, sl := range mine {
			if served[sl] {
				return nil, fmt.Errorf("slot %d claimed by two masters: the topology is changing", sl)
			}
			served[sl] = true
			n++
		}
	}
	if n != slots.Count {
		return nil, fmt.Errorf("the masters serve %d of %d slots: the topology is changing", n, slots.Count)
	}
	set := &shardSet{
		base:     base,
		out:      make(chan shardItem, 256),
		done:     make(chan struct{}),
		want:     slots.Count,
		payloads: make(map[uint64]string),
	}
	for i, c := range masters {
		if len(owned[i]) == 0 {
			continue
		}
		ps := c.SSubscribe(run) // no channel: no I/O yet
		set.members = append(set.members, ps)
		set.addrs = append(set.addrs, c.Options().Addr)
	}
	set.answered = make([]uint64, len(set.members))
	for i, ps := range set.members {
		set.wg.Add(1)
		go set.read(run, i, ps)
	}
	// One writer per master: each SSUBSCRIBE is a write of its own.
	errs := make([]error, len(set.members))
	var wg sync.WaitGroup
	k := 0
	for i, mine := range owned {
		if len(mine) == 0 {
			continue
		}
		wg.Add(1)
		go func(m int, ps *redis.PubSub, mine []int) {
			defer wg.Done()
			for _, sl := range mine {
				if err := ps.SSubscribe(hctx, chans[sl]); err != nil {
					errs[m] = fmt.Errorf("ssubscribe on %s: %w", set.addrs[m], err)
					return
				}
			}
		}(k, set.members[k], owned[i])
		k++
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		set.Close()
		return nil, err
	}
	return set, nil
}

// shardChannels returns the sharded channel of every slot, made once.
func (s *Subscriber) shardChannels() []string {
	s.chansOnce.Do(func() { s.chans = slots.Channels(s.opts.Channel) })
	return s.chans
}

// ownSlots returns the slots that the node whose CLUSTER NODES answer this
// is serves (its "myself" line), skipping the markers of slots migrating
// or importing.
func ownSlots(nodes string) ([]int, error) {
	for line := range strings.Lines(nodes) {
		f := strings.Fields(line)
		if len(f) < 8 || !strings.Contains(f[2], "myself") {
			continue
		}
		if !strings.Contains(f[2], "master") {
			return nil, errors.New("not a master")
		}
		var out []int
		for _, r := range f[8:] {
			if strings.HasPrefix(r, "[") {
				continue // [slot->-node] or [slot-<-node]: a migration in progress
			}
			lo, hi, isRange := strings.Cut(r, "-")
			a, err := strconv.Atoi(lo)
			if err != nil {
				return nil, fmt.Errorf("slot range %q: %w", r, err)
			}
			b := a
			if isRange {
				if b, err = strconv.Atoi(hi); err != nil {
					return nil, fmt.Errorf("slot range %q: %w", r, err)
				}
			}
			if a < 0 || b < a || b >= slots.Count {
				return nil, fmt.Errorf("slot range %q out of bounds", r)
			}
			for sl := a; sl <= b; sl++ {
				out = append(out, sl)
			}
		}
		return out, nil
	}
	return nil, errors.New("no myself line")
}

// read is the goroutine of member i: it hands its messages to the set's
// queue with the base channel name, counts its confirmations, folds its
// PONGs into the set's, and ends at its first error, which it hands on.
func (set *shardSet) read(ctx context.Context, i int, ps *redis.PubSub) {
	defer set.wg.Done()
	prefix := set.base + "{"
	for {
		v, err := ps.Receive(ctx)
		if err != nil {
			set.emit(shardItem{err: fmt.Errorf("shard %s: %w", set.addrs[i], err)})
			return
		}
		switch v := v.(type) {
		case *redis.Message:
			if !strings.HasPrefix(v.Channel, prefix) {
				continue
			}
			v.Channel = set.base
			if !set.emit(shardItem{v: v}) {
				return
			}
		case *redis.Pong:
			if p, ok := set.pong(i); ok && !set.emit(shardItem{v: &redis.Pong{Payload: p}}) {
				return
			}
		case *redis.Subscription:
			switch v.Kind {
			case "ssubscribe":
				if set.confirm() && !set.emit(shardItem{v: &redis.Subscription{Kind: "subscribe", Channel: set.base, Count: slots.Count}}) {
					return
				}
			default:
				err := errSlotMoved
				if v.Kind != "sunsubscribe" {
					err = fmt.Errorf("bus: unexpected %s %s on a sharded subscription", v.Kind, v.Channel)
				}
				set.emit(shardItem{err: fmt.Errorf("shard %s: %s: %w", set.addrs[i], v.Channel, err)})
				return
			}
		}
	}
}

// emit queues it for Receive; it reports false when the set was closed.
func (set *shardSet) emit(it shardItem) bool {
	select {
	case set.out <- it:
		return true
	case <-set.done:
		return false
	}
}

// confirm counts one SSUBSCRIBE confirmation and reports whether it was
// the last one awaited.
func (set *shardSet) confirm() bool {
	set.mu.Lock()
	defer set.mu.Unlock()
	set.got++
	return set.got == set.want
}

// pong records member i's next PONG: a connection answers its PINGs in
// the order they were written, after everything delivered before them. It
// returns the payload of the last PING that every member has now answered,
// when that is a new one.
func (set *shardSet) pong(i int) (string, bool) {
	set.mu.Lock()
	defer set.mu.Unlock()
	set.answered[i]++
	low := set.answered[i]
	for _, a := range set.answered {
		low = min(low, a)
	}
	if low <= set.emitted {
		return "", false
	}
	p, ok := set.payloads[low]
	for n := set.emitted + 1; n <= low; n++ {
		delete(set.payloads, n)
	}
	set.emitted = low
	return p, ok
}

// Receive returns the next item of any member: a message (on the base
// channel), the set's confirmation, a PONG answered by every member, or
// the first error of any member.
func (set *shardSet) Receive(ctx context.Context) (any, error) { return set.receive(ctx, nil) }

// receive is Receive, giving up with receiveTimeout when expired (nil:
// never) delivers.
func (set *shardSet) receive(ctx context.Context, expired <-chan time.Time) (any, error) {
	select {
	case it := <-set.out:
		return it.v, it.err
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-set.done:
		return nil, errSetClosed
	case <-expired:
		return nil, receiveTimeout{}
	}
}

// Ping writes a PING with payload on every member; the set's PONG comes
// once every member answered it. Calls must not overlap (the pinger makes
// them one at a time): each member must see the PINGs in the same order.
func (set *shardSet) Ping(ctx context.Context, payload ...string) error {
	set.mu.Lock()
	set.pings++
	set.payloads[set.pings] = strings.Join(payload, "")
	set.mu.Unlock()
	for i, ps := range set.members {
		if err := ps.Ping(ctx, payload...); err != nil {
			return fmt.Errorf("shard %s: %w", set.addrs[i], err)
		}
	}
	return nil
}

// Close closes every member and waits for their goroutines.
func (set *shardSet) Close() error {
	var errs []error
	set.close.Do(func() {
		close(set.done)
		for _, ps := range set.members {
			errs = append(errs, ps.Close())
		}
		set.wg.Wait()
	})
	return errors.Join(errs...)
}

// ShardedSubscription is a subscription to the sharded channels of every
// hash slot on every master of a Cluster, as a Subscriber with
// Options.Sharded holds, for tools that want the raw messages (the CLI's
// watch). Use SubscribeSharded; it is not safe for concurrent use, except
// Close.
type ShardedSubscription struct {
	set *shardSet
}

// SubscribeSharded opens the connections of a sharded subscription to
// channel on every master of cc and sends their SSUBSCRIBEs, within
// timeout. The subscription lives until Close; ctx gives the connections
// its values, not its cancellation.
func SubscribeSharded(ctx context.Context, cc *redis.ClusterClient, channel string, timeout time.Duration) (*ShardedSubscription, error) {
	if strings.Contains(channel, "{") {
		return nil, fmt.Errorf("bus: channel %q has a '{': its sharded channels would leave their slots", channel)
	}
	hctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	set, err := openShards(context.WithoutCancel(ctx), hctx, cc, channel, slots.Channels(channel))
	if err != nil {
		return nil, fmt.Errorf("bus: sharded subscribe to %q: %w", channel, err)
	}
	return &ShardedSubscription{set: set}, nil
}

// ReceiveTimeout returns the next item, as a *redis.PubSub would: a
// *redis.Message (its Channel is the base channel), one *redis.Subscription
// of kind "subscribe" once every slot's channel is confirmed, a *redis.Pong
// once every master answered a PING, or the first error of any connection
// (a slot that moved is one). After timeout with nothing, it returns an
// error whose Timeout method reports true.
func (s *ShardedSubscription) ReceiveTimeout(ctx context.Context, timeout time.Duration) (any, error) {
	t := time.NewTimer(timeout)
	defer t.Stop()
	return s.set.receive(ctx, t.C)
}

// Ping writes a PING on every master's connection.
func (s *ShardedSubscription) Ping(ctx context.Context, payload ...string) error {
	return s.set.Ping(ctx, payload...)
}

// Close closes every connection and waits for their goroutines.
func (s *ShardedSubscription) Close() error { return s.set.Close() }

// receiveTimeout is ReceiveTimeout's error when nothing came in time: a
// net.Error whose Timeout is true, as a socket's read deadline gives.
type receiveTimeout struct{}

func (receiveTimeout) Error() string   { return "bus: sharded receive: i/o timeout" }
func (receiveTimeout) Timeout() bool   { return true }
func (receiveTimeout) Temporary() bool { return true }
