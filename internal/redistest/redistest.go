// Package redistest starts real redis-server processes on free loopback ports
// for tests, benchmarks and the demo, and stops them by PID: one server (New),
// a Redis Cluster of three masters (NewCluster), with a replica each
// (NewClusterWithReplicas), whose slots tests can move and whose masters
// they can fail over, or a master with a replica and a sentinel
// (NewSentinel).
//
// It never fakes Redis. When redis-server is not on PATH, every constructor
// fails loudly with the command that installs it: a missing server is a
// broken environment, not a reason to skip.
package redistest

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// InstallHint is the command that installs redis-server on the Debian
// machines this project runs on; it is part of every "not found" error.
const InstallHint = "apt-get update && apt-get install -y redis-server"

// ErrNotInstalled reports that redis-server is not on PATH.
var ErrNotInstalled = errors.New("redistest: redis-server not found on PATH; install it with: " + InstallHint)

// readyTimeout bounds how long a server may take to print its ready line.
const readyTimeout = 15 * time.Second

// readyLine is what a data node prints once it accepts connections.
const readyLine = "Ready to accept connections"

// pollEvery is how long the harness waits between two checks of a condition
// it waits for (cluster state, replication link, sentinel view).
const pollEvery = 10 * time.Millisecond

// Server is one redis-server process listening on 127.0.0.1.
type Server struct {
	// Addr is host:port of the server on the loopback interface.
	Addr string
	// Port is the TCP port of Addr.
	Port int

	args  []string // extra arguments, kept for Restart
	dir   string   // working directory (owned, removed on Stop)
	conf  string   // config file in dir, first on the command line; "" for none
	ready string   // line the server prints once it serves

	mu   sync.Mutex // protects cmd, done, log
	cmd  *exec.Cmd
	done chan struct{} // closed when the process has exited
	log  *bytes.Buffer // everything the server printed
}

// Binary returns the path of redis-server, or ErrNotInstalled.
func Binary() (string, error) {
	p, err := exec.LookPath("redis-server")
	if err != nil {
		return "", ErrNotInstalled
	}
	return p, nil
}

// New starts a redis-server on a free loopback port with persistence off and
// returns once it accepts connections. extra arguments are passed through
// (e.g. "--requirepass", "secret"). The caller must call Stop.
func New(extra ...string) (*Server, error) {
	return newServer(spec{}, extra...)
}

// spec says how to run a server beyond what New does by default.
type spec struct {
	// conf names a config file in the server's dir that goes first on the
	// command line; "" for none. A sentinel needs one, and rewrites it.
	conf string
	// ready is the line the server prints once it serves; readyLine if "".
	ready string
	// prepare, if not nil, runs before each start attempt once Port and the
	// dir are set; it may write files into the dir and returns arguments
	// that go before the caller's extra ones (and are kept for Restart).
	prepare func(s *Server) ([]string, error)
}

// newServer is New with a spec.
func newServer(sp spec, extra ...string) (*Server, error) {
	bin, err := Binary()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "redistest-")
	if err != nil {
		return nil, fmt.Errorf("redistest: temp dir: %w", err)
	}
	s := &Server{args: extra, dir: dir, conf: sp.conf, ready: cmp.Or(sp.ready, readyLine)}
	// A port found free may be taken before redis binds it; try a few.
	var lastErr error
	for range 5 {
		port, err := freePort()
		if err != nil {
			lastErr = err
			continue
		}
		s.Port = port
		s.Addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		if sp.prepare != nil {
			pre, err := sp.prepare(s)
			if err != nil {
				lastErr = err
				continue
			}
			s.args = append(pre, extra...)
		}
		if lastErr = s.start(bin); lastErr == nil {
			return s, nil
		}
	}
	os.RemoveAll(dir)
	return nil, lastErr
}

// Start is New for tests: it fails tb at once when the server cannot start
// and stops the server in tb.Cleanup.
func Start(tb testing.TB, extra ...string) *Server {
	tb.Helper()
	s, err := New(extra...)
	return started(tb, s, err, "server")
}

