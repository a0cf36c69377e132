package redistest

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"
)

// A cut connection neither delivers nor fails; a heal delivers what was
// held; other connections through the proxy are untouched.
func TestProxyCutAndHeal(t *testing.T) {
	srv := Start(t)
	p := StartProxy(t, srv.Addr)
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()

	o := srv.Options()
	o.Addr = p.Addr
	o.PoolSize = 1
	o.ReadTimeout = 200 * time.Millisecond
	o.MaxRetries = -1
	cut := redis.NewClient(o)
	defer cut.Close()
	other := redis.NewClient(o)
	defer other.Close()
	if err := cut.Ping(ctx).Err(); err != nil {
		t.Fatalf("PING through the proxy: %v", err)
	}
	if err := other.Ping(ctx).Err(); err != nil {
		t.Fatalf("PING through the proxy: %v", err)
	}
	// Find cut's connection as the server sees it.
	if err := cut.Do(ctx, "CLIENT", "SETNAME", "to-cut").Err(); err != nil {
		t.Fatal(err)
	}
	list, err := srv.Client(t).ClientList(ctx).Result()
	if err != nil {
		t.Fatal(err)
	}
	addr := clientAddr(list, "to-cut")
	if addr == "" {
		t.Fatalf("no client named to-cut in CLIENT LIST:\n%s", list)
	}
	if n := p.Cut(func(a string) bool { return a == addr }); n != 1 {
		t.Fatalf("Cut matched %d connections; want 1", n)
	}
	// The SET reaches the proxy but not the server: the read times out and
	// the value is not there.
	if err := cut.Set(ctx, "k", "v", 0).Err(); err == nil {
		t.Errorf("SET over a cut connection succeeded")
	}
	if err := other.Ping(ctx).Err(); err != nil {
		t.Errorf("PING over another connection during the cut: %v", err)
	}
	if n, err := srv.Client(t).Exists(ctx, "k").Result(); err != nil || n != 0 {
		t.Errorf("EXISTS k during the cut = %d, %v; want 0", n, err)
	}
	p.Heal()
	if err := cut.Ping(ctx).Err(); err != nil {
		t.Errorf("PING after the heal: %v", err)
	}
}

// clientAddr returns the addr= of the client named name in a CLIENT LIST.
func clientAddr(list, name string) string {
	for line := range strings.Lines(list) {
		fields := strings.Fields(line)
		if slices.Contains(fields, "name="+name) {
			for _, f := range fields {
				if a, ok := strings.CutPrefix(f, "addr="); ok {
					return a
				}
			}
		}
	}
	return ""
}

// proxyOptions returns options for a client of srv that goes through p, with
// one connection, no retries and no timeouts but ctx's, so that each fault
// shows in the command it hits.
func proxyOptions(srv *Server, p *Proxy) *redis.Options {
	o := srv.Options()
	o.Addr = p.Addr
	o.PoolSize = 1
	o.MaxRetries = -1
	o.DialTimeout = 10 * time.Second
	o.ReadTimeout = 10 * time.Second
	o.WriteTimeout = 10 * time.Second
	o.ContextTimeoutEnabled = true
	return o
}

// isTimeout reports whether err is a deadline: the context's or the
// connection's.
func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, context.DeadlineExceeded) || errors.As(err, &ne) && ne.Timeout()
}

