package l2_test

import (
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/tiercache/tiercache/internal/redistest"
	"github.com/tiercache/tiercache/l2"
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

// SendCounts adds every chunk to both hashes in one pipelined round trip,
// one script per chunk; a chunk sent again (its reply lost) is not applied
// twice; a chunk beyond the next is refused, and those before it stay
// applied; due says when a pending count reached every; CountSent reads a
// total and the last chunk applied together. The record of the last chunk
// expires, the pending hash does not.
func TestCounterLocalSendCounts(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	c, rec := newClient(t, srv)
	s := newStore(t, c, roomy())
	ctx := t.Context()
	const totals, pending, sent = "ns::cnt:{views}:totals", "ns::cnt:{views}:pending", "ns::cnt:{views}:sent:r1:abc"
	chunks := []l2.CountChunk{
		{Seq: 1, Fields: []string{"a", "b"}, Deltas: []int64{3, 4}},
		{Seq: 2, Fields: []string{"c"}, Deltas: []int64{-2}},
	}
	// The script is not loaded yet: EVALSHA fails, EVAL follows, once.
	applied, due, err := s.SendCounts(ctx, totals, pending, sent, chunks, time.Hour, time.Minute, 4)
	if err != nil || applied != 2 || !due {
		t.Fatalf("SendCounts = %d, %v, %v; want 2, true (b reached 4), nil", applied, due, err)
	}
	if got, want := rec.names(), [][]string{{"evalsha", "evalsha"}, {"eval", "eval"}}; !reflect.DeepEqual(got, want) {
		t.Errorf("round trips of the first send = %v; want %v", got, want)
	}
	wantHash := func(key string, want map[string]string) {
		t.Helper()
		if got := c.HGetAll(ctx, key).Val(); !reflect.DeepEqual(got, want) {
			t.Errorf("HGETALL %s = %v; want %v", key, got, want)
		}
	}
	once := map[string]string{"a": "3", "b": "4", "c": "-2"}
	wantHash(totals, once)
	wantHash(pending, once)

	// Sent again, as after a lost reply, with a new chunk: one round trip,
	// only the new chunk applied.
	rec.reset()
	again := append(slices.Clone(chunks), l2.CountChunk{Seq: 3, Fields: []string{"a"}, Deltas: []int64{1}})
	applied, due, err = s.SendCounts(ctx, totals, pending, sent, again, time.Hour, time.Minute, 100)
	if err != nil || applied != 3 || due {
		t.Fatalf("SendCounts again = %d, %v, %v; want 3, false, nil", applied, due, err)
	}
	if got, want := rec.names(), [][]string{{"evalsha", "evalsha", "evalsha"}}; !reflect.DeepEqual(got, want) {
		t.Errorf("round trips = %v; want %v", got, want)
	}
	wantHash(totals, map[string]string{"a": "4", "b": "4", "c": "-2"})

	// A gap: chunk 5 without 4 is refused; 4, before it, is applied.
	gap := []l2.CountChunk{
		{Seq: 4, Fields: []string{"b"}, Deltas: []int64{1}},
		{Seq: 6, Fields: []string{"b"}, Deltas: []int64{100}},
	}
	applied, _, err = s.SendCounts(ctx, totals, pending, sent, gap, time.Hour, time.Minute, 0)
	if err == nil || applied != 1 {
		t.Fatalf("SendCounts with a gap = %d, %v; want 1 and an error", applied, err)
	}
	total, seq, err := s.CountSent(ctx, totals, "b", sent)
	if err != nil || total != 5 || seq != 4 {
		t.Errorf("CountSent(b) = %d, %d, %v; want 5, 4", total, seq, err)
	}
	if total, seq, err := s.CountSent(ctx, totals, "none", "ns::cnt:{views}:sent:other"); err != nil || total != 0 || seq != 0 {
		t.Errorf("CountSent of nothing = %d, %d, %v; want 0, 0", total, seq, err)
	}
	if ttl := c.PTTL(ctx, totals).Val(); ttl <= time.Hour-time.Minute || ttl > time.Hour {
		t.Errorf("PTTL totals = %v; want an hour", ttl)
	}
	if ttl := c.PTTL(ctx, sent).Val(); ttl <= 0 || ttl > time.Minute {
		t.Errorf("PTTL sent = %v; want at most a minute", ttl)
	}
	if ttl := c.PTTL(ctx, pending).Val(); ttl != -1 {
		t.Errorf("PTTL pending = %v; want -1: pending counts never expire", ttl)
	}
	// A record that expired (a replica quiet for its whole life) takes the
	// next chunk, whatever its number.
	if err := c.Del(ctx, sent).Err(); err != nil {
		t.Fatal(err)
	}
	if applied, _, err := s.SendCounts(ctx, totals, pending, sent, gap[1:], 0, time.Minute, 0); err != nil || applied != 1 {
		t.Errorf("SendCounts after the record expired = %d, %v; want 1, nil", applied, err)
	}
}
