package redistest

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Proxy is an in-process TCP proxy on a loopback port, in front of one
// server, for fault-injection tests. It can
//
//   - silence chosen connections both ways without closing them, as a
//     network partition does (Cut), or all of them and every new one
//     (Partition: a blackhole), and let their held bytes through again, as
//     TCP retransmission would (Heal);
//   - delay every byte it forwards (SetLatency);
//   - cap the bandwidth of chosen connections (Throttle);
//   - reset every open connection with a TCP RST (Reset);
//   - reset every new connection at once, as a dead server's port does
//     (Refuse).
//
// Conns, Pending and Accepted let a test see what the proxy holds. All
// methods are safe for concurrent use; after Close they change nothing.
type Proxy struct {
	// Addr is where clients connect: 127.0.0.1 and a free port.
	Addr string

	target string
	ln     net.Listener
	wg     sync.WaitGroup // the accept loop and every link's goroutines

	mu          sync.Mutex // protects the fields below and every link's cut and upstream
	links       map[*link]struct{}
	closed      bool
	partitioned bool          // new links wait for Heal before dialling
	refusing    bool          // new connections are reset at once
	latency     time.Duration // added to each chunk's read time; >= 0
	accepted    int           // connections accepted since NewProxy
	changed     chan struct{} // closed and replaced by Heal and SetLatency
}

// link is one proxied connection.
type link struct {
	client   net.Conn
	upstream net.Conn           // under Proxy.mu; nil until dialled
	cut      bool               // under Proxy.mu
	rate     int                // under Proxy.mu: bytes per second each way; 0: no cap
	stopDial context.CancelFunc // under Proxy.mu; nil until dialling
	done     chan struct{}      // closed by drop, under Proxy.mu
	pending  atomic.Int64       // chunks read and not yet handed to Write
}

// chunk is what one Read returned, and when.
type chunk struct {
	b  []byte
	at time.Time
}

const (
	// chunkSize is the most one Read takes from a connection.
	chunkSize = 32 << 10
	// queueLen is how many chunks a direction holds, read but not yet
	// written, before the proxy stops reading from that side; with a
	// latency d, a direction carries at least queueLen chunks per d.
	queueLen = 64
	// throttleTick is how much of a throttled link's rate one write
	// carries: a throttled direction writes rate*throttleTick bytes at a
	// time (at least one), then waits on a timer until they are paid for.
	throttleTick = 10 * time.Millisecond
)

// NewProxy listens on a free loopback port and forwards every connection to
// target. The caller must call Close.
func NewProxy(target string) (*Proxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("redistest: proxy listen: %w", err)
	}
	p := &Proxy{
		Addr:    ln.Addr().String(),
		target:  target,
		ln:      ln,
		links:   make(map[*link]struct{}),
		changed: make(chan struct{}),
	}
	p.wg.Go(p.accept)
	return p, nil
}

// StartProxy is NewProxy for tests: it fails tb when the proxy cannot listen
// and closes it in tb.Cleanup.
func StartProxy(tb testing.TB, target string) *Proxy {
	tb.Helper()
	p, err := NewProxy(target)
	if err != nil {
		tb.Fatalf("%v", err)
	}
	tb.Cleanup(p.Close)
	return p
}

func (p *Proxy) accept() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return // Close
		}
		p.mu.Lock()
		p.accepted++
		if p.closed {
			p.mu.Unlock()
			c.Close()
			return
		}
		if p.refusing {
			p.mu.Unlock()
			reset(c)
			continue
		}
		l := &link{client: c, done: make(chan struct{})}
		p.links[l] = struct{}{}
		p.mu.Unlock()
		p.wg.Go(func() { p.serve(l) })
	}
}

// serve waits out a partition, dials the server for l and forwards both
// ways until l is dropped.
func (p *Proxy) serve(l *link) {
	for {
		p.mu.Lock()
		partitioned, changed := p.partitioned, p.changed
		p.mu.Unlock()
		if !partitioned {
			break
		}
		select {
		case <-changed:
		case <-l.done:
			return
		}
	}

	ctx, cancel := context.WithCancel(context.Background())
	p.mu.Lock()
	select {
	case <-l.done:
		p.mu.Unlock()
		cancel()
		return
	default:
	}
	l.stopDial = cancel
	p.mu.Unlock()
	var d net.Dialer
	up, err := d.DialContext(ctx, "tcp", p.target)
	cancel()
	if err != nil {
		p.drop(l, false)
		return
	}
	p.mu.Lock()
	select {
	case <-l.done:
		p.mu.Unlock()
		up.Close()
		return
	default:
	}
	l.upstream = up
	p.mu.Unlock()

	toServer := make(chan chunk, queueLen)
	toClient := make(chan chunk, queueLen)
	p.wg.Go(func() { p.read(l, l.client, toServer) })
	p.wg.Go(func() { p.write(l, toServer, up) })
	p.wg.Go(func() { p.read(l, up, toClient) })
	p.write(l, toClient, l.client)
}

