package catalog

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"time"
)

// readHeaderTimeout bounds how long a client may take to send its headers.
const readHeaderTimeout = 5 * time.Second

// Server is a replica's HTTP server. Start binds the address and serves in
// a goroutine; Stop shuts it down and waits for that goroutine.
type Server struct {
	listen string // the address to bind
	srv    *http.Server

	mu   sync.Mutex    // protects addr, done, err
	addr string        // the address bound; "" before Start
	done chan struct{} // closed when Serve returned; nil before Start
	err  error         // what Serve returned, unless http.ErrServerClosed
}

// NewServer returns a server of h on addr (e.g. "127.0.0.1:0" for a free
// loopback port). It binds nothing until Start.
func NewServer(addr string, h http.Handler) *Server {
	return &Server{
		listen: addr,
		srv:    &http.Server{Handler: h, ReadHeaderTimeout: readHeaderTimeout},
	}
}

// Start binds the address and serves in the background. It returns once
// the address is bound (or could not be), without waiting for requests.
func (s *Server) Start(ctx context.Context) error {
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", s.listen)
	if err != nil {
		return fmt.Errorf("catalog: listen on %s: %w", s.listen, err)
	}
	done := make(chan struct{})
	s.mu.Lock()
	s.addr, s.done = ln.Addr().String(), done
	s.mu.Unlock()
	go func() {
		defer close(done)
		if err := s.srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			s.mu.Lock()
			s.err = err
			s.mu.Unlock()
		}
	}()
	return nil
}

// Stop stops accepting connections, waits for the requests in flight until
// ctx ends (then closes their connections), and waits for the serving
// goroutine. It returns what ended serving early, if anything did.
func (s *Server) Stop(ctx context.Context) error {
	s.mu.Lock()
	done := s.done
	s.mu.Unlock()
	if done == nil {
		return nil
	}
	err := s.srv.Shutdown(ctx)
	if err != nil {
		err = errors.Join(err, s.srv.Close())
	}
	<-done
	s.mu.Lock()
	defer s.mu.Unlock()
	if err = errors.Join(err, s.err); err != nil {
		return fmt.Errorf("catalog: http server %s: %w", s.addr, err)
	}
	return nil
}

// Addr returns the address the server is bound to, "" before Start.
func (s *Server) Addr() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.addr
}

// URL returns the server's base URL, "http://" and Addr.
func (s *Server) URL() string { return "http://" + s.Addr() }