// started is the body of the Start functions: it fails tb at once when err
// is set, and otherwise stops s in tb.Cleanup.
func started[S interface{ Stop() error }](tb testing.TB, s S, err error, what string) S {
	tb.Helper()
	if err != nil {
		tb.Fatalf("%v", err)
	}
	tb.Cleanup(func() {
		if err := s.Stop(); err != nil {
			tb.Errorf("redistest: stop %s: %v", what, err)
		}
	})
	return s
}

// Client returns a go-redis client for s that is closed in tb.Cleanup.
func (s *Server) Client(tb testing.TB) *redis.Client {
	tb.Helper()
	c := redis.NewClient(s.Options())
	tb.Cleanup(func() { c.Close() })
	return c
}

// Options returns go-redis options that reach s.
func (s *Server) Options() *redis.Options {
	return &redis.Options{Addr: s.Addr}
}

// PID returns the process id of the running server, or 0 when stopped.
func (s *Server) PID() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil || s.cmd.Process == nil {
		return 0
	}
	return s.cmd.Process.Pid
}

// Log returns what the server has printed so far.
func (s *Server) Log() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.log == nil {
		return ""
	}
	return s.log.String()
}

func (s *Server) start(bin string) error {
	var args []string
	if s.conf != "" {
		args = append(args, filepath.Join(s.dir, s.conf))
	}
	args = append(args,
		"--port", strconv.Itoa(s.Port),
		"--bind", "127.0.0.1",
		"--save", "",
		"--appendonly", "no",
		"--dir", s.dir,
		"--daemonize", "no",
		"--loglevel", "notice",
	)
	args = append(args, s.args...)
	cmd := exec.Command(bin, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return fmt.Errorf("redistest: %w", err)
	}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("redistest: start %s: %w", bin, err)
	}
	log := new(bytes.Buffer)
	done := make(chan struct{})
	ready := make(chan struct{})
	go func() { // owned: ends when the process closes its stdout, waited for through done
		defer close(done)
		sc := bufio.NewScanner(stdout)
		signalled := false
		for sc.Scan() {
			line := sc.Text()
			s.mu.Lock()
			log.WriteString(line)
			log.WriteByte('\n')
			s.mu.Unlock()
			if !signalled && strings.Contains(line, s.ready) {
				signalled = true
				close(ready)
			}
		}
		io.Copy(io.Discard, stdout)
		cmd.Wait()
	}()
	s.mu.Lock()
	s.cmd, s.done, s.log = cmd, done, log
	s.mu.Unlock()

	timer := time.NewTimer(readyTimeout)
	defer timer.Stop()
	select {
	case <-ready:
		return nil
	case <-done:
		return fmt.Errorf("redistest: redis-server on %s exited before it was ready:\n%s", s.Addr, s.Log())
	case <-timer.C:
		s.kill()
		return fmt.Errorf("redistest: redis-server on %s not ready after %v:\n%s", s.Addr, readyTimeout, s.Log())
	}
}

// kill sends SIGKILL to the server and waits for it to exit.
func (s *Server) kill() {
	s.mu.Lock()
	cmd, done := s.cmd, s.done
	s.cmd = nil
	s.mu.Unlock()
	if cmd == nil {
		return
	}
	cmd.Process.Signal(syscall.SIGKILL)
	<-done
}

// Kill stops the server abruptly (SIGKILL), as a crash would; Restart brings
// it back on the same port with an empty dataset.
func (s *Server) Kill() { s.kill() }

// Restart kills the server if it runs and starts it again on the same port.
func (s *Server) Restart() error {
	s.kill()
	bin, err := Binary()
	if err != nil {
		return err
	}
	return s.start(bin)
}