// read queues what src sends, stamped with when it was read, until src ends
// or l is dropped; then it closes q.
func (p *Proxy) read(l *link, src net.Conn, q chan<- chunk) {
	defer close(q)
	buf := make([]byte, chunkSize)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			c := chunk{b: bytes.Clone(buf[:n]), at: time.Now()}
			l.pending.Add(1)
			select {
			case q <- c:
			case <-l.done:
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// write writes each chunk of q to dst once it is due, l is not cut and,
// when l is throttled, no faster than its rate. When q ends (its side
// ended) or a write fails, it drops l: when either side ends, both do,
// after what was read before the end.
func (p *Proxy) write(l *link, q <-chan chunk, dst net.Conn) {
	var next time.Time // when a throttled write may go next: this direction's pace
	for {
		var c chunk
		var ok bool
		select {
		case c, ok = <-q:
		case <-l.done:
			return
		}
		if !ok {
			p.drop(l, false)
			return
		}
		first := true
		for b := c.b; len(b) > 0; {
			n, rate, alive := p.hold(l, c.at, len(b), next)
			if !alive {
				return
			}
			if first {
				l.pending.Add(-1) // before the far side can see it
				first = false
			}
			if _, err := dst.Write(b[:n]); err != nil {
				p.drop(l, false)
				return
			}
			b = b[n:]
			next = paced(next, n, rate)
		}
	}
}

// paced returns when the next write of a direction throttled to rate may
// go, after n bytes were written now and the previous pace was next. A
// direction that fell behind by no more than one tick catches up (timers
// fire late); one idle for longer gets no credit, so no burst exceeds one
// tick's worth. Without a throttle there is no pace: the zero time.
func paced(next time.Time, n, rate int) time.Time {
	if rate <= 0 {
		return time.Time{}
	}
	now := time.Now()
	if now.Sub(next) > throttleTick {
		next = now
	}
	return next.Add(time.Duration(n) * time.Second / time.Duration(rate))
}

// hold waits until up to size bytes of a chunk read at readAt may be
// written: the latency has passed since readAt, l is not cut and, when l
// is throttled, its pace next has come. It returns how many bytes may go
// now (all of them unless l is throttled, then at most a tick's worth),
// the rate they go at (0: not throttled), and false once l is dropped.
func (p *Proxy) hold(l *link, readAt time.Time, size int, next time.Time) (n, rate int, alive bool) {
	for {
		p.mu.Lock()
		cut, due, changed := l.cut, readAt.Add(p.latency), p.changed
		rate = l.rate
		p.mu.Unlock()
		n = size
		if rate > 0 {
			n = min(size, max(rate/int(time.Second/throttleTick), 1))
			if next.After(due) {
				due = next
			}
		}
		var timer *time.Timer
		var fired <-chan time.Time // nil while cut: only a change helps
		if !cut {
			wait := time.Until(due)
			if wait <= 0 {
				return n, rate, true
			}
			timer = time.NewTimer(wait)
			fired = timer.C
		}
		alive = true
		select {
		case <-fired:
		case <-changed:
		case <-l.done:
			alive = false
		}
		if timer != nil {
			timer.Stop()
		}
		if !alive {
			return 0, 0, false
		}
	}
}

// drop closes both sides of l, with a TCP RST if rst, cancels its dial and
// wakes its goroutines. It reports whether l was still open.
func (p *Proxy) drop(l *link, rst bool) bool {
	p.mu.Lock()
	select {
	case <-l.done:
		p.mu.Unlock()
		return false
	default:
	}
	close(l.done)
	delete(p.links, l)
	up, stopDial := l.upstream, l.stopDial
	p.mu.Unlock()
	if stopDial != nil {
		stopDial()
	}
	if rst {
		reset(l.client)
	} else {
		l.client.Close()
	}
	if up != nil {
		if rst {
			reset(up)
		} else {
			up.Close()
		}
	}
	return true
}

// reset closes c with a TCP RST rather than a FIN.
func reset(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		tc.SetLinger(0)
	}
	c.Close()
}

// broadcast wakes every goroutine waiting for a change of state. The caller
// holds p.mu.
func (p *Proxy) broadcast() {
	close(p.changed)
	p.changed = make(chan struct{})
}

// Cut silences every open connection whose upstream side (the address the
// server sees as the client's, as in CLIENT LIST addr=) satisfies match,
// and returns how many it cut. Connections opened later are not cut, and
// neither are those a partition holds before they reach the server.
func (p *Proxy) Cut(match func(serverSideAddr string) bool) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for l := range p.links {
		if !l.cut && l.upstream != nil && match(l.upstream.LocalAddr().String()) {
			l.cut = true
			n++
		}
	}
	return n
}

