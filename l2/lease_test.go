package l2_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tiercache/tiercache/internal/redistest"
	"github.com/tiercache/tiercache/l2"
)

// fillLease ends lease on it.Key with a FillLease fill of it (TTL 0: drop
// the lease), msg published on channel when it stores.
func fillLease(ctx context.Context, s *l2.Store, lease []byte, it l2.Item, channel string, msg []byte) (l2.FillResult, error) {
	res, err := s.Fill(ctx, []l2.Fill{{Item: it, Mode: l2.FillLease, Lease: lease, Msg: msg}}, channel)
	if err != nil {
		return 0, err
	}
	if len(res) != 1 {
		return 0, fmt.Errorf("Fill returned %d results for 1 fill", len(res))
	}
	return res[0], nil
}

// A lease is stored only on an absent key; a FillLease fill replaces it
// only while it is still there, so a write or delete in between voids the
// load.
func TestLease(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	c, _ := newClient(t, srv)
	s := newStore(t, c, roomy())
	ps := subscribe(t, srv, "ls:inv")
	ctx := t.Context()

	cur, ok, err := s.Acquire(ctx, "ls:a", []byte("L1"), time.Minute)
	if err != nil || !ok || cur.Present() {
		t.Fatalf("Acquire(absent) = %q, %v, %v; want acquired", cur.Value, ok, err)
	}
	if ttl := c.PTTL(ctx, "ls:a").Val(); ttl <= 0 || ttl > time.Minute {
		t.Errorf("lease PTTL = %v", ttl)
	}
	cur, ok, err = s.Acquire(ctx, "ls:a", []byte("L2"), time.Minute)
	if err != nil || ok || string(cur.Value) != "L1" {
		t.Fatalf("Acquire(held) = %q, %v, %v; want the first lease back", cur.Value, ok, err)
	}
	if cur.TTL <= 0 || cur.TTL > time.Minute {
		t.Errorf("Acquire(held) TTL = %v; want the lease's, in (0, 1m]", cur.TTL)
	}
	res, err := fillLease(ctx, s, []byte("L1"), l2.Item{Key: "ls:a", Value: []byte("v"), TTL: time.Minute}, "ls:inv", []byte("a"))
	if err != nil || res != l2.Stored {
		t.Fatalf("fill of own lease = %v, %v; want stored", res, err)
	}
	if got := receive(t, ps); string(got) != "a" {
		t.Errorf("message = %q", got)
	}
	if v := c.Get(ctx, "ls:a").Val(); v != "v" {
		t.Errorf("GET after release = %q; want v", v)
	}
	cur, ok, err = s.Acquire(ctx, "ls:a", []byte("L3"), time.Minute)
	if err != nil || ok || string(cur.Value) != "v" {
		t.Errorf("Acquire(value) = %q, %v, %v; want the value", cur.Value, ok, err)
	}
	if cur.TTL <= 0 || cur.TTL > time.Minute {
		t.Errorf("Acquire(value) TTL = %v; want the value's, in (0, 1m]", cur.TTL)
	}

	// Voided: a write replaced the lease before the load ended.
	if _, ok, _ := s.Acquire(ctx, "ls:b", []byte("L4"), time.Minute); !ok {
		t.Fatal("Acquire(ls:b) not acquired")
	}
	if err := s.SetAndPublish(ctx, l2.Item{Key: "ls:b", Value: []byte("new"), TTL: time.Minute}, "ls:inv", []byte("w")); err != nil {
		t.Fatal(err)
	}
	receive(t, ps)
	res, err = fillLease(ctx, s, []byte("L4"), l2.Item{Key: "ls:b", Value: []byte("old"), TTL: time.Minute}, "ls:inv", []byte("b"))
	if err != nil || res != l2.Taken {
		t.Fatalf("fill of a lease voided by a write = %v, %v; want taken", res, err)
	}
	if v := c.Get(ctx, "ls:b").Val(); v != "new" {
		t.Errorf("GET ls:b = %q; want the write's value", v)
	}

	// Voided by a delete, and a fill that only drops the lease.
	if _, ok, _ := s.Acquire(ctx, "ls:c", []byte("L5"), time.Minute); !ok {
		t.Fatal("Acquire(ls:c) not acquired")
	}
	if _, err := s.DeleteAndPublish(ctx, []string{"ls:c"}, "ls:inv", []byte("d")); err != nil {
		t.Fatal(err)
	}
	receive(t, ps)
	if res, _ := fillLease(ctx, s, []byte("L5"), l2.Item{Key: "ls:c", Value: []byte("old"), TTL: time.Minute}, "ls:inv", []byte("c")); res != l2.Taken {
		t.Errorf("fill after a delete = %v; want taken", res)
	}
	if n := c.Exists(ctx, "ls:c").Val(); n != 0 {
		t.Error("a voided fill recreated the key")
	}
	if _, ok, _ := s.Acquire(ctx, "ls:d", []byte("L6"), time.Minute); !ok {
		t.Fatal("Acquire(ls:d) not acquired")
	}
	if res, err := fillLease(ctx, s, []byte("L6"), l2.Item{Key: "ls:d"}, "ls:inv", []byte("drop")); err != nil || res != l2.Stored {
		t.Fatalf("fill dropping the lease = %v, %v; want stored", res, err)
	}
	if got := receive(t, ps); string(got) != "drop" {
		t.Errorf("message = %q; want drop", got)
	}
	if n := c.Exists(ctx, "ls:d").Val(); n != 0 {
		t.Error("a dropped lease is still there")
	}

	// Bad input.
	for _, ttl := range []time.Duration{0, -time.Second} {
		if _, _, err := s.Acquire(ctx, "ls:e", []byte("L"), ttl); !errors.Is(err, l2.ErrInvalid) {
			t.Errorf("Acquire(ttl %v) = %v; want ErrInvalid", ttl, err)
		}
	}
	if _, _, err := s.Acquire(ctx, "ls:e", nil, time.Second); !errors.Is(err, l2.ErrInvalid) {
		t.Errorf("Acquire(empty lease) = %v; want ErrInvalid", err)
	}
	if _, err := fillLease(ctx, s, nil, l2.Item{Key: "ls:e"}, "ls:inv", nil); !errors.Is(err, l2.ErrInvalid) {
		t.Errorf("fill dropping an empty lease = %v; want ErrInvalid", err)
	}
}

