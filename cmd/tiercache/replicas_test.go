package main

import (
	"context"
	"encoding/json"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/tiercache/tiercache"
	"github.com/tiercache/tiercache/internal/redistest"
)

// TestReplicasCLI proves that replicas lists every live replica with its
// keyspaces, as a table and as JSON, and never lists the CLI itself.
func TestReplicasCLI(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	client := newClient(t, srv.Addr)
	a := startReplica(t, client, "replica-a", false)
	b := startReplica(t, client, "replica-b", true)
	ctx := context.Background()
	for _, r := range []*replica{a, b} {
		if err := r.cache.WritePresence(ctx); err != nil {
			t.Fatal(err)
		}
	}

	r := cli(t, "replicas", "--addr", srv.Addr)
	r.want(t, exitOK, []string{"ID", "HOST", "L1-ENTRIES", "HIT%", "LAST-INVALIDATION", "SEEN"}, nil)
	t.Logf("tiercache replicas:\n%s", r.stdout)
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	if len(lines) != 3 {
		t.Fatalf("replicas printed %d lines; want a header and 2 replicas:\n%s", len(lines), r.stdout)
	}
	host, _ := os.Hostname()
	for i, want := range []struct{ id, keyspaces string }{
		{"replica-a", "products,users"},
		{"replica-b", "docs,products,users"},
	} {
		f := strings.Fields(lines[i+1])
		if f[0] != want.id || f[1] != host || f[4] != "healthy" || f[5] != "closed" || f[6] != want.keyspaces {
			t.Errorf("line %d = %q; want id %s, host %s, bus healthy, breaker closed, keyspaces %s", i+1, lines[i+1], want.id, host, want.keyspaces)
		}
		if !strings.HasSuffix(lines[i+1], " ago") {
			t.Errorf("line %d = %q; want it to end with the age of the record", i+1, lines[i+1])
		}
	}

	r = cli(t, "replicas", "--json", "--addr", srv.Addr)
	r.want(t, exitOK, nil, nil)
	var reps []tiercache.Replica
	if err := json.Unmarshal([]byte(r.stdout), &reps); err != nil {
		t.Fatalf("replicas --json: %v\n%s", err, r.stdout)
	}
	var ids []string
	for _, rep := range reps {
		ids = append(ids, rep.ID)
		if !rep.BusHealthy || rep.PID != os.Getpid() || rep.Namespace != tiercache.DefaultNamespace {
			t.Errorf("record %+v: want a healthy bus, pid %d, namespace %s", rep, os.Getpid(), tiercache.DefaultNamespace)
		}
	}
	if want := []string{"replica-a", "replica-b"}; !slices.Equal(ids, want) {
		t.Errorf("replicas --json ids = %q; want %q", ids, want)
	}
	if _, ok := reps[1].Stats.Keyspaces["docs"]; !ok {
		t.Errorf("replica-b's record lacks its keyspace docs: %v", reps[1].Stats.Keyspaces)
	}

	// Another namespace has none, and says which has; the CLI registered
	// itself nowhere.
	hint := []string{`no live replica in namespace "other" (from --namespace)`, `namespaces with live replicas: "tiercache" (2 replicas)`}
	r = cli(t, "replicas", "--namespace", "other", "--json", "--addr", srv.Addr)
	r.want(t, exitNotFound, []string{"[]"}, hint)
	r = cli(t, "replicas", "--namespace", "other", "--addr", srv.Addr)
	r.want(t, exitNotFound, nil, hint)
	if r.stdout != "" {
		t.Errorf("stdout = %q; want no table", r.stdout)
	}
}

// TestStatsCLI proves that stats reports the exact counts the test caused,
// per replica and keyspace, with a TOTAL row summing the replicas.
func TestStatsCLI(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	client := newClient(t, srv.Addr)
	a := startReplica(t, client, "replica-a", false)
	b := startReplica(t, client, "replica-b", false)
	both := []*replica{a, b}
	ctx := context.Background()

	// b writes user 1; a reads it from Redis once, then twice from L1, and
	// misses user 99. b loads product p1, then reads it from L1.
	set(t, b.users, 1, user{ID: 1, Name: "Ada"}, both)
	for range 3 {
		if _, err := a.users.Get(ctx, 1); err != nil {
			t.Fatal(err)
		}
		a.users.Wait()
	}
	if _, err := a.users.Get(ctx, 99); err == nil {
		t.Fatal("Get of a missing user found one")
	}
	load := func(ctx context.Context, id string) (item, error) { return item{Name: id}, nil }
	if _, err := b.products.GetOrLoad(ctx, "p1", load); err != nil {
		t.Fatal(err)
	}
	b.products.Wait()
	if _, err := b.products.Get(ctx, "p1"); err != nil {
		t.Fatal(err)
	}
	for _, r := range both {
		if err := r.cache.WritePresence(ctx); err != nil {
			t.Fatal(err)
		}
	}

	r := cli(t, "stats", "--json", "--addr", srv.Addr)
	r.want(t, exitOK, nil, nil)
	var got struct {
		Keyspaces map[string]struct {
			Replicas map[string]statsRow `json:"replicas"`
			Total    statsRow            `json:"total"`
		} `json:"keyspaces"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &got); err != nil {
		t.Fatalf("stats --json: %v\n%s", err, r.stdout)
	}
	users, products := got.Keyspaces["users"], got.Keyspaces["products"]
	tests := []struct {
		name string
		give statsRow
		want statsRow
	}{
		{"users replica-a", users.Replicas["replica-a"], statsRow{L1Hits: 2, L2Hits: 1, Misses: 1, HitRatio: 0.75, L1Entries: 1, Invalidations: 1}},
		{"users replica-b", users.Replicas["replica-b"], statsRow{Published: 1, Invalidations: 1}},
		{"users total", users.Total, statsRow{L1Hits: 2, L2Hits: 1, Misses: 1, HitRatio: 0.75, L1Entries: 1, Published: 1, Invalidations: 2}},
		{"products replica-b", products.Replicas["replica-b"], statsRow{L1Hits: 1, Loads: 1, HitRatio: 0.5, L1Entries: 1}},
		{"products total", products.Total, statsRow{L1Hits: 1, Loads: 1, HitRatio: 0.5, L1Entries: 1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			give := tt.give
			give.L1Cost, give.LoadP99 = 0, 0 // sizes and latencies vary; checked below
			if give != tt.want {
				t.Errorf("stats = %+v; want %+v", give, tt.want)
			}
		})
	}
	if p := products.Total; p.LoadP99 <= 0 || p.L1Cost <= 0 {
		t.Errorf("products total: load p99 %v and L1 cost %d; want both positive", p.LoadP99, p.L1Cost)
	}

	r = cli(t, "stats", "--keyspace", "users", "--addr", srv.Addr)
	r.want(t, exitOK, []string{"KEYSPACE", "REPLICA", "L1-HITS", "LOAD-P99", "TOTAL"}, nil)
	t.Logf("tiercache stats --keyspace users:\n%s", r.stdout)
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	if len(lines) != 4 {
		t.Fatalf("stats --keyspace users printed %d lines; want a header, 2 replicas and TOTAL:\n%s", len(lines), r.stdout)
	}
	if f := strings.Fields(lines[3]); strings.Join(f[:8], " ") != "users TOTAL 2 1 1 0 0 75.0%" {
		t.Errorf("TOTAL row = %q; want users TOTAL 2 1 1 0 0 75.0%% ...", lines[3])
	}
	if strings.Contains(r.stdout, "products") {
		t.Errorf("stats --keyspace users shows products:\n%s", r.stdout)
	}
}
