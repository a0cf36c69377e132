package main

import (
	"context"
	"errors"
	"maps"
	"slices"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/tiercache/tiercache"
	"github.com/tiercache/tiercache/internal/redistest"
)

// TestInvalidateCLI proves that invalidate of keys, of tags and of a whole
// keyspace deletes in Redis and makes both replicas evict, through the
// library's wire format (the replicas' hooks see the CLI's messages), and
// that --l1-only evicts without touching Redis.
func TestInvalidateCLI(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	client := newClient(t, srv.Addr)
	a := startReplica(t, client, "replica-a", false)
	b := startReplica(t, client, "replica-b", false)
	both := []*replica{a, b}
	ctx := context.Background()
	for _, r := range both {
		if err := r.cache.WritePresence(ctx); err != nil {
			t.Fatal(err)
		}
	}
	addr := []string{"--addr", srv.Addr}
	// exist reports which of the Redis keys exist.
	exist := func(keys ...string) []bool {
		t.Helper()
		out := make([]bool, len(keys))
		for i, k := range keys {
			n, err := client.Exists(ctx, k).Result()
			if err != nil {
				t.Fatal(err)
			}
			out[i] = n == 1
		}
		return out
	}
	wantExist := func(keys []string, want ...bool) {
		t.Helper()
		if got := exist(keys...); !slices.Equal(got, want) {
			t.Errorf("%q exist = %v; want %v", keys, got, want)
		}
	}

	t.Run("keys", func(t *testing.T) {
		set(t, b.users, 1, user{ID: 1}, both)
		set(t, b.users, 2, user{ID: 2}, both)
		for _, rep := range both { // fill both L1s
			if _, err := rep.users.Get(ctx, 1); err != nil {
				t.Fatal(err)
			}
			rep.users.Wait()
		}
		r := cli(t, append([]string{"invalidate", "users", "1", "2", "3"}, addr...)...)
		r.want(t, exitOK, []string{"deleted 2 keys of the 3 named (the others were not in Redis), published 1 invalidation"}, nil)
		for _, rep := range both {
			rep.waitInvalidation(t, "users 1, 2 and 3 from the CLI", fromCLI(keysOf("users", "1", "2", "3")))
		}
		wantExist([]string{"tiercache:users:1", "tiercache:users:2"}, false, false)
		for _, rep := range both {
			if u, err := rep.users.Get(ctx, 1); !errors.Is(err, tiercache.ErrNotFound) {
				t.Errorf("%s: Get(1) after invalidate = %+v, %v; want ErrNotFound (L1 evicted)", rep.id, u, err)
			}
		}
	})

	t.Run("tag", func(t *testing.T) {
		set(t, b.products, "p1", item{ID: 1}, both, "red")
		set(t, b.products, "p2", item{ID: 2}, both, "red", "sale")
		set(t, b.products, "p3", item{ID: 3}, both, "blue")
		r := cli(t, append([]string{"invalidate", "--tag", "red", "products"}, addr...)...)
		// One message names the tag (replicas stop sharing loads in
		// flight), one the keys deleted.
		r.want(t, exitOK, []string{"deleted 2 keys tagged red, published 2 invalidations"}, nil)
		for _, rep := range both {
			got := rep.waitInvalidation(t, "products tagged red", fromCLI(func(i tiercache.Invalidation) bool { return i.Keyspace == "products" && len(i.Keys) > 0 }))
			if slices.Sort(got.Keys); !slices.Equal(got.Keys, []string{"p1", "p2"}) {
				t.Errorf("%s evicted %q; want p1 and p2", rep.id, got.Keys)
			}
		}
		wantExist([]string{"tiercache:products:p1", "tiercache:products:p2", "tiercache:products:p3"}, false, false, true)
	})

	t.Run("all", func(t *testing.T) {
		var keys []string
		for id := range int64(5) {
			set(t, a.users, 10+id, user{ID: 10 + id}, both)
			keys = append(keys, a.users.RedisKey(10+id))
		}
		r := cli(t, append([]string{"invalidate", "users", "--all"}, addr...)...)
		r.want(t, exitOK, []string{"cleared keyspace \"users\"", "published 1 invalidation"}, nil)
		for _, rep := range both {
			rep.waitInvalidation(t, "a flush of users", fromCLI(flushOf("users")))
		}
		// The values are gone for every replica; Redis frees them as
		// their TTLs run out.
		for _, rep := range both {
			for id := range int64(5) {
				if u, err := rep.users.Get(ctx, 10+id); !errors.Is(err, tiercache.ErrNotFound) {
					t.Errorf("%s: Get(%d) after invalidate --all = %+v, %v; want ErrNotFound", rep.id, 10+id, u, err)
				}
			}
		}
		for _, k := range keys {
			if ttl := client.PTTL(ctx, k).Val(); ttl <= 0 {
				t.Errorf("%s: PTTL %v after invalidate --all; want the value left to its TTL", k, ttl)
			}
		}
		wantExist([]string{"tiercache:products:p3"}, true)
	})

	t.Run("l1-only", func(t *testing.T) {
		set(t, a.users, 20, user{ID: 20}, both)
		set(t, a.products, "p4", item{ID: 4}, both, "green")
		for _, rep := range both { // fill both L1s
			if _, err := rep.users.Get(ctx, 20); err != nil {
				t.Fatal(err)
			}
			rep.users.Wait()
		}
		before := dump(t, client)
		tests := []struct {
			give  []string
			want  string
			match func(tiercache.Invalidation) bool
		}{
			{[]string{"users", "20", "--l1-only"}, "published 1 invalidation of keyspace \"users\" on tiercache:invalidate: 1 key; Redis data unchanged", keysOf("users", "20")},
			{[]string{"--l1-only", "users", "--", "-1"}, "1 key; Redis data unchanged", keysOf("users", "-1")},
			{[]string{"products", "--tag", "green", "--l1-only"}, "1 tag (replicas flush the keyspace)", flushOf("products")},
			{[]string{"products", "--all", "--l1-only"}, "a flush; Redis data unchanged", flushOf("products")},
		}
		for _, tt := range tests {
			r := cli(t, append(append([]string{"invalidate"}, addr...), tt.give...)...)
			r.want(t, exitOK, []string{tt.want}, nil)
			for _, rep := range both {
				rep.waitInvalidation(t, tt.want, fromCLI(tt.match))
			}
		}
		if after := dump(t, client); !maps.Equal(before, after) {
			t.Errorf("--l1-only changed Redis: before %q, after %q", before, after)
		}
		for _, rep := range both { // numbered, as the replicas' own: replay stays on
			if st := rep.cache.Stats().Replay; st.Unnumbered || st.SequenceGaps != 0 {
				t.Errorf("%s: replay stats %+v after invalidate --l1-only; want its messages numbered in order", rep.id, st)
			}
		}
		for _, rep := range both { // evicted from L1, still in Redis
			l2 := rep.users.Stats().L2Hits
			if _, err := rep.users.Get(ctx, 20); err != nil {
				t.Fatal(err)
			}
			if got := rep.users.Stats().L2Hits; got != l2+1 {
				t.Errorf("%s: Get(20) after invalidate --l1-only: L2 hits %d -> %d; want one more (L1 evicted, Redis kept it)", rep.id, l2, got)
			}
		}
	})

	// The CLI wrote no presence record: it is no replica.
	reps, err := tiercache.ListReplicas(ctx, client, "")
	if err != nil {
		t.Fatal(err)
	}
	if len(reps) != 2 || reps[0].ID != "replica-a" || reps[1].ID != "replica-b" {
		t.Errorf("presence records after the CLI ran: %+v; want replica-a and replica-b only", reps)
	}
}

// dump returns every value key of the namespace with its value (presence
// records and tag sets, "tiercache::...", aside).
func dump(t *testing.T, client *redis.Client) map[string]string {
	t.Helper()
	ctx := context.Background()
	keys, err := client.Keys(ctx, "tiercache:*").Result()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, k := range keys {
		if strings.HasPrefix(k, "tiercache::") {
			continue
		}
		v, err := client.Get(ctx, k).Result()
		if err != nil {
			t.Fatal(err)
		}
		out[k] = v
	}
	return out
}
