package l2_test

import (
	"bytes"
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/tiercache/tiercache/internal/redistest"
	"github.com/tiercache/tiercache/l2"
)

// Sets and deletes of many keys run in order, in one round trip with one
// PUBLISH after them.
func TestWriteAndPublish(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	c, rec := newClient(t, srv)
	s := newStore(t, c, roomy())
	ps := subscribe(t, srv, "wp:inv")
	ctx := t.Context()
	if err := c.Set(ctx, "wp:gone", "x", 0).Err(); err != nil {
		t.Fatal(err)
	}
	ops := []l2.Op{
		{Item: l2.Item{Key: "wp:a", Value: []byte("1"), TTL: time.Minute}},
		{Item: l2.Item{Key: "wp:gone"}, Delete: true},
		{Item: l2.Item{Key: "wp:a", Value: []byte("2"), TTL: time.Minute}}, // later op wins
		{Item: l2.Item{Key: "wp:b", Value: nil, TTL: time.Second}},
	}
	// Load the script first, so the call below is one round trip.
	if _, err := s.WriteAndPublish(ctx, ops[:1], "wp:inv", []byte("warm")); err != nil {
		t.Fatal(err)
	}
	receive(t, ps)
	rec.reset()
	errs, err := s.WriteAndPublish(ctx, ops, "wp:inv", []byte("m"))
	if err != nil {
		t.Fatalf("WriteAndPublish = %v", err)
	}
	if !reflect.DeepEqual(errs, make([]error, len(ops))) {
		t.Errorf("per-op errors = %v; want none", errs)
	}
	if got, want := rec.names(), [][]string{{"evalsha"}}; !reflect.DeepEqual(got, want) {
		t.Errorf("round trips = %v; want %v", got, want)
	}
	if got := receive(t, ps); !bytes.Equal(got, []byte("m")) {
		t.Errorf("message = %q; want %q", got, "m")
	}
	if v, err := c.Get(ctx, "wp:a").Result(); err != nil || v != "2" {
		t.Errorf("GET wp:a = %q, %v; want the later op's 2", v, err)
	}
	if n, err := c.Exists(ctx, "wp:gone").Result(); err != nil || n != 0 {
		t.Errorf("EXISTS wp:gone = %d, %v; want 0", n, err)
	}
	if ttl := c.PTTL(ctx, "wp:b").Val(); ttl <= 0 || ttl > time.Second {
		t.Errorf("PTTL wp:b = %v; want (0, 1s]", ttl)
	}

	if _, err := s.WriteAndPublish(ctx, nil, "wp:inv", nil); !errors.Is(err, l2.ErrInvalid) {
		t.Errorf("WriteAndPublish(no ops) = %v; want ErrInvalid", err)
	}
	if _, err := s.WriteAndPublish(ctx, []l2.Op{{Item: l2.Item{Key: "k", TTL: 0}}}, "wp:inv", nil); !errors.Is(err, l2.ErrInvalid) {
		t.Errorf("WriteAndPublish(zero TTL) = %v; want ErrInvalid", err)
	}
}