// A round trip through the proxy pays the latency once each way, on an
// open connection and on a new one, and order is kept.
func TestProxyLatency(t *testing.T) {
	srv := Start(t)
	p := StartProxy(t, srv.Addr)
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	c := redis.NewClient(proxyOptions(srv, p))
	defer c.Close()
	if err := c.Ping(ctx).Err(); err != nil {
		t.Fatalf("PING through the proxy: %v", err)
	}

	const d = 50 * time.Millisecond
	p.SetLatency(d)
	start := time.Now()
	if err := c.Ping(ctx).Err(); err != nil {
		t.Fatalf("PING with latency: %v", err)
	}
	if got := time.Since(start); got < 2*d || got > 5*time.Second {
		t.Errorf("PING on an open connection with latency %v took %v; want at least %v", d, got, 2*d)
	}

	fresh := redis.NewClient(proxyOptions(srv, p))
	defer fresh.Close()
	start = time.Now()
	if err := fresh.Ping(ctx).Err(); err != nil {
		t.Fatalf("PING on a new connection with latency: %v", err)
	}
	if got := time.Since(start); got < 2*d || got > 5*time.Second {
		t.Errorf("PING on a new connection with latency %v took %v; want at least %v", d, got, 2*d)
	}

	const n = 100
	cmds, err := c.Pipelined(ctx, func(pipe redis.Pipeliner) error {
		for range n {
			pipe.Incr(ctx, "counter")
		}
		return nil
	})
	if err != nil {
		t.Fatalf("pipelined INCR with latency: %v", err)
	}
	for i, cmd := range cmds {
		if got, want := cmd.(*redis.IntCmd).Val(), int64(i+1); got != want {
			t.Fatalf("INCR #%d = %d; want %d (replies out of order)", i, got, want)
		}
	}

	p.SetLatency(0)
	if err := c.Ping(ctx).Err(); err != nil {
		t.Errorf("PING after SetLatency(0): %v", err)
	}
}

