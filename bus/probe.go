package bus

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"strconv"
	"sync/atomic"

	"github.com/redis/go-redis/v9"
)

// Probing a Cluster.
//
// On Redis Cluster a PUBLISH reaches the subscribers of other nodes over
// the cluster bus, and a node drops the broadcast for any node it has no
// link to at that moment. A subscription can be confirmed, and PINGs
// answered, on a node that some masters cannot reach yet: a restarted
// node, before the others have reconnected to it, receives nothing they
// publish, and the reset that followed the confirmation covered only what
// came before it. So on a Cluster client the subscriber also subscribes to
// a probe channel of its own, and its pinger publishes a numbered probe
// through every master (ForEachMaster): a subscription becomes healthy only
// once the probe of every master has arrived after its confirmation (the
// reset is queued then, behind everything received before), and every ping
// round repeats the probe, abandoning the subscription when a master's
// probe is late.
//
// What a probe cannot see: a cluster-bus link that drops and comes back
// between two rounds loses what was broadcast meanwhile.

// probeState is the round in progress; the pinger starts rounds, the read
// loop counts their probes.
type probeState struct {
	round atomic.Uint64 // number of the round in progress; 0 = none
	seen  atomic.Int64  // probes of that round received
}

// clusterOf returns c as a Cluster client, or nil.
func clusterOf(c Client) *redis.ClusterClient {
	cc, _ := c.(*redis.ClusterClient)
	return cc
}

// newProbeChannel names a subscriber's own probe channel.
func newProbeChannel(channel string) string {
	var b [8]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails
	return channel + ":probe:" + hex.EncodeToString(b[:])
}

// probed counts one probe seen by the read loop.
func (s *Subscriber) probed(payload string) {
	n, err := strconv.ParseUint(payload, 10, 64)
	if err != nil || n == 0 || n != s.probe.round.Load() {
		return // not ours, or from a round given up
	}
	s.probe.seen.Add(1)
	signal(s.pong)
}

// probeRound publishes probe round n through every master and waits
// PingTimeout for all of them to arrive. It reports false when the
// subscription was abandoned (or Stop called) instead.
func (s *Subscriber) probeRound(ctx context.Context, ps *redis.PubSub, n uint64) bool {
	s.probe.seen.Store(0)
	s.probe.round.Store(n)
	defer s.probe.round.Store(0)
	payload := strconv.FormatUint(n, 10)
	var masters atomic.Int64
	pctx, cancel := context.WithTimeout(ctx, s.opts.PingTimeout)
	err := s.cluster.ForEachMaster(pctx, func(ctx context.Context, c *redis.Client) error {
		masters.Add(1)
		return c.Publish(ctx, s.probeChannel, payload).Err()
	})
	cancel()
	if err != nil {
		s.fail(ps, "cluster probe", err)
		return false
	}
	ok, _ := s.awaitRead(ps, func() bool { return s.probe.seen.Load() >= masters.Load() },
		"cluster probe timeout: a master's broadcasts do not reach this node")
	return ok
}
