package main

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tiercache/tiercache"
	"github.com/tiercache/tiercache/internal/redistest"
)

// TestNoReplicaCLI proves that replicas and stats, finding no live replica
// in the namespace, exit 3 and name on stderr the namespaces that have
// some, with their count (at most shownNamespaces of them), and never a
// namespace whose replicas all expired; and that on a Redis where no
// namespace has any, they say so.
func TestNoReplicaCLI(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	client := newClient(t, srv.Addr)
	addr := []string{"--addr", srv.Addr}

	t.Run("none anywhere", func(t *testing.T) {
		for _, cmd := range []string{"replicas", "stats"} {
			r := cli(t, append([]string{cmd}, addr...)...)
			r.want(t, exitNotFound, nil, []string{`no live replica in namespace "tiercache" (the default)`,
				"no namespace of this Redis has a live replica", "heartbeat_interval"})
			if r.stdout != "" {
				t.Errorf("%s: stdout = %q; want nothing", cmd, r.stdout)
			}
		}
	})

	startNamespaceReplica(t, client, "shop", "shop-1", "")
	startNamespaceReplica(t, client, "shop", "shop-2", "")
	startNamespaceReplica(t, client, "catalog", "catalog-1", "")
	// A namespace whose only replica's record expired: its index member is
	// scored in the past.
	ctx := context.Background()
	if err := client.ZAdd(ctx, tiercache.PresenceIndexKey("gone"), redisZ(1, "gone-1")).Err(); err != nil {
		t.Fatal(err)
	}
	hint := []string{`no live replica in namespace "tiercache" (the default)`,
		`namespaces with live replicas: "catalog" (1 replica), "shop" (2 replicas): pass --namespace NAME or set TIERCACHE_NAMESPACE`}
	tests := []struct {
		name    string
		give    []string
		wantOut []string
	}{
		{"replicas", []string{"replicas"}, nil},
		{"replicas --json", []string{"replicas", "--json"}, []string{"[]"}},
		{"stats", []string{"stats"}, nil},
		{"stats --json", []string{"stats", "--json"}, []string{`"keyspaces": {}`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := cli(t, append(tt.give, addr...)...)
			r.want(t, exitNotFound, tt.wantOut, hint)
			if tt.wantOut == nil && r.stdout != "" {
				t.Errorf("stdout = %q; want nothing", r.stdout)
			}
			if want := `"gone"`; contains(r.stderr, want) {
				t.Errorf("stderr names %s, whose replicas expired:\n%s", want, r.stderr)
			}
		})
	}
	t.Run("the namespace itself has replicas", func(t *testing.T) {
		cli(t, append([]string{"replicas", "--namespace", "shop"}, addr...)...).want(t, exitOK, []string{"shop-1", "shop-2"}, nil)
	})

	t.Run("at most shownNamespaces named", func(t *testing.T) {
		far := float64(time.Now().Add(time.Hour).UnixMilli())
		for i := range shownNamespaces + 5 {
			ns := fmt.Sprintf("ns%02d", i)
			if err := client.ZAdd(ctx, tiercache.PresenceIndexKey(ns), redisZ(far, "r")).Err(); err != nil {
				t.Fatal(err)
			}
		}
		r := cli(t, append([]string{"replicas", "--namespace", "nope"}, addr...)...)
		// 17 namespaces with live replicas: catalog, ns00..ns14, shop.
		r.want(t, exitNotFound, nil, []string{`namespaces with live replicas: "catalog" (1 replica), "ns00" (1 replica)`, `"ns08" (1 replica) and 7 more`})
		if contains(r.stderr, `"ns09"`) {
			t.Errorf("stderr names more than %d namespaces:\n%s", shownNamespaces, r.stderr)
		}
	})
}

// TestLiveNamespacesBounded proves that the search for namespaces with
// live replicas stops after namespaceScanRounds SCAN calls per server, and
// says that it did: on a Redis of many more keys than it may look at, it
// reports an incomplete search; on a small one, a complete one.
func TestLiveNamespacesBounded(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	client := newClient(t, srv.Addr)
	ctx := context.Background()
	far := float64(time.Now().Add(time.Hour).UnixMilli())
	if err := client.ZAdd(ctx, tiercache.PresenceIndexKey("shop"), redisZ(far, "r1"), redisZ(far, "r2")).Err(); err != nil {
		t.Fatal(err)
	}
	found, complete, err := liveNamespaces(ctx, client, "tiercache")
	if err != nil || !complete || !slices.Equal(found, []liveNamespace{{"shop", 2}}) {
		t.Fatalf("liveNamespaces = %v, complete %v, %v; want shop (2), complete", found, complete, err)
	}
	if found, _, err := liveNamespaces(ctx, client, "shop"); err != nil || len(found) != 0 {
		t.Errorf("liveNamespaces skipping shop = %v, %v; want none", found, err)
	}

	// Twice the keys the search may look at.
	total := 2 * namespaceScanRounds * namespaceScanCount
	for i := 0; i < total; i += 1000 {
		pairs := make([]any, 0, 2000)
		for j := i; j < i+1000; j++ {
			pairs = append(pairs, fmt.Sprintf("filler:%d", j), "x")
		}
		if err := client.MSet(ctx, pairs...).Err(); err != nil {
			t.Fatal(err)
		}
	}
	var calls int
	client.AddHook(scanCounter{&calls})
	_, complete, err = liveNamespaces(ctx, client, "tiercache")
	if err != nil || complete {
		t.Errorf("liveNamespaces on %d keys: complete %v, %v; want an incomplete search", total, complete, err)
	}
	if calls > namespaceScanRounds {
		t.Errorf("liveNamespaces made %d SCAN calls; want at most %d", calls, namespaceScanRounds)
	}
}

func redisZ(score float64, member string) redis.Z { return redis.Z{Score: score, Member: member} }

func contains(s, sub string) bool { return strings.Contains(s, sub) }

// scanCounter is a go-redis hook that counts SCAN calls.
type scanCounter struct{ n *int }

func (h scanCounter) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h scanCounter) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if cmd.Name() == "scan" {
			*h.n++
		}
		return next(ctx, cmd)
	}
}

func (h scanCounter) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}
