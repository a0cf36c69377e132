package l2_test

import (
	"errors"
	"testing"
	"time"

	"github.com/tiercache/tiercache/internal/redistest"
	"github.com/tiercache/tiercache/l2"
)

// TestWriteGuard checks BeginWrite and EndWrite: a write alone stores and
// publishes; overlapping writes delete the key, whatever order they end in;
// a write that failed at the source only uncounts itself; the marker is
// gone once no write is in flight.
func TestWriteGuard(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	c, _ := newClient(t, srv)
	s := newStore(t, c, roomy())
	ctx := t.Context()
	ps := subscribe(t, srv, "wg:inv")
	const marker = "wg::wt:k"
	it := l2.Item{Key: "wg:k", Value: []byte("v1"), TTL: time.Minute}

	if over, err := s.BeginWrite(ctx, marker, time.Minute); err != nil || over {
		t.Fatalf("BeginWrite = %v, %v; want alone", over, err)
	}
	if stored, err := s.EndWrite(ctx, marker, it, "wg:inv", []byte("m1")); err != nil || !stored {
		t.Fatalf("EndWrite alone = %v, %v; want stored", stored, err)
	}
	if got := string(receive(t, ps)); got != "m1" {
		t.Errorf("published %q; want m1", got)
	}
	if v := c.Get(ctx, "wg:k").Val(); v != "v1" {
		t.Errorf("Redis holds %q; want v1", v)
	}

	// Two overlapping writes: both delete, in either order of ending.
	for _, order := range [][2]int{{0, 1}, {1, 0}} {
		c.Set(ctx, "wg:k", "old", 0)
		for range 2 {
			if _, err := s.BeginWrite(ctx, marker, time.Minute); err != nil {
				t.Fatal(err)
			}
		}
		for _, i := range order {
			it := l2.Item{Key: "wg:k", Value: []byte{'a' + byte(i)}, TTL: time.Minute}
			if stored, err := s.EndWrite(ctx, marker, it, "wg:inv", []byte("m")); err != nil || stored {
				t.Fatalf("EndWrite of an overlapping write = %v, %v; want deleted", stored, err)
			}
			receive(t, ps)
		}
		if n := c.Exists(ctx, "wg:k", marker).Val(); n != 0 {
			t.Errorf("order %v: %d of key and marker left; want none", order, n)
		}
	}

	// A write that failed at the source changes nothing and publishes
	// nothing, but frees the marker.
	c.Set(ctx, "wg:k", "old", 0)
	if _, err := s.BeginWrite(ctx, marker, time.Minute); err != nil {
		t.Fatal(err)
	}
	if stored, err := s.EndWrite(ctx, marker, l2.Item{Key: "wg:k"}, "", nil); err != nil || stored {
		t.Fatalf("EndWrite of a failed write = %v, %v", stored, err)
	}
	if v := c.Get(ctx, "wg:k").Val(); v != "old" || c.Exists(ctx, marker).Val() != 0 {
		t.Errorf("after a failed write Redis holds %q and marker %d; want old and no marker", v, c.Exists(ctx, marker).Val())
	}
	if pttl := func() time.Duration {
		s.BeginWrite(ctx, marker, 5*time.Second)
		return c.PTTL(ctx, marker).Val()
	}(); pttl <= 0 || pttl > 5*time.Second {
		t.Errorf("marker PTTL = %v; want at most the ttl given", pttl)
	}
	if _, err := s.BeginWrite(ctx, "", time.Minute); !errors.Is(err, l2.ErrInvalid) {
		t.Errorf("BeginWrite(\"\") = %v; want ErrInvalid", err)
	}
}
