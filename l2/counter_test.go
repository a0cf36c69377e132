package l2_test

import (
	"reflect"
	"testing"
	"time"

	"github.com/tiercache/tiercache/internal/redistest"
)

// Incr adds to both hashes and sets the totals' TTL in one round trip, one
// script; every Incr renews the TTL; a TTL of 0 leaves the totals' TTL as
// it is; the pending hash never expires.
func TestIncrTotalsTTL(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	c, rec := newClient(t, srv)
	s := newStore(t, c, roomy())
	ctx := t.Context()
	const totals, pending = "ns::cnt:{views}:totals", "ns::cnt:{views}:pending"
	// Load the script first, so the call below is one round trip.
	if _, _, err := s.Incr(ctx, totals, pending, "warm", 1, time.Hour); err != nil {
		t.Fatal(err)
	}
	// As if most of the hour had gone by.
	if err := c.PExpire(ctx, totals, time.Second).Err(); err != nil {
		t.Fatal(err)
	}
	rec.reset()
	total, pend, err := s.Incr(ctx, totals, pending, "k", 3, time.Hour)
	if err != nil || total != 3 || pend != 3 {
		t.Fatalf("Incr = %d, %d, %v; want 3, 3", total, pend, err)
	}
	if got, want := rec.names(), [][]string{{"evalsha"}}; !reflect.DeepEqual(got, want) {
		t.Errorf("round trips = %v; want %v", got, want)
	}
	if ttl := c.PTTL(ctx, totals).Val(); ttl <= time.Hour-time.Minute || ttl > time.Hour {
		t.Errorf("PTTL totals after Incr = %v; want an hour again", ttl)
	}
	if ttl := c.PTTL(ctx, pending).Val(); ttl != -1 {
		t.Errorf("PTTL pending = %v; want -1: pending counts never expire", ttl)
	}

	if err := c.PExpire(ctx, totals, time.Minute).Err(); err != nil {
		t.Fatal(err)
	}
	if total, _, err := s.Incr(ctx, totals, pending, "k", -1, 0); err != nil || total != 2 {
		t.Fatalf("Incr with no TTL = %d, %v; want 2", total, err)
	}
	if ttl := c.PTTL(ctx, totals).Val(); ttl <= 0 || ttl > time.Minute {
		t.Errorf("PTTL totals after an Incr with no TTL = %v; want the minute left as it was", ttl)
	}
	if n, err := s.Count(ctx, totals, "k"); err != nil || n != 2 {
		t.Errorf("Count = %d, %v; want 2", n, err)
	}
}