// Partition cuts every open connection, as Cut with a match-all func does,
// and holds every connection accepted before Heal: accepted, but with nothing
// read from it and no connection to the server yet. It is a blackhole: no
// byte crosses the proxy either way, and no connection ends, until Heal.
func (p *Proxy) Partition() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.partitioned = true
	for l := range p.links {
		l.cut = true
	}
}

// Heal ends a partition and lets every cut connection through again, held
// bytes first; connections a partition held reach the server now. It also
// lifts every throttle.
func (p *Proxy) Heal() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.partitioned = false
	for l := range p.links {
		l.cut = false
		l.rate = 0
	}
	p.broadcast()
}

// Throttle caps the bandwidth of every open connection whose upstream side
// (the address the server sees as the client's, as in CLIENT LIST addr=)
// satisfies match, to bytesPerSecond in each direction, and returns how
// many connections it matched. A throttled direction writes a tick's worth
// of the rate (10 ms, at least one byte) at a time and waits on a timer
// until it is paid for, so N bytes take at least (N - rate/100)/rate
// seconds to cross; bytes it has not written yet wait in the proxy, which
// stops reading that side once its queue is full, as a slow link does.
// A rate of 0 or less lifts the throttle of the connections matched, and
// Heal lifts every throttle. Connections opened later are not throttled,
// and neither are those a partition holds before they reach the server. A
// new rate applies at once to bytes already waiting.
func (p *Proxy) Throttle(match func(serverSideAddr string) bool, bytesPerSecond int) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for l := range p.links {
		if l.upstream != nil && match(l.upstream.LocalAddr().String()) {
			l.rate = max(bytesPerSecond, 0)
			n++
		}
	}
	p.broadcast()
	return n
}

// SetLatency delays every chunk the proxy forwards, both ways, on open and
// new connections, until d after the proxy read it; chunks keep their order
// and are not delayed by d each in turn. A new d applies at once to chunks
// already waiting, counted from when each was read. d <= 0 turns the
// latency off.
func (p *Proxy) SetLatency(d time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.latency = max(d, 0)
	p.broadcast()
}

// Reset closes every open connection abruptly, with a TCP RST to the client
// and to the server, held and cut ones included, and returns how many it
// closed. Connections accepted afterwards work as before.
func (p *Proxy) Reset() int {
	n := 0
	for _, l := range p.open() {
		if p.drop(l, true) {
			n++
		}
	}
	return n
}

// Refuse, while on, makes the proxy reset every new connection as soon as
// it accepts it, so that a client fails at once, as on a dead server's
// port; open connections are left alone. Refuse(false) accepts again.
func (p *Proxy) Refuse(on bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.refusing = on
}

// Conns returns how many client connections are open through the proxy,
// counting those a partition holds. It is 0 after Close.
func (p *Proxy) Conns() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.links)
}

// Pending returns how many chunks the open connections have read, either
// way, and not yet started to write: held by a cut or the latency, or
// queued behind them. Once the far side has seen a chunk it is no longer
// counted, so a test that needs a command to have reached the proxy can
// wait for Pending to be positive.
func (p *Proxy) Pending() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	var n int64
	for l := range p.links {
		n += l.pending.Load()
	}
	return int(n)
}

// Accepted returns how many connections the proxy has accepted since
// NewProxy, refused ones included.
func (p *Proxy) Accepted() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.accepted
}

// open returns the open links.
func (p *Proxy) open() []*link {
	p.mu.Lock()
	defer p.mu.Unlock()
	links := make([]*link, 0, len(p.links))
	for l := range p.links {
		links = append(links, l)
	}
	return links
}

// Close stops accepting, closes every connection and waits for the
// proxy's goroutines, however long a latency is set. It is safe to call
// more than once.
func (p *Proxy) Close() {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	p.closed = true
	p.mu.Unlock()
	p.ln.Close() // ends the accept loop
	for _, l := range p.open() {
		p.drop(l, false)
	}
	p.wg.Wait()
}
