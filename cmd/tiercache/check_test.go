package main

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/tiercache/tiercache"
	"github.com/tiercache/tiercache/internal/redistest"
)

// TestCheckCLI publishes canaries with tiercache check: two live replicas
// apply it and say so in their presence records at once (exit 0, both
// "yes", lags within --wait); a presence record whose replica hears
// nothing (a copy of a record under another id, as a hung replica leaves)
// is reported as missed (exit 1, "no"); a namespace without replicas exits
// 3; a canary evicts nothing.
func TestCheckCLI(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	client := newClient(t, srv.Addr)
	a := startReplica(t, client, "replica-a", false)
	b := startReplica(t, client, "replica-b", false)
	ctx := context.Background()
	for _, r := range []*replica{a, b} {
		if err := r.cache.WritePresence(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if err := a.users.Set(ctx, 1, user{ID: 1}); err != nil {
		t.Fatal(err)
	}
	b.waitInvalidation(t, "the Set of users 1", keysOf("users", "1"))
	if _, err := b.users.Get(ctx, 1); err != nil { // into b's L1
		t.Fatal(err)
	}

	res := cli(t, "check", "--json", "--addr", srv.Addr)
	res.want(t, exitOK, nil, nil)
	var lines []checkLine
	if err := json.Unmarshal([]byte(res.stdout), &lines); err != nil {
		t.Fatalf("check --json: %v\n%s", err, res.stdout)
	}
	if len(lines) != 2 {
		t.Fatalf("check --json: %d replicas; want 2:\n%s", len(lines), res.stdout)
	}
	for _, l := range lines {
		if !l.Applied || l.Lag < 0 || l.Lag > 5*time.Second {
			t.Errorf("check: %+v; want applied, with a lag within --wait", l)
		}
	}
	if st := b.cache.Stats().Keyspaces["users"]; st.Invalidations != 1 {
		t.Errorf("b's invalidated keys after the canary: %d; want 1 (the Set's): a canary evicts nothing", st.Invalidations)
	}

	// A record nobody keeps: b's record under another id.
	rec, err := client.Get(ctx, tiercache.PresenceKey(tiercache.DefaultNamespace, "replica-b")).Bytes()
	if err != nil {
		t.Fatal(err)
	}
	var ghost map[string]any
	if err := json.Unmarshal(rec, &ghost); err != nil {
		t.Fatal(err)
	}
	ghost["id"] = "replica-hung"
	ghost["canary"] = ""
	rec, _ = json.Marshal(ghost)
	key := tiercache.PresenceKey(tiercache.DefaultNamespace, "replica-hung")
	if err := client.Set(ctx, key, rec, time.Minute).Err(); err != nil {
		t.Fatal(err)
	}
	index := tiercache.PresenceIndexKey(tiercache.DefaultNamespace)
	if err := client.ZAdd(ctx, index, redisZ(float64(time.Now().Add(time.Minute).UnixMilli()), "replica-hung")).Err(); err != nil {
		t.Fatal(err)
	}
	res = cli(t, "check", "--wait", "300ms", "--addr", srv.Addr)
	res.want(t, exitError, []string{"replica-a", "replica-b", "replica-hung"}, []string{"1 of 3 replicas did not apply the canary within 300ms"})
	for _, line := range strings.Split(res.stdout, "\n") {
		f := strings.Fields(line)
		if len(f) >= 3 && f[0] == "replica-hung" && f[2] != "no" {
			t.Errorf("check line %q; want replica-hung not applied", line)
		}
		if len(f) >= 3 && (f[0] == "replica-a" || f[0] == "replica-b") && f[2] != "yes" {
			t.Errorf("check line %q; want applied", line)
		}
	}

	cli(t, "check", "--addr", srv.Addr, "--namespace", "nobody").want(t, exitNotFound, nil, []string{"no live replica"})
	cli(t, "check", "--addr", srv.Addr, "--wait", "0s").want(t, exitUsage, nil, []string{"--wait"})
}
