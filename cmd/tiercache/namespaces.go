package main

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"

	"github.com/redis/go-redis/v9"

	"github.com/tiercache/tiercache"
)

// Bounds of the search for the namespaces that have live replicas: an
// operator's command may SCAN, but not the whole of a large Redis.
const (
	// namespaceScanRounds is how many SCAN calls the search makes per
	// server (each master of a Cluster) at most.
	namespaceScanRounds = 50
	// namespaceScanCount is the COUNT hint of each of them: so at most
	// about namespaceScanRounds*namespaceScanCount keys are looked at per
	// server.
	namespaceScanCount = 1000
	// maxIndexKeys is how many presence index keys the search reads.
	maxIndexKeys = 1000
	// shownNamespaces is how many namespaces a message names.
	shownNamespaces = 10
)

// presenceIndexPattern matches the presence index of every namespace,
// "<namespace>::replicas{<namespace>}" (tiercache.PresenceIndexKey).
const presenceIndexPattern = "*::replicas{*}"

// liveNamespace is a namespace and how many live replicas its presence
// index names.
type liveNamespace struct {
	name     string
	replicas int64
}

// liveNamespaces looks for the presence indexes of every namespace with a
// bounded SCAN (MATCH presenceIndexPattern, COUNT namespaceScanCount, at
// most namespaceScanRounds calls per server and maxIndexKeys keys) and
// returns the namespaces whose index has live members (scored after
// Redis's clock now), sorted by name, except skip. complete reports
// whether the SCAN covered every key.
func liveNamespaces(ctx context.Context, client redis.UniversalClient, skip string) (found []liveNamespace, complete bool, err error) {
	var (
		mu      sync.Mutex            // protects indexes
		indexes = map[string]string{} // namespace -> index key
	)
	complete, err = scanBounded(ctx, client, presenceIndexPattern, namespaceScanCount, namespaceScanRounds, func(keys []string) bool {
		mu.Lock()
		defer mu.Unlock()
		for _, k := range keys {
			ns, _, ok := strings.Cut(k, "::replicas{")
			if !ok || ns == skip || tiercache.PresenceIndexKey(ns) != k {
				continue // a record whose id ends in '}', or not an index
			}
			if len(indexes) == maxIndexKeys {
				return false
			}
			indexes[ns] = k
		}
		return true
	})
	if err != nil {
		return nil, false, err
	}
	if len(indexes) == 0 {
		return nil, complete, nil
	}
	now, err := client.Time(ctx).Result()
	if err != nil {
		return nil, false, fmt.Errorf("time: %w", err)
	}
	names := make([]string, 0, len(indexes))
	for ns := range indexes {
		names = append(names, ns)
	}
	slices.Sort(names)
	counts := make([]*redis.IntCmd, len(names))
	after := fmt.Sprintf("(%d", now.UnixMilli())
	if _, err := client.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, ns := range names {
			counts[i] = p.ZCount(ctx, indexes[ns], after, "+inf")
		}
		return nil
	}); err != nil {
		return nil, false, fmt.Errorf("count live replicas: %w", err)
	}
	for i, ns := range names {
		if n := counts[i].Val(); n > 0 {
			found = append(found, liveNamespace{ns, n})
		}
	}
	return found, complete, nil
}

// scanBounded calls fn with the keys matching pattern, a batch at a time,
// on every master of a Cluster (concurrently: fn must be safe for
// concurrent use) or on the one server, making at most rounds SCAN calls
// of COUNT count per server, and stops a server's scan when fn returns
// false. complete reports whether every server's scan reached its end.
func scanBounded(ctx context.Context, client redis.UniversalClient, pattern string, count int64, rounds int, fn func(keys []string) bool) (complete bool, err error) {
	var (
		mu       sync.Mutex // protects complete
		finished = true
	)
	one := func(ctx context.Context, c redis.Cmdable) error {
		var cursor uint64
		for range rounds {
			keys, next, err := c.Scan(ctx, cursor, pattern, count).Result()
			if err != nil {
				return fmt.Errorf("scan %q: %w", pattern, err)
			}
			if len(keys) > 0 && !fn(keys) {
				break
			}
			if next == 0 {
				return nil
			}
			cursor = next
		}
		mu.Lock()
		finished = false
		mu.Unlock()
		return nil
	}
	if cc, ok := client.(*redis.ClusterClient); ok {
		err = cc.ForEachMaster(ctx, func(ctx context.Context, c *redis.Client) error { return one(ctx, c) })
	} else {
		err = one(ctx, client)
	}
	return finished && err == nil, err
}

// noReplica is the error of replicas and stats when the namespace has no
// live replica (exitNotFound): it says so, and names the namespaces that
// have some, or says that none has, so that a wrong --namespace shows.
func (c *connFlags) noReplica(ctx context.Context, client redis.UniversalClient) error {
	src := "the default"
	if s := c.source["namespace"]; s != "" {
		src = "from " + s
	}
	msg := fmt.Sprintf("no live replica in namespace %q (%s)", c.namespace, src)
	found, complete, err := liveNamespaces(ctx, client, c.namespace)
	switch {
	case err != nil:
		msg += fmt.Sprintf("; the search for namespaces that have some failed: %v", err)
	case len(found) > 0:
		shown := make([]string, 0, shownNamespaces)
		for _, ns := range found[:min(len(found), shownNamespaces)] {
			shown = append(shown, fmt.Sprintf("%q (%s)", ns.name, plural(int(ns.replicas), "replica")))
		}
		list := strings.Join(shown, ", ")
		if more := len(found) - len(shown); more > 0 {
			list += fmt.Sprintf(" and %d more", more)
		}
		msg += fmt.Sprintf("\nnamespaces with live replicas: %s: pass --namespace NAME or set %s", list, envNamespace)
	case complete:
		msg += "\nno namespace of this Redis has a live replica: are the replicas running against it (--addr), with heartbeats on (heartbeat_interval not negative)?"
	default:
		msg += fmt.Sprintf("\nno namespace with live replicas found in the first %d keys of each server (the search stops there)", namespaceScanRounds*namespaceScanCount)
	}
	if len(found) > 0 && !complete {
		msg += fmt.Sprintf(" (the search looked at the first %d keys of each server only)", namespaceScanRounds*namespaceScanCount)
	}
	return &codedError{code: exitNotFound, err: fmt.Errorf("%s", msg)}
}
