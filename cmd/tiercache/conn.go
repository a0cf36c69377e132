package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"syscall"

	"github.com/redis/go-redis/v9"

	"github.com/tiercache/tiercache"
)

// connect builds the Redis client that c describes and PINGs it within
// --timeout. A failed PING closes the client and exits with
// exitUnreachable, saying whether Redis could not be reached or refused
// TLS or the credentials; a bad TLS file is a usage error.
func (c *connFlags) connect(ctx context.Context) (redis.UniversalClient, error) {
	rc := tiercache.RedisConfig{
		Addrs:    c.addrs(),
		Username: c.username,
		Password: c.password,
		TLS: tiercache.TLSConfig{
			Enabled:    c.tls,
			CAFile:     c.tlsCA,
			CertFile:   c.tlsCert,
			KeyFile:    c.tlsKey,
			ServerName: c.tlsServerName,
		},
	}
	opts, err := rc.ClientOptions()
	if err != nil {
		return nil, usageErrorf("%v", err)
	}
	opts.DialTimeout = c.timeout
	opts.ReadTimeout = c.timeout
	opts.WriteTimeout = c.timeout
	opts.MaxRetries = -1
	var client redis.UniversalClient
	if c.cluster {
		client = redis.NewClusterClient(opts.Cluster())
	} else {
		client = redis.NewUniversalClient(opts)
	}
	pctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	if err := client.Ping(pctx).Err(); err != nil {
		client.Close()
		if ctx.Err() != nil {
			return nil, fmt.Errorf("interrupted: %w", ctx.Err())
		}
		return nil, c.unreachable(err)
	}
	return client, nil
}

// unreachable explains a failed PING: what went wrong and what to do.
func (c *connFlags) unreachable(err error) error {
	addr := strings.Join(c.addrs(), ",")
	var msg string
	switch {
	case tiercache.TLSRefused(err):
		msg = fmt.Sprintf("TLS with Redis at %s failed: %v: check --tls-ca, --tls-server-name and --tls-cert/--tls-key", addr, err)
	case tiercache.AuthRefused(err):
		msg = fmt.Sprintf("Redis at %s refused the credentials: %v: check --username and --password (or %s and %s)", addr, err, envName("username"), envPassword)
	case c.cluster && strings.Contains(err.Error(), "cluster support disabled"):
		msg = fmt.Sprintf("Redis at %s is not a Cluster: %v: drop --cluster (or %s)", addr, err, envName("cluster"))
	default:
		msg = fmt.Sprintf("cannot reach Redis at %s within %v: %v: is it running? set --addr or %s", addr, c.timeout, err, envAddr)
		if !c.tls && (errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET)) {
			msg += " (add --tls if it speaks only TLS)"
		}
	}
	return &codedError{code: exitUnreachable, err: errors.New(msg)}
}

// replicas connects and reads the presence records of the namespace. err
// is a failure to connect or to read any record; listErr names the records
// that could not be decoded (the first shownErrors of them), beside those
// in reps that could. When there is no record at all, none is an
// exitNotFound error that says so and names the namespaces that have live
// replicas (liveNamespaces).
func (c *connFlags) replicas(ctx context.Context) (reps []tiercache.Replica, listErr, none, err error) {
	client, err := c.connect(ctx)
	if err != nil {
		return nil, nil, nil, err
	}
	defer client.Close()
	reps, listErr = tiercache.ListReplicas(ctx, client, c.namespace)
	listErr = firstErrors(listErr, shownErrors)
	if reps == nil && listErr != nil {
		return nil, nil, nil, listErr
	}
	if len(reps) == 0 {
		return nil, nil, c.noReplica(ctx, client), nil
	}
	return reps, listErr, nil, nil
}

// shownErrors is how many refused presence records an error names.
const shownErrors = 20

// firstErrors keeps the first n errors that err joins (errors.Join) and
// says how many more there were.
func firstErrors(err error, n int) error {
	j, ok := err.(interface{ Unwrap() []error })
	if !ok || len(j.Unwrap()) <= n {
		return err
	}
	errs := j.Unwrap()
	return fmt.Errorf("%w\n... and %d more", errors.Join(errs[:n]...), len(errs)-n)
}

// errEnough stops a scan early; scan does not return it.
var errEnough = errors.New("enough keys")

// scanBatch is the COUNT hint of every SCAN.
const scanBatch = 500

// scan calls fn with the keys that match pattern, a batch at a time (at
// most scanBatch keys each): on every master of a Cluster, concurrently, so
// fn must be safe for concurrent use, or on the one server. A key may come
// twice (SCAN's guarantee). When fn returns errEnough, scan stops (that
// master's scan, on a Cluster) and returns nil.
func scan(ctx context.Context, client redis.UniversalClient, pattern string, fn func(ctx context.Context, keys []string) error) error {
	one := func(ctx context.Context, c redis.Cmdable) error {
		var cursor uint64
		for {
			keys, next, err := c.Scan(ctx, cursor, pattern, scanBatch).Result()
			if err != nil {
				return fmt.Errorf("scan %q: %w", pattern, err)
			}
			if len(keys) > 0 {
				if err := fn(ctx, keys); errors.Is(err, errEnough) {
					return nil
				} else if err != nil {
					return err
				}
			}
			if next == 0 {
				return nil
			}
			cursor = next
		}
	}
	if cc, ok := client.(*redis.ClusterClient); ok {
		return cc.ForEachMaster(ctx, func(ctx context.Context, c *redis.Client) error { return one(ctx, c) })
	}
	return one(ctx, client)
}

// collect scans for at most limit keys matching pattern (deduplicated) and
// reports whether it stopped at the limit.
func collect(ctx context.Context, client redis.UniversalClient, pattern string, limit int) (keys []string, truncated bool, err error) {
	var (
		mu   sync.Mutex // protects seen, truncated
		seen = map[string]bool{}
	)
	err = scan(ctx, client, pattern, func(_ context.Context, batch []string) error {
		mu.Lock()
		defer mu.Unlock()
		for _, k := range batch {
			if len(seen) >= limit {
				truncated = true
				return errEnough
			}
			seen[k] = true
		}
		return nil
	})
	for k := range seen {
		keys = append(keys, k)
	}
	return keys, truncated, err
}

// globEscape escapes the characters that SCAN's MATCH treats as special,
// so that s matches itself.
func globEscape(s string) string {
	var b strings.Builder
	for _, r := range s {
		switch r {
		case '*', '?', '[', ']', '\\', '^', '-':
			b.WriteByte('\\')
		}
		b.WriteRune(r)
	}
	return b.String()
}