// Tag sets name their values until those expire; TakeTag freezes a tag's
// members for one invalidation, and pages and Untag work through them.
func TestTag(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	c, rec := newClient(t, srv)
	s := newStore(t, c, roomy())
	ctx := t.Context()

	var entries []l2.TagEntry
	for i := range 2500 {
		entries = append(entries, l2.TagEntry{Set: "tg:{red}", Member: fmt.Sprintf("tg:v%d", i), TTL: time.Hour})
	}
	entries = append(entries, l2.TagEntry{Set: "tg:{blue}", Member: "tg:v0", TTL: time.Hour})
	rec.reset()
	if err := s.Tag(ctx, entries, time.Second); err != nil {
		t.Fatal(err)
	}
	if got := len(rec.names()); got != 1 {
		t.Errorf("Tag took %d round trips; want 1", got)
	}
	if n := c.ZCard(ctx, "tg:{red}").Val(); n != 2500 {
		t.Fatalf("ZCARD red = %d", n)
	}
	if ttl := c.PTTL(ctx, "tg:{red}").Val(); ttl < time.Hour || ttl > time.Hour+2*time.Second {
		t.Errorf("tag set PTTL = %v; want the members' TTL plus slack", ttl)
	}

	// Expired members go at the next add; the set's TTL never shrinks.
	if err := s.Tag(ctx, []l2.TagEntry{{Set: "tg:{short}", Member: "tg:x", TTL: time.Millisecond}}, 0); err != nil {
		t.Fatal(err)
	}
	short := c.ZScore(ctx, "tg:{short}", "tg:x").Val()
	for now := 0.0; now <= short; { // wait on Redis's clock, bounded
		tm, err := c.Time(ctx).Result()
		if err != nil {
			t.Fatal(err)
		}
		now = float64(tm.UnixMilli())
		if len(rec.names()) > 10000 {
			t.Fatal("Redis's clock did not move")
		}
	}
	if err := s.Tag(ctx, []l2.TagEntry{{Set: "tg:{short}", Member: "tg:y", TTL: time.Minute}}, 0); err != nil {
		t.Fatal(err)
	}
	if got := c.ZRange(ctx, "tg:{short}", 0, -1).Val(); !slices.Equal(got, []string{"tg:y"}) {
		t.Errorf("after expiry the set holds %v; want only tg:y", got)
	}

	n, err := s.TakeTag(ctx, "tg:{red}", "tg:{red}:pending")
	if err != nil || n != 2500 {
		t.Fatalf("TakeTag = %d, %v", n, err)
	}
	// A member added after the take is not part of it.
	if err := s.Tag(ctx, []l2.TagEntry{{Set: "tg:{red}", Member: "tg:late", TTL: time.Hour}}, 0); err != nil {
		t.Fatal(err)
	}
	var seen []string
	for range 10 {
		page, err := s.TagPage(ctx, "tg:{red}:pending", 1000)
		if err != nil {
			t.Fatal(err)
		}
		if len(page) == 0 {
			break
		}
		seen = append(seen, page...)
		if err := s.Untag(ctx, "tg:{red}:pending", page); err != nil {
			t.Fatal(err)
		}
	}
	if len(seen) != 2500 || slices.Contains(seen, "tg:late") {
		t.Errorf("pages named %d members (late one included: %v); want 2500", len(seen), slices.Contains(seen, "tg:late"))
	}
	if n := c.Exists(ctx, "tg:{red}:pending").Val(); n != 0 {
		t.Error("pending set left behind")
	}
	if got := c.ZRange(ctx, "tg:{red}", 0, -1).Val(); !slices.Equal(got, []string{"tg:late"}) {
		t.Errorf("tag set after the take = %v; want [tg:late]", got)
	}
	// A take merges what a failed earlier one left pending.
	c.ZAdd(ctx, "tg:{red}:pending", redisZ(1e15, "tg:left"))
	if n, err := s.TakeTag(ctx, "tg:{red}", "tg:{red}:pending"); err != nil || n != 2 {
		t.Errorf("TakeTag with leftovers = %d, %v; want 2", n, err)
	}

	if err := s.Tag(ctx, []l2.TagEntry{{Set: "", Member: "m", TTL: time.Second}}, 0); !errors.Is(err, l2.ErrInvalid) {
		t.Errorf("Tag(empty set) = %v", err)
	}
	if _, err := s.TagPage(ctx, "p", 0); !errors.Is(err, l2.ErrInvalid) {
		t.Errorf("TagPage(0) = %v", err)
	}
	if _, err := s.TakeTag(ctx, "same", "same"); !errors.Is(err, l2.ErrInvalid) {
		t.Errorf("TakeTag(same, same) = %v", err)
	}
}

func redisZ(score float64, member string) redis.Z { return redis.Z{Score: score, Member: member} }