// Stop terminates the server by PID (SIGTERM, then SIGKILL after a grace
// period), waits for it and removes its working directory. It is safe to call
// more than once.
func (s *Server) Stop() error {
	s.mu.Lock()
	cmd, done := s.cmd, s.done
	s.cmd = nil
	s.mu.Unlock()
	if cmd != nil {
		cmd.Process.Signal(syscall.SIGTERM)
		t := time.NewTimer(5 * time.Second)
		select {
		case <-done:
		case <-t.C:
			cmd.Process.Signal(syscall.SIGKILL)
			<-done
		}
		t.Stop()
	}
	if s.dir != "" {
		if err := os.RemoveAll(s.dir); err != nil {
			return fmt.Errorf("redistest: remove %s: %w", s.dir, err)
		}
		s.dir = ""
	}
	return nil
}

// Ping checks that the server answers on its address.
func (s *Server) Ping(ctx context.Context) error {
	c := redis.NewClient(s.Options())
	defer c.Close()
	return c.Ping(ctx).Err()
}

// WaitReplicaOf waits until s is a replica of master (host:port) with its
// replication link up, as INFO replication reports it, and returns nil; or it
// returns an error saying what it last saw once ctx ends.
func (s *Server) WaitReplicaOf(ctx context.Context, master string) error {
	host, port, err := net.SplitHostPort(master)
	if err != nil {
		return fmt.Errorf("redistest: master address: %w", err)
	}
	c := redis.NewClient(s.Options())
	defer c.Close()
	return waitUntil(ctx, s.Addr+" replicating "+master, func(ctx context.Context) error {
		info, err := c.Info(ctx, "replication").Result()
		if err != nil {
			return err
		}
		f := parseInfo(info)
		if f["role"] != "slave" || f["master_host"] != host || f["master_port"] != port || f["master_link_status"] != "up" {
			return fmt.Errorf("role:%s master_host:%s master_port:%s master_link_status:%s",
				f["role"], f["master_host"], f["master_port"], f["master_link_status"])
		}
		return nil
	})
}

// waitUntil calls check until it returns nil, pausing pollEvery between
// calls, and returns nil; an error from check means "not yet". Once ctx ends
// it returns ctx's error together with what check said last.
func waitUntil(ctx context.Context, what string, check func(context.Context) error) error {
	t := time.NewTicker(pollEvery)
	defer t.Stop()
	for {
		err := check(ctx)
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("redistest: waiting for %s: %w (last: %v)", what, ctx.Err(), err)
		case <-t.C:
		}
	}
}

// parseInfo turns the "field:value" lines of an INFO or CLUSTER INFO reply
// into a map.
func parseInfo(info string) map[string]string {
	m := make(map[string]string)
	for line := range strings.Lines(info) {
		if k, v, ok := strings.Cut(strings.TrimSpace(line), ":"); ok {
			m[k] = v
		}
	}
	return m
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("redistest: find free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// IsConnectionSetup reports whether cmd is one that go-redis sends on a new
// connection before the caller's commands (HELLO, AUTH, CLIENT SETINFO,
// CLIENT SETNAME, CLIENT MAINT_NOTIFICATIONS). Hooks that count round trips
// skip them: a warm pool never pays them.
func IsConnectionSetup(cmd redis.Cmder) bool {
	switch cmd.Name() {
	case "hello", "auth":
		return true
	case "client":
		args := cmd.Args()
		if len(args) < 2 {
			return false
		}
		sub, _ := args[1].(string)
		switch strings.ToLower(sub) {
		case "setinfo", "setname", "maint_notifications":
			return true
		}
	}
	return false
}

// freePortOtherThan returns a free loopback port other than taken, which is
// a port just found free but not yet bound.
func freePortOtherThan(taken int) (int, error) {
	for range 5 {
		p, err := freePort()
		if err != nil {
			return 0, err
		}
		if p != taken {
			return p, nil
		}
	}
	return 0, fmt.Errorf("redistest: find free port: kept getting %d", taken)
}

// removeIfExists removes the file at path, if there is one.
func removeIfExists(path string) error {
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("redistest: %w", err)
	}
	return nil
}
