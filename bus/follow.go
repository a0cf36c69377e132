package bus

import (
	"context"
	"net"

	"github.com/redis/go-redis/v9"
)

// Following the master.
//
// A go-redis failover client (Sentinel) moves its data connections to the
// new master when the sentinel announces +switch-master, but never its
// pub/sub connections: a subscription stays on the old master, which
// receives none of what is now published on the new one until the sentinel
// demotes it, about ten seconds later. A DNS-based failover (a managed
// Redis's primary endpoint) does the same. Invalidations lost in that window
// would leave stale L1 entries with the bus looking healthy.
//
// With Options.FollowMaster, the subscriber adds a dial hook to a
// *redis.Client: it learns the remote address of every connection the
// client dials, tells its own subscription's dial from the others by a
// context mark, and resubscribes (with the reset every subscription brings)
// as soon as the client's data connections and the subscription are on
// different servers. A goroutine of its own touches the data path every
// PingInterval, so a quiet replica notices within PingInterval of the
// client's switch.

// subscriptionDial marks the context of a subscription's dial.
type subscriptionDial struct{}

// followHook is the go-redis hook that reports dials to its subscriber.
type followHook struct{ s *Subscriber }

func (h followHook) DialHook(next redis.DialHook) redis.DialHook {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		conn, err := next(ctx, network, addr)
		if err == nil && conn != nil && conn.RemoteAddr() != nil {
			mine, _ := ctx.Value(subscriptionDial{}).(*Subscriber)
			h.s.dialed(conn.RemoteAddr().String(), mine == h.s)
		}
		return conn, err
	}
}

func (followHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook { return next }

func (followHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

// follow installs the hook when opts ask for it and c is a client with a
// single master; it returns the client the pinger probes, or nil.
func (s *Subscriber) follow(c Client) *redis.Client {
	rc, ok := c.(*redis.Client) // plain and failover clients; not Cluster or Ring
	if !s.opts.FollowMaster || !ok {
		return nil
	}
	rc.AddHook(followHook{s})
	return rc
}

// dialed records the server of a new connection: the subscription's, or a
// data connection's. Both are kept until the subscription is abandoned.
func (s *Subscriber) dialed(addr string, subscription bool) {
	s.routeMu.Lock()
	if subscription {
		s.subAddr = addr
	} else {
		s.dataAddr = addr
	}
	s.routeMu.Unlock()
	s.checkRoute()
}

// checkRoute abandons the current subscription when the client's last data
// connection went to another server than the subscription's: the read loop
// then subscribes again, through the client's dialer, which now finds the
// new master. Called at every dial and at every subscription confirmation
// (a move seen while no subscription was installed is acted on then).
func (s *Subscriber) checkRoute() {
	ps := s.current()
	if ps == nil {
		return // a new subscription is on its way: its confirmation checks again
	}
	s.routeMu.Lock()
	sub, data := s.subAddr, s.dataAddr
	s.routeMu.Unlock()
	if sub == "" || data == "" || sub == data {
		return
	}
	if s.fail(ps, "client moved to "+data, nil) {
		s.moves.Add(1)
		s.log.Warn("bus: the client moved to another server; subscribing there", "from", sub, "to", data)
	}
}

// touchData touches the client's data path, so that a client whose connections
// were closed by a failover dials the new master now rather than at the
// next cache miss.
func (s *Subscriber) touchData(ctx context.Context) {
	if s.followed == nil {
		return
	}
	pctx, cancel := context.WithTimeout(ctx, s.opts.PingTimeout)
	defer cancel()
	_ = s.followed.Ping(pctx).Err() // a failure is the read path's to report
}
