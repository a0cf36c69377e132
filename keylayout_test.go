package tiercache_test

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tiercache/tiercache"
	"github.com/tiercache/tiercache/internal/redistest"
)

// Hostile keyspace names that NewKeyspace accepts: names of the roles of
// the bookkeeping keys, and odd but legal characters.
var hostileKeyspaces = []string{
	"wb", "wt", "tag", "tagv", "cnt", "fence", "replicas", "orders", "invalidate",
	"a", "9", "x_y-z.w", "ünï", "%s", strings.Repeat("k", tiercache.MaxKeyspaceName),
}

// Hostile keys: the bookkeeping keys of other keyspaces written as keys,
// hash tags, separators, control characters.
var hostileKeys = []string{
	"", ":", "::", "{", "}", "{}", "{orders}", "{orders}:last", "{orders}:dead",
	"{orders}:flight:k", ":wb:{orders}", "::wb:{orders}", "wb:{orders}", ":fence{0}",
	"fence{0}", "tag:{orders:t}", ":tagv:{orders}", "cnt:{orders}:totals",
	":replicas{tiercache}:id", "\x00", "\x1b[2J", "a b\nc", "ünï",
}

// TestKeyLayout proves, for every hostile keyspace name and key, that no
// value key of any keyspace can equal a key of the cache's own bookkeeping
// (write-behind streams and their marks, dead letters and flight markers;
// write-through markers; tag sets, their pending sets and tag versions;
// counters; fences; presence records and their index), and that names able
// to break the layout are refused: every bookkeeping key starts with
// "<namespace>::", and no value key can, since a keyspace name is never
// empty and never holds ':'.
func TestKeyLayout(t *testing.T) {
	srv := redistest.Start(t)
	r := newReplica(t, srv, tiercache.Config{})
	ns := r.c.Config().Namespace
	type owner struct{ ks, key string }
	book := map[string]owner{}
	var values []string
	for i, name := range hostileKeyspaces {
		ks, err := tiercache.NewKeyspace[string, int](r.c, name, tiercache.KeyspaceConfig{})
		if err != nil {
			t.Fatalf("NewKeyspace(%q) = %v; want a legal name", name, err)
		}
		for _, key := range hostileKeys {
			rkey := ks.RedisKey(key)
			if !strings.HasPrefix(rkey, ns+":"+name+":") || strings.HasPrefix(rkey, ns+"::") {
				t.Errorf("value key %q of keyspace %q is outside <namespace>:<keyspace>:", rkey, name)
			}
			values = append(values, rkey)
			for _, bk := range tiercache.BookkeepingKeys(ks, key, "t"+strconv.Itoa(i), "id-"+key) {
				if !strings.HasPrefix(bk, ns+"::") {
					t.Errorf("bookkeeping key %q of keyspace %q does not start with %q", bk, name, ns+"::")
				}
				book[bk] = owner{name, key}
			}
		}
	}
	for _, v := range values {
		if o, ok := book[v]; ok {
			t.Errorf("value key %q is also a bookkeeping key of keyspace %q (key %q)", v, o.ks, o.key)
		}
	}
	t.Logf("%d value keys, %d bookkeeping keys: disjoint", len(values), len(book))

	refused := []string{"", "a:b", "{x}", "}x", "x{", "a b", "a\tb", "\x1b[31m", "a*", "a?", "[a]", `a\b`, "é\x00"}
	for _, name := range refused {
		if _, err := tiercache.NewKeyspace[string, int](r.c, name, tiercache.KeyspaceConfig{}); !errors.Is(err, tiercache.ErrInvalidConfig) {
			t.Errorf("NewKeyspace(%q) = %v; want ErrInvalidConfig", name, err)
		}
		if name == "" {
			continue // the empty namespace is the default one
		}
		if _, err := tiercache.New(r.client, tiercache.Config{Namespace: name}); !errors.Is(err, tiercache.ErrInvalidConfig) {
			t.Errorf("New(namespace %q) = %v; want ErrInvalidConfig", name, err)
		}
	}
}

// TestKeyLayoutWriteBehindSurvivesHostileKeys replays the collisions that
// once lost acknowledged write-behind records: with 100 records of
// keyspace "orders" pending while the database is down, keyspace "wb"
// deletes and writes the keys that were the stream's names, and the
// operator's whole-keyspace invalidation of "wb" runs; once the database
// is back, all 100 records reach it, none skipped.
func TestKeyLayoutWriteBehindSurvivesHostileKeys(t *testing.T) {
	srv := redistest.Start(t)
	r := newReplica(t, srv, tiercache.Config{})
	ctx := t.Context()
	d := newWBStore()
	down := make(chan struct{})
	orders := mustKeyspace(t, r.c, "orders", tiercache.KeyspaceConfig{WriteBehind: tiercache.WriteBehindConfig{Interval: 5 * time.Millisecond}},
		tiercache.WithWriteBehind(d.writer(func(ctx context.Context, _ map[string]int) error {
			select {
			case <-down:
				return nil
			default:
				return errors.New("database down")
			}
		})))
	wb := mustKeyspace[string, int](t, r.c, "wb", tiercache.KeyspaceConfig{})
	want := map[string]int{}
	for i := range 100 {
		k := "o" + strconv.Itoa(i)
		want[k] = i
		if err := orders.WriteBehind(ctx, k, i); err != nil {
			t.Fatal(err)
		}
	}
	if c := d.next(t); c.err == nil {
		t.Fatalf("first write went through: %v; want the database down", c.values)
	}
	for _, k := range []string{"{orders}", "{orders}:last", "{orders}:dead", "{orders}:flight:o1"} {
		if err := wb.Delete(ctx, k); err != nil {
			t.Fatal(err)
		}
		if err := wb.Set(ctx, k, -1); err != nil {
			t.Fatal(err)
		}
	}
	if n, err := r.client.XLen(ctx, wbStream("orders")).Result(); err != nil || n != 100 {
		t.Errorf("XLEN of the orders stream after the hostile writes = %d, %v; want 100", n, err)
	}
	close(down)
	d.await(t, want, waitTimeout)
}
