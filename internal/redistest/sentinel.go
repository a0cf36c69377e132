package redistest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"
)

// SentinelMasterName is the name under which NewSentinel's sentinel
// monitors its master.
const SentinelMasterName = "tiercache"

// sentinelConf is the sentinel's config file, in its own dir; the sentinel
// rewrites it as its view changes.
const sentinelConf = "sentinel.conf"

// sentinelReadyLine is what a sentinel prints once it listens and monitors
// its master: it never prints the data node's ready line.
const sentinelReadyLine = "+monitor master"

// Sentinel is a master, one replica and one sentinel on loopback, for
// failover tests. The sentinel (quorum 1) declares the master down after 1 s
// without an answer and gives a failover 5 s.
type Sentinel struct {
	// Master is the server started as the master. Failover does not change
	// the fields: after one, Master is the server that was demoted.
	Master *Server
	// Replica is the server started as a replica of Master.
	Replica *Server
	// Sentinel is the sentinel (redis-server --sentinel) watching Master.
	Sentinel *Server
	// MasterName is the name the sentinel knows the master by, for
	// redis.FailoverOptions.MasterName: SentinelMasterName.
	MasterName string
}

// NewSentinel starts a master, a replica of it and a sentinel that monitors
// it, and returns once the replica's link is up and the sentinel reports the
// master and a healthy replica (waiting at most 20 s). The caller must call
// Stop.
func NewSentinel() (*Sentinel, error) {
	s := &Sentinel{MasterName: SentinelMasterName}
	// Without a delay the master streams its snapshot to a new replica at
	// once, here and when the demoted master resyncs after a failover.
	noDelay := []string{"--repl-diskless-sync-delay", "0"}
	var err error
	if s.Master, err = New(noDelay...); err != nil {
		return nil, err
	}
	if s.Replica, err = New(append(noDelay, "--replicaof", "127.0.0.1", strconv.Itoa(s.Master.Port))...); err != nil {
		return nil, errors.Join(err, s.Stop())
	}
	ctx, cancel := context.WithTimeout(context.Background(), setupTimeout)
	defer cancel()
	if err := s.Replica.WaitReplicaOf(ctx, s.Master.Addr); err != nil {
		return nil, errors.Join(err, s.Stop())
	}
	s.Sentinel, err = newServer(spec{
		conf:  sentinelConf,
		ready: sentinelReadyLine,
		prepare: func(sn *Server) ([]string, error) {
			// Written afresh on every attempt: a sentinel rewrites it.
			conf := fmt.Sprintf("sentinel resolve-hostnames no\n"+
				"sentinel monitor %[1]s 127.0.0.1 %[2]d 1\n"+
				"sentinel down-after-milliseconds %[1]s 1000\n"+
				"sentinel failover-timeout %[1]s 5000\n",
				s.MasterName, s.Master.Port)
			if err := os.WriteFile(filepath.Join(sn.dir, sentinelConf), []byte(conf), 0o600); err != nil {
				return nil, fmt.Errorf("redistest: write sentinel config: %w", err)
			}
			return []string{"--sentinel"}, nil
		},
	})
	if err != nil {
		return nil, errors.Join(fmt.Errorf("redistest: sentinel: %w", err), s.Stop())
	}
	if err := s.waitMonitoring(ctx); err != nil {
		return nil, errors.Join(err, s.Stop())
	}
	return s, nil
}

// waitMonitoring waits until the sentinel names Master as the master and
// has heard from Replica, with its link to the master up: the state in
// which SENTINEL FAILOVER finds a replica to promote.
func (s *Sentinel) waitMonitoring(ctx context.Context) error {
	sc := redis.NewSentinelClient(s.Sentinel.Options())
	defer sc.Close()
	return waitUntil(ctx, "the sentinel to see master and replica", func(ctx context.Context) error {
		addr, err := s.masterAddr(ctx, sc)
		if err != nil {
			return err
		}
		if addr != s.Master.Addr {
			return fmt.Errorf("master at %s", addr)
		}
		replicas, err := sc.Replicas(ctx, s.MasterName).Result()
		if err != nil {
			return err
		}
		ok := slices.ContainsFunc(replicas, func(r map[string]string) bool {
			return net.JoinHostPort(r["ip"], r["port"]) == s.Replica.Addr &&
				r["flags"] == "slave" && r["master-link-status"] == "ok"
		})
		if !ok {
			return fmt.Errorf("replicas %v", replicas)
		}
		return nil
	})
}