// Chunks that follow each other on one connection are delayed together,
// not d each in turn: the replies to commands sent a few milliseconds apart
// come back a few milliseconds apart, where a proxy that slept d per chunk
// would space them d apart.
func TestProxyLatencyDoesNotSerialise(t *testing.T) {
	srv := Start(t)
	p := StartProxy(t, srv.Addr)
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	conn, err := (&net.Dialer{}).DialContext(ctx, "tcp", p.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if err := conn.SetDeadline(time.Now().Add(15 * time.Second)); err != nil {
		t.Fatal(err)
	}

	const d, n = 1500 * time.Millisecond, 3
	p.SetLatency(d)
	start := time.Now()
	for i := range n {
		if _, err := conn.Write([]byte("PING\r\n")); err != nil {
			t.Fatal(err)
		}
		// Each PING is its own chunk: the next goes once the proxy holds it.
		if err := waitUntil(ctx, "the proxy to hold the PINGs", func(context.Context) error {
			if got := p.Pending(); got < i+1 {
				return fmt.Errorf("%d chunks pending", got)
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	rd := bufio.NewReader(conn)
	var first, last time.Time
	for i := range n {
		line, err := rd.ReadString('\n')
		if err != nil {
			t.Fatalf("reply %d: %v", i, err)
		}
		if line != "+PONG\r\n" {
			t.Fatalf("reply %d = %q; want +PONG", i, line)
		}
		last = time.Now()
		if i == 0 {
			first = last
		}
	}
	if got := first.Sub(start); got < 2*d {
		t.Errorf("first reply after %v; want at least %v", got, 2*d)
	}
	if got, limit := last.Sub(first), (n-1)*d*5/6; got >= limit {
		t.Errorf("replies spread over %v; want less than %v (a proxy that waits d per chunk spreads them over at least %v)",
			got, limit, (n-1)*d)
	}
}

// A partition silences open connections and holds new ones off the server
// until Heal.
func TestProxyPartition(t *testing.T) {
	srv := Start(t)
	p := StartProxy(t, srv.Addr)
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	admin := srv.Client(t)
	open := redis.NewClient(proxyOptions(srv, p))
	defer open.Close()
	if err := open.Ping(ctx).Err(); err != nil {
		t.Fatalf("PING through the proxy: %v", err)
	}
	connected := func() string {
		t.Helper()
		info, err := admin.Info(ctx, "clients").Result()
		if err != nil {
			t.Fatal(err)
		}
		return parseInfo(info)["connected_clients"]
	}
	before := connected()

	p.Partition()
	pingCtx, pingCancel := context.WithTimeout(ctx, 200*time.Millisecond)
	err := open.Ping(pingCtx).Err()
	pingCancel()
	if !isTimeout(err) {
		t.Errorf("PING on an open connection during the partition = %v; want a deadline error", err)
	}

	fresh := redis.NewClient(proxyOptions(srv, p))
	defer fresh.Close()
	accepted := p.Accepted()
	pingCtx, pingCancel = context.WithTimeout(ctx, 200*time.Millisecond)
	err = fresh.Ping(pingCtx).Err()
	pingCancel()
	if !isTimeout(err) {
		t.Errorf("PING on a new connection during the partition = %v; want a deadline error", err)
	}
	if got, want := p.Accepted(), accepted+1; got != want {
		t.Errorf("Accepted = %d; want %d (the new connection reaches the proxy)", got, want)
	}
	if got := connected(); got != before {
		t.Errorf("connected_clients during the partition = %s; want %s (the new connection is held off the server)", got, before)
	}

	p.Heal()
	if err := open.Ping(ctx).Err(); err != nil {
		t.Errorf("PING after the heal: %v", err)
	}
	if err := fresh.Ping(ctx).Err(); err != nil {
		t.Errorf("PING on the new client after the heal: %v", err)
	}
}

// Reset fails a command in flight with a TCP RST; the next command dials
// again and succeeds.
func TestProxyResetInFlight(t *testing.T) {
	srv := Start(t)
	p := StartProxy(t, srv.Addr)
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	admin := srv.Client(t)
	c := redis.NewClient(proxyOptions(srv, p))
	defer c.Close()
	if err := c.Do(ctx, "CLIENT", "SETNAME", "blocked").Err(); err != nil {
		t.Fatal(err)
	}

	errc := make(chan error, 1)
	go func() { errc <- c.BLPop(ctx, 0, "never").Err() }()
	if err := waitUntil(ctx, "BLPOP to block on the server", func(ctx context.Context) error {
		list, err := admin.ClientList(ctx).Result()
		if err != nil {
			return err
		}
		for line := range strings.Lines(list) {
			if fields := strings.Fields(line); slices.Contains(fields, "name=blocked") && slices.Contains(fields, "cmd=blpop") {
				return nil
			}
		}
		return errors.New("no blocked client named blocked")
	}); err != nil {
		t.Fatal(err)
	}
	if got, want := p.Conns(), 1; got != want {
		t.Errorf("Conns = %d; want %d", got, want)
	}
	if got, want := p.Reset(), 1; got != want {
		t.Errorf("Reset = %d; want %d", got, want)
	}
	// The socket read returns "connection reset by peer"; go-redis v9.23
	// reads again and reports the io.EOF that follows.
	if err := <-errc; !errors.Is(err, io.EOF) && !errors.Is(err, syscall.ECONNRESET) {
		t.Errorf("BLPOP across Reset = %v; want io.EOF or connection reset by peer", err)
	}
	if got := p.Conns(); got != 0 {
		t.Errorf("Conns after Reset = %d; want 0", got)
	}
	if err := c.Ping(ctx).Err(); err != nil {
		t.Errorf("PING after Reset: %v", err)
	}
}

// Reset closes the client's side with a TCP RST, not a FIN.
func TestProxyResetSendsRST(t *testing.T) {
	srv := Start(t)
	p := StartProxy(t, srv.Addr)
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	conn, err := (&net.Dialer{}).DialContext(ctx, "tcp", p.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if err := conn.SetDeadline(time.Now().Add(15 * time.Second)); err != nil {
		t.Fatal(err)
	}
	rd := bufio.NewReader(conn)
	if _, err := conn.Write([]byte("PING\r\n")); err != nil {
		t.Fatal(err)
	}
	if line, err := rd.ReadString('\n'); err != nil || line != "+PONG\r\n" {
		t.Fatalf("PING = %q, %v; want +PONG", line, err)
	}
	if got, want := p.Reset(), 1; got != want {
		t.Errorf("Reset = %d; want %d", got, want)
	}
	if _, err := rd.ReadByte(); !errors.Is(err, syscall.ECONNRESET) {
		t.Errorf("read after Reset = %v; want connection reset by peer", err)
	}
}

// Reset of an idle pooled connection is caught by go-redis's health check
// when it takes the connection from the pool: the next command dials again
// and succeeds, even without retries.
func TestProxyResetIdle(t *testing.T) {
	srv := Start(t)
	p := StartProxy(t, srv.Addr)
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	c := redis.NewClient(proxyOptions(srv, p))
	defer c.Close()
	if err := c.Ping(ctx).Err(); err != nil {
		t.Fatalf("PING through the proxy: %v", err)
	}
	accepted := p.Accepted()
	if got, want := p.Reset(), 1; got != want {
		t.Errorf("Reset = %d; want %d", got, want)
	}
	if err := c.Ping(ctx).Err(); err != nil {
		t.Errorf("PING after Reset: %v", err)
	}
	if got, want := p.Accepted(), accepted+1; got != want {
		t.Errorf("Accepted after Reset and PING = %d; want %d (one new connection)", got, want)
	}
	if got, want := p.Reset(), 1; got != want {
		t.Errorf("second Reset = %d; want %d", got, want)
	}
}

// Refuse fails new connections at once, not by timeout, and leaves open
// ones alone; Refuse(false) accepts again.
func TestProxyRefuse(t *testing.T) {
	srv := Start(t)
	p := StartProxy(t, srv.Addr)
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	open := redis.NewClient(proxyOptions(srv, p))
	defer open.Close()
	if err := open.Ping(ctx).Err(); err != nil {
		t.Fatalf("PING through the proxy: %v", err)
	}

	p.Refuse(true)
	fresh := redis.NewClient(proxyOptions(srv, p))
	defer fresh.Close()
	accepted := p.Accepted()
	start := time.Now()
	// Depending on when the RST arrives, go-redis sees io.EOF reading the
	// HELLO reply, "connection reset by peer" writing it, or the same from
	// connect, which it retries with backoff up to DialerRetries times.
	err := fresh.Ping(ctx).Err()
	if err == nil || isTimeout(err) {
		t.Errorf("PING on a new connection while refusing = %v; want an error other than a timeout", err)
	}
	if got := time.Since(start); got > 5*time.Second {
		t.Errorf("PING on a new connection while refusing took %v; want it to fail at once", got)
	}
	if got := p.Accepted(); got <= accepted {
		t.Errorf("Accepted = %d; want more than %d (the connection reached the proxy)", got, accepted)
	}
	if err := open.Ping(ctx).Err(); err != nil {
		t.Errorf("PING on an open connection while refusing: %v", err)
	}
	if got, want := p.Conns(), 1; got != want {
		t.Errorf("Conns while refusing = %d; want %d", got, want)
	}

	p.Refuse(false)
	if err := fresh.Ping(ctx).Err(); err != nil {
		t.Errorf("PING on a new connection after Refuse(false): %v", err)
	}
}

// Close returns promptly with a long latency set and chunks waiting on it,
// and leaves no goroutine behind.
func TestProxyCloseWithLatency(t *testing.T) {
	srv := Start(t)
	ignore := goleak.IgnoreCurrent()
	p, err := NewProxy(srv.Addr)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	c := redis.NewClient(proxyOptions(srv, p))
	if err := c.Ping(ctx).Err(); err != nil {
		t.Fatalf("PING through the proxy: %v", err)
	}
	p.SetLatency(10 * time.Second)
	errc := make(chan error, 1)
	go func() { errc <- c.Ping(ctx).Err() }()
	if err := waitUntil(ctx, "the PING to wait on the latency", func(context.Context) error {
		if p.Pending() == 0 {
			return errors.New("nothing pending")
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}

	closed := make(chan struct{})
	go func() {
		p.Close()
		close(closed)
	}()
	closeCtx, closeCancel := context.WithTimeout(ctx, 2*time.Second)
	defer closeCancel()
	select {
	case <-closed:
	case <-closeCtx.Done():
		t.Fatalf("Close with a 10s latency did not return within 2s")
	}
	if err := <-errc; !errors.Is(err, io.EOF) {
		t.Errorf("PING across Close = %v; want io.EOF", err)
	}
	if got := p.Conns(); got != 0 {
		t.Errorf("Conns after Close = %d; want 0", got)
	}
	p.Close() // twice is fine
	c.Close()
	goleak.VerifyNone(t, ignore)
}

// namedAddr names c's connection (CLIENT SETNAME) and returns its address
// as the server sees it: what Cut and Throttle match.
func namedAddr(t *testing.T, ctx context.Context, srv *Server, c *redis.Client, name string) string {
	t.Helper()
	if err := c.Do(ctx, "CLIENT", "SETNAME", name).Err(); err != nil {
		t.Fatal(err)
	}
	list, err := srv.Client(t).ClientList(ctx).Result()
	if err != nil {
		t.Fatal(err)
	}
	addr := clientAddr(list, name)
	if addr == "" {
		t.Fatalf("no client named %s in CLIENT LIST:\n%s", name, list)
	}
	return addr
}

// A throttled connection carries N bytes no faster than its rate, each way:
// they take at least (N - one tick's worth)/rate, whatever the machine's
// speed. Other connections are untouched, and a rate of 0, or Heal, lifts
// the throttle.
func TestProxyThrottle(t *testing.T) {
	srv := Start(t)
	p := StartProxy(t, srv.Addr)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	const size, rate = 256 << 10, 512 << 10
	least := time.Duration(size-rate/100) * time.Second / rate // ~490ms
	value := strings.Repeat("x", size)
	if err := srv.Client(t).Set(ctx, "big", value, 0).Err(); err != nil {
		t.Fatal(err)
	}
	throttled := redis.NewClient(proxyOptions(srv, p))
	defer throttled.Close()
	other := redis.NewClient(proxyOptions(srv, p))
	defer other.Close()
	if err := other.Ping(ctx).Err(); err != nil {
		t.Fatalf("PING through the proxy: %v", err)
	}
	addr := namedAddr(t, ctx, srv, throttled, "throttled")
	match := func(a string) bool { return a == addr }

	// get times a GET of the big value through c.
	get := func(c *redis.Client) time.Duration {
		t.Helper()
		start := time.Now()
		got, err := c.Get(ctx, "big").Result()
		d := time.Since(start)
		if err != nil || len(got) != size {
			t.Fatalf("GET big = %d bytes, %v; want %d bytes", len(got), err, size)
		}
		return d
	}
	if n := p.Throttle(match, rate); n != 1 {
		t.Fatalf("Throttle matched %d connections; want 1", n)
	}
	down := get(throttled)
	if down < least || down > 4*least+2*time.Second {
		t.Errorf("server to client: GET of %d bytes at %d B/s took %v; want at least %v, and not stuck", size, rate, down, least)
	}
	start := time.Now()
	if err := throttled.Set(ctx, "copy", value, 0).Err(); err != nil {
		t.Fatalf("SET through the throttle: %v", err)
	}
	up := time.Since(start)
	if up < least || up > 4*least+2*time.Second {
		t.Errorf("client to server: SET of %d bytes at %d B/s took %v; want at least %v, and not stuck", size, rate, up, least)
	}
	t.Logf("%d bytes at %d B/s: down %v (%.0f B/s), up %v (%.0f B/s)", size, rate,
		down, float64(size)/down.Seconds(), up, float64(size)/up.Seconds())
	if d := get(other); d >= least/2 {
		t.Errorf("GET on another connection during the throttle took %v; want it untouched, under %v", d, least/2)
	}

	if n := p.Throttle(match, 0); n != 1 {
		t.Fatalf("Throttle(0) matched %d connections; want 1", n)
	}
	if d := get(throttled); d >= least/2 {
		t.Errorf("GET after Throttle(0) took %v; want under %v", d, least/2)
	}
	p.Throttle(match, rate)
	p.Heal()
	if d := get(throttled); d >= least/2 {
		t.Errorf("GET after Heal took %v; want under %v", d, least/2)
	}
}

// Close returns promptly while a throttled reply crawls through, and
// leaves no goroutine behind.
func TestProxyCloseWhileThrottled(t *testing.T) {
	srv := Start(t)
	ignore := goleak.IgnoreCurrent()
	p, err := NewProxy(srv.Addr)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	if err := srv.Client(t).Set(ctx, "big", strings.Repeat("x", 256<<10), 0).Err(); err != nil {
		t.Fatal(err)
	}
	c := redis.NewClient(proxyOptions(srv, p))
	addr := namedAddr(t, ctx, srv, c, "slow")
	if n := p.Throttle(func(a string) bool { return a == addr }, 1<<10); n != 1 {
		t.Fatalf("Throttle matched %d connections; want 1", n)
	}
	errc := make(chan error, 1)
	go func() { errc <- c.Get(ctx, "big").Err() }()
	if err := waitUntil(ctx, "the reply to queue behind the throttle", func(context.Context) error {
		if p.Pending() == 0 {
			return errors.New("nothing pending")
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}

	closed := make(chan struct{})
	go func() {
		p.Close()
		close(closed)
	}()
	closeCtx, closeCancel := context.WithTimeout(ctx, 2*time.Second)
	defer closeCancel()
	select {
	case <-closed:
	case <-closeCtx.Done():
		t.Fatalf("Close with a 1 KB/s throttle did not return within 2s")
	}
	if err := <-errc; err == nil {
		t.Errorf("GET across Close succeeded; want an error")
	}
	c.Close()
	goleak.VerifyNone(t, ignore)
}

// A partition is a blackhole both ways: a subscriber through the proxy
// hears nothing published meanwhile, and a command sent through it does
// not reach the server; Heal delivers what was held.
func TestProxyPartitionBothWays(t *testing.T) {
	srv := Start(t)
	p := StartProxy(t, srv.Addr)
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	admin := srv.Client(t)
	sub := redis.NewClient(proxyOptions(srv, p))
	defer sub.Close()
	ps := sub.Subscribe(ctx, "ch")
	defer ps.Close()
	if _, err := ps.ReceiveTimeout(ctx, 5*time.Second); err != nil {
		t.Fatalf("SUBSCRIBE through the proxy: %v", err)
	}
	w := redis.NewClient(proxyOptions(srv, p))
	defer w.Close()
	if err := w.Ping(ctx).Err(); err != nil {
		t.Fatalf("PING through the proxy: %v", err)
	}

	p.Partition()
	if n, err := admin.Publish(ctx, "ch", "m1").Result(); err != nil || n != 1 {
		t.Fatalf("PUBLISH = %d, %v; want 1 subscriber (the server holds the connection)", n, err)
	}
	if msg, err := ps.ReceiveTimeout(ctx, 300*time.Millisecond); !isTimeout(err) {
		t.Errorf("server to client: subscriber received %v, %v during the partition; want a deadline error", msg, err)
	}
	setCtx, setCancel := context.WithTimeout(ctx, 200*time.Millisecond)
	err := w.Set(setCtx, "k", "v", 0).Err()
	setCancel()
	if !isTimeout(err) {
		t.Errorf("client to server: SET during the partition = %v; want a deadline error", err)
	}
	if n, err := admin.Exists(ctx, "k").Result(); err != nil || n != 0 {
		t.Errorf("EXISTS k during the partition = %d, %v; want 0", n, err)
	}

	p.Heal()
	msg, err := ps.ReceiveTimeout(ctx, 5*time.Second)
	if m, ok := msg.(*redis.Message); err != nil || !ok || m.Payload != "m1" {
		t.Errorf("after the heal the subscriber received %v, %v; want the held message m1", msg, err)
	}
}
