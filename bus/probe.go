package bus

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"strconv"
	"sync/atomic"
	"time"

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
// reset is queued then, behind everything received before), and a round
// is repeated at every PING, one at a time, abandoning the subscription
// when a master's probe is late. A completed round is also the proof
// Options.MaxStaleness asks for, stamped with the round's start: a PONG from
// the subscription's node says nothing of what the other masters broadcast.
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

// startRound starts a probe round on p.ps: it publishes the round's probe
// through every master, stamped now (before the first PUBLISH), and the
// pinger then waits for the read loop to see them all (check). A completed
// round is a proof that everything published through any master before its
// start has been received; it is queued behind it, and r, a reset, ahead of
// it. startRound abandons the subscription, and reports false, when a
// PUBLISH fails.
func (p *pinger) startRound(ctx context.Context, now time.Time, r resetAt) bool {
	s := p.s
	p.n++
	s.probe.seen.Store(0)
	s.probe.round.Store(p.n)
	payload := strconv.FormatUint(p.n, 10)
	var masters atomic.Int64
	pctx, cancel := context.WithTimeout(ctx, s.opts.PingTimeout)
	err := s.cluster.ForEachMaster(pctx, func(ctx context.Context, c *redis.Client) error {
		masters.Add(1)
		return c.Publish(ctx, s.probeChannel, payload).Err()
	})
	cancel()
	if err == nil && masters.Load() == 0 {
		err = errors.New("no master to probe") // a round of nothing would prove nothing
	}
	if err != nil {
		p.endRound()
		s.fail(p.ps, "cluster probe", err)
		return false
	}
	p.round = probeRound{active: true, start: now, masters: masters.Load(), reset: r}
	return true
}

// endRound gives up the round in progress, if any: its late probes are
// ignored.
func (p *pinger) endRound() {
	p.round = probeRound{}
	p.s.probe.round.Store(0)
}
