package redistest

import (
	"fmt"
	"net"
	"sync"
	"testing"
)

// Proxy is an in-process TCP proxy on a loopback port, in front of one
// server, for partition tests: Cut silences chosen connections both ways
// without closing them, as a network partition does, and Heal lets their
// held bytes through again, as TCP retransmission would.
type Proxy struct {
	// Addr is where clients connect: 127.0.0.1 and a free port.
	Addr string

	target string
	ln     net.Listener
	wg     sync.WaitGroup // the accept loop and every pipe

	mu     sync.Mutex // protects links, closed, healed
	links  map[*link]struct{}
	closed bool
	healed chan struct{} // closed and replaced by Heal
}

// link is one proxied connection.
type link struct {
	client, upstream net.Conn
	cut              bool // under Proxy.mu
}

// NewProxy listens on a free loopback port and forwards every connection to
// target. The caller must call Close.
func NewProxy(target string) (*Proxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("redistest: proxy listen: %w", err)
	}
	p := &Proxy{
		Addr:   ln.Addr().String(),
		target: target,
		ln:     ln,
		links:  make(map[*link]struct{}),
		healed: make(chan struct{}),
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
		up, err := net.Dial("tcp", p.target)
		if err != nil {
			c.Close()
			continue
		}
		l := &link{client: c, upstream: up}
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			c.Close()
			up.Close()
			return
		}
		p.links[l] = struct{}{}
		p.mu.Unlock()
		p.wg.Go(func() { p.pipe(l, c, up) })
		p.wg.Go(func() { p.pipe(l, up, c) })
	}
}

// pipe copies src to dst, holding each chunk while the link is cut. When
// either side ends, both do.
func (p *Proxy) pipe(l *link, src, dst net.Conn) {
	defer p.drop(l)
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if !p.waitUncut(l) {
				return
			}
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// waitUncut waits while l is cut; it reports false once l is dropped.
func (p *Proxy) waitUncut(l *link) bool {
	for {
		p.mu.Lock()
		_, alive := p.links[l]
		cut, healed := l.cut, p.healed
		p.mu.Unlock()
		if !alive {
			return false
		}
		if !cut {
			return true
		}
		<-healed
	}
}

// drop closes both sides of l and wakes its pipes.
func (p *Proxy) drop(l *link) {
	p.mu.Lock()
	_, alive := p.links[l]
	delete(p.links, l)
	if alive && l.cut {
		// Wake the other pipe, which may be waiting for a heal.
		close(p.healed)
		p.healed = make(chan struct{})
	}
	p.mu.Unlock()
	l.client.Close()
	l.upstream.Close()
}

// Cut silences every open connection whose upstream side (the address the
// server sees as the client's, as in CLIENT LIST addr=) satisfies match,
// and returns how many it cut. Connections opened later are not cut.
func (p *Proxy) Cut(match func(serverSideAddr string) bool) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for l := range p.links {
		if !l.cut && match(l.upstream.LocalAddr().String()) {
			l.cut = true
			n++
		}
	}
	return n
}

// Heal lets every cut connection through again, held bytes first.
func (p *Proxy) Heal() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for l := range p.links {
		l.cut = false
	}
	close(p.healed)
	p.healed = make(chan struct{})
}

// Close stops accepting, closes every connection and waits for the
// proxy's goroutines. It is safe to call more than once.
func (p *Proxy) Close() {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	p.closed = true
	links := make([]*link, 0, len(p.links))
	for l := range p.links {
		links = append(links, l)
	}
	p.mu.Unlock()
	p.ln.Close() // ends the accept loop
	for _, l := range links {
		p.drop(l)
	}
	p.wg.Wait()
}