// masterAddr returns the master's host:port as the sentinel reports it.
func (s *Sentinel) masterAddr(ctx context.Context, sc *redis.SentinelClient) (string, error) {
	hp, err := sc.GetMasterAddrByName(ctx, s.MasterName).Result()
	if err != nil {
		return "", err
	}
	if len(hp) != 2 {
		return "", fmt.Errorf("get-master-addr-by-name = %q", hp)
	}
	return net.JoinHostPort(hp[0], hp[1]), nil
}

// StartSentinel is NewSentinel for tests: it fails tb at once when the setup
// cannot start and stops every process in tb.Cleanup.
func StartSentinel(tb testing.TB) *Sentinel {
	tb.Helper()
	s, err := NewSentinel()
	return started(tb, s, err, "sentinel setup")
}

// FailoverOptions returns go-redis options for a client that finds the
// master through the sentinel.
func (s *Sentinel) FailoverOptions() *redis.FailoverOptions {
	return &redis.FailoverOptions{
		MasterName:    s.MasterName,
		SentinelAddrs: []string{s.Sentinel.Addr},
	}
}

// FailoverClient returns a go-redis client that follows the master through
// the sentinel (redis.NewFailoverClient); it is closed in tb.Cleanup.
func (s *Sentinel) FailoverClient(tb testing.TB) *redis.Client {
	tb.Helper()
	c := redis.NewFailoverClient(s.FailoverOptions())
	tb.Cleanup(func() { c.Close() })
	return c
}

// Failover asks the sentinel to fail over (SENTINEL FAILOVER), retrying while
// it finds no replica fit to promote, and waits until the sentinel reports
// another master; it returns that master's host:port, which with one replica
// is the address of whichever server was not the master. ctx bounds the
// whole wait; a failover takes about a second.
//
// When Failover returns, the old master still runs as a master, and a
// failover client learns of the switch only when the sentinel's
// +switch-master message reaches it, so its next command may still land on
// the old master. The sentinel demotes the old master (REPLICAOF the new one,
// which drops what was written there meanwhile, and CLIENT KILL of its
// clients) about 10 s after the switch, at its next INFO check of it; wait for
// that with Master.WaitReplicaOf.
func (s *Sentinel) Failover(ctx context.Context) (newMaster string, err error) {
	sc := redis.NewSentinelClient(s.Sentinel.Options())
	defer sc.Close()
	old, err := s.masterAddr(ctx, sc)
	if err != nil {
		return "", fmt.Errorf("redistest: sentinel master: %w", err)
	}
	err = waitUntil(ctx, "SENTINEL FAILOVER to start", func(ctx context.Context) error {
		err := sc.Failover(ctx, s.MasterName).Err()
		if err != nil && strings.HasPrefix(err.Error(), "INPROG") {
			return nil // an earlier attempt did start it
		}
		return err
	})
	if err != nil {
		return "", err
	}
	err = waitUntil(ctx, "the sentinel to report a new master", func(ctx context.Context) error {
		addr, err := s.masterAddr(ctx, sc)
		if err != nil {
			return err
		}
		if addr == old {
			return fmt.Errorf("master still %s", addr)
		}
		newMaster = addr
		return nil
	})
	if err != nil {
		return "", err
	}
	return newMaster, nil
}

// Stop stops the sentinel, then the replica and the master, by PID, and
// removes their dirs. It is safe to call more than once, and on a setup that
// started only in part.
func (s *Sentinel) Stop() error {
	var errs []error
	for _, n := range []*Server{s.Sentinel, s.Replica, s.Master} {
		if n != nil {
			errs = append(errs, n.Stop())
		}
	}
	return errors.Join(errs...)
}
