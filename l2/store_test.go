package l2_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tiercache/tiercache/internal/redistest"
	"github.com/tiercache/tiercache/l2"
)

// seed writes kv to Redis without a TTL through c.
func seed(t testing.TB, c *redis.Client, kv map[string][]byte) {
	t.Helper()
	_, err := c.Pipelined(t.Context(), func(p redis.Pipeliner) error {
		for k, v := range kv {
			p.Set(t.Context(), k, v, 0)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("seed: %v", err)
	}
}

// sameBytes reports whether a and b hold the same bytes and are both nil or
// both non-nil (nil marks a miss).
func sameBytes(a, b []byte) bool {
	return bytes.Equal(a, b) && (a == nil) == (b == nil)
}

func TestGet(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	c, rec := newClient(t, srv)
	s := newStore(t, c, roomy())
	seed(t, c, map[string][]byte{
		"g:text":  []byte("hello"),
		"g:bin":   {0, 1, 0, 0xff, 0, '\r', '\n'},
		"g:empty": {},
	})
	rec.reset()

	tests := []struct {
		name    string
		give    string
		want    []byte
		wantErr error
	}{
		{name: "hit", give: "g:text", want: []byte("hello")},
		{name: "binary value with NUL bytes", give: "g:bin", want: []byte{0, 1, 0, 0xff, 0, '\r', '\n'}},
		{name: "empty value is a hit", give: "g:empty", want: []byte{}},
		{name: "miss", give: "g:absent", wantErr: l2.ErrMiss},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := s.Get(t.Context(), tt.give)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("Get(%q) error = %v; want %v", tt.give, err, tt.wantErr)
			}
			if !sameBytes(got, tt.want) {
				t.Errorf("Get(%q) = %q (nil %t); want %q (nil %t)", tt.give, got, got == nil, tt.want, tt.want == nil)
			}
		})
	}
	if got, want := len(rec.names()), len(tests); got != want {
		t.Errorf("round trips = %d; want %d (one GET per call)", got, want)
	}
}

func TestGetMany(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	c, rec := newClient(t, srv)
	s := newStore(t, c, roomy())

	// 100 keys: even ones hold a value (key 0 an empty one), odd ones miss.
	kv := map[string][]byte{}
	var keys100 []string
	var want100 [][]byte
	for i := range 100 {
		k := fmt.Sprintf("gm:%d", i)
		keys100 = append(keys100, k)
		v := []byte(nil)
		if i%2 == 0 {
			v = fmt.Appendf([]byte{}, "v%d\x00", i)
			kv[k] = v
		}
		want100 = append(want100, v)
	}
	kv[keys100[0]], want100[0] = []byte{}, []byte{}
	seed(t, c, kv)

	tests := []struct {
		name      string
		give      []string
		want      [][]byte
		wantTrips int
	}{
		{name: "no keys, no round trip", give: nil, want: nil, wantTrips: 0},
		{name: "one miss", give: []string{"gm:absent"}, want: [][]byte{nil}, wantTrips: 1},
		{name: "hits and misses in order", give: []string{"gm:1", "gm:2", "gm:3", "gm:0"}, want: [][]byte{nil, []byte("v2\x00"), nil, {}}, wantTrips: 1},
		{name: "100 keys in one round trip", give: keys100, want: want100, wantTrips: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec.reset()
			got, err := s.GetMany(t.Context(), tt.give)
			if err != nil {
				t.Fatalf("GetMany = %v", err)
			}
			if len(got) != len(tt.want) || (got == nil) != (tt.want == nil) {
				t.Fatalf("GetMany returned %d values (nil %t); want %d (nil %t)", len(got), got == nil, len(tt.want), tt.want == nil)
			}
			for i := range got {
				if !sameBytes(got[i], tt.want[i]) {
					t.Errorf("GetMany[%d] (%s) = %q (nil %t); want %q (nil %t)", i, tt.give[i], got[i], got[i] == nil, tt.want[i], tt.want[i] == nil)
				}
			}
			trips := rec.names()
			if len(trips) != tt.wantTrips {
				t.Fatalf("round trips = %d; want %d", len(trips), tt.wantTrips)
			}
			for _, trip := range trips {
				if len(trip) != len(tt.give) {
					t.Errorf("round trip carried %d commands; want %d", len(trip), len(tt.give))
				}
			}
		})
	}
}

// fill runs one Fill of f on s and returns its result.
func fill(t testing.TB, s *l2.Store, f l2.Fill, channel string) l2.FillResult {
	t.Helper()
	res, err := s.Fill(t.Context(), []l2.Fill{f}, channel)
	if err != nil {
		t.Fatalf("Fill(%q) = %v", f.Key, err)
	}
	if len(res) != 1 {
		t.Fatalf("Fill(%q) returned %d results; want 1", f.Key, len(res))
	}
	return res[0]
}

// read runs Read of key on s, with a limit no test value reaches.
func read(t testing.TB, s *l2.Store, key, tagVersions string) l2.Entry {
	t.Helper()
	e, err := s.Read(t.Context(), key, 1<<20, tagVersions)
	if err != nil {
		t.Fatalf("Read(%q) = %v", key, err)
	}
	return e
}

// warmFill loads the fill script into the server of s, so that the next
// fills take one round trip.
func warmFill(t testing.TB, s *l2.Store, key string) {
	t.Helper()
	e := read(t, s, key, "")
	fill(t, s, l2.Fill{Item: l2.Item{Key: key, Value: []byte("w"), TTL: time.Minute}, Fence: e.Fence}, "")
}

func TestFill(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	c, rec := newClient(t, srv)
	s := newStore(t, c, roomy())
	seed(t, c, map[string][]byte{"f:taken": []byte("old")})
	if err := c.PExpire(t.Context(), "f:taken", time.Hour).Err(); err != nil {
		t.Fatal(err)
	}
	warmFill(t, s, "f:warm")

	tests := []struct {
		name      string
		give      l2.Item
		want      l2.FillResult
		wantValue []byte
		wantTTL   time.Duration // PTTL after the call is in (wantTTL-1m, wantTTL]
	}{
		{
			name:      "stores an absent key with its TTL",
			give:      l2.Item{Key: "f:new", Value: []byte{0, 'n', 0}, TTL: 2 * time.Minute},
			want:      l2.Stored,
			wantValue: []byte{0, 'n', 0},
			wantTTL:   2 * time.Minute,
		},
		{
			name:      "leaves an existing key and its TTL alone",
			give:      l2.Item{Key: "f:taken", Value: []byte("new"), TTL: 2 * time.Minute},
			want:      l2.Taken,
			wantValue: []byte("old"),
			wantTTL:   time.Hour,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := read(t, s, tt.give.Key, "")
			rec.reset()
			if got := fill(t, s, l2.Fill{Item: tt.give, Fence: e.Fence}, ""); got != tt.want {
				t.Errorf("Fill = %v; want %v", got, tt.want)
			}
			if got, want := len(rec.names()), 1; got != want {
				t.Errorf("round trips = %d; want %d", got, want)
			}
			got, err := c.Get(t.Context(), tt.give.Key).Bytes()
			if err != nil || !bytes.Equal(got, tt.wantValue) {
				t.Errorf("GET %s = %q, %v; want %q", tt.give.Key, got, err, tt.wantValue)
			}
			ttl, err := c.PTTL(t.Context(), tt.give.Key).Result()
			if err != nil || ttl <= tt.wantTTL-time.Minute || ttl > tt.wantTTL {
				t.Errorf("PTTL %s = %v, %v; want in (%v, %v]", tt.give.Key, ttl, err, tt.wantTTL-time.Minute, tt.wantTTL)
			}
		})
	}
}

// TestFillCommand checks the arguments Fill gives its script, in
// particular how the TTL becomes PX milliseconds (ARGV[2]), and that
// Redis keeps the value for that long.
func TestFillCommand(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	c, rec := newClient(t, srv)
	s := newStore(t, c, roomy())
	warmFill(t, s, "fc:warm")

	tests := []struct {
		name string
		give time.Duration
		want int64
	}{
		{name: "1ns rounds up to 1ms", give: time.Nanosecond, want: 1},
		{name: "999µs rounds up to 1ms", give: 999 * time.Microsecond, want: 1},
		{name: "1ms", give: time.Millisecond, want: 1},
		{name: "1.5ms rounds up", give: 1500 * time.Microsecond, want: 2},
		{name: "whole seconds stay in PX", give: time.Minute, want: 60000},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			key := fmt.Sprintf("fc:%d", i)
			e := read(t, s, key, "")
			fence := c.Get(t.Context(), s.FenceKey(key)).Val() // "" when none yet
			rec.reset()
			if got := fill(t, s, l2.Fill{Item: l2.Item{Key: key, Value: []byte("v"), TTL: tt.give}, Fence: e.Fence}, ""); got != l2.Stored {
				t.Fatalf("Fill = %v; want stored", got)
			}
			// KEYS: the key, its fence. ARGV: value, TTL in ms, mode, fence
			// read, channel, message, tag epoch, tag slack.
			want := []any{2, key, s.FenceKey(key), []byte("v"), tt.want, "nx", fence, "", []byte(nil), "", int64(0)}
			got := rec.args()
			if len(got) != 1 || len(got[0]) < 2 || got[0][0] != "evalsha" || !reflect.DeepEqual(got[0][2:], want) {
				t.Errorf("sent %v; want [evalsha <sha> %v]", got, want)
			}
			if tt.want >= 1000 {
				if ttl := c.PTTL(t.Context(), key).Val(); ttl <= 0 || ttl > tt.give {
					t.Errorf("PTTL = %v; want in (0, %v]", ttl, tt.give)
				}
			}
		})
	}
}

// TestFillMany checks several fills in one call: one pipelined round trip,
// each fill with its own outcome and TTL.
func TestFillMany(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	c, rec := newClient(t, srv)
	s := newStore(t, c, roomy())
	seed(t, c, map[string][]byte{"fm:taken": []byte("old")})
	warmFill(t, s, "fm:warm")
	rec.reset()

	if res, err := s.Fill(t.Context(), nil, ""); err != nil || res != nil {
		t.Fatalf("Fill(nil) = %v, %v; want nil, nil", res, err)
	}
	if got := len(rec.names()); got != 0 {
		t.Fatalf("Fill(nil) made %d round trips; want 0", got)
	}

	items := []l2.Item{
		{Key: "fm:a", Value: []byte("a"), TTL: time.Minute},
		{Key: "fm:taken", Value: []byte("new"), TTL: time.Minute},
		{Key: "fm:b", Value: []byte{0}, TTL: 2 * time.Minute},
	}
	es, err := s.ReadMany(t.Context(), []string{"fm:a", "fm:taken", "fm:b"}, 1<<10, "")
	if err != nil {
		t.Fatalf("ReadMany = %v", err)
	}
	fills := make([]l2.Fill, len(items))
	for i, it := range items {
		fills[i] = l2.Fill{Item: it, Fence: es[i].Fence}
	}
	rec.reset()
	res, err := s.Fill(t.Context(), fills, "")
	if err != nil {
		t.Fatalf("Fill = %v", err)
	}
	if want := []l2.FillResult{l2.Stored, l2.Taken, l2.Stored}; !reflect.DeepEqual(res, want) {
		t.Errorf("Fill = %v; want %v (the taken key is not overwritten)", res, want)
	}
	if got, want := rec.names(), [][]string{{"evalsha", "evalsha", "evalsha"}}; !reflect.DeepEqual(got, want) {
		t.Errorf("round trips = %v; want %v", got, want)
	}

	tests := []struct {
		name      string
		give      string
		wantValue []byte
		wantTTL   time.Duration // PTTL in (wantTTL-1m, wantTTL]; -1 means none
	}{
		{name: "absent key stored", give: "fm:a", wantValue: []byte("a"), wantTTL: time.Minute},
		{name: "existing key untouched", give: "fm:taken", wantValue: []byte("old"), wantTTL: -1},
		{name: "each item keeps its own TTL", give: "fm:b", wantValue: []byte{0}, wantTTL: 2 * time.Minute},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := c.Get(t.Context(), tt.give).Bytes()
			if err != nil || !bytes.Equal(got, tt.wantValue) {
				t.Errorf("GET %s = %q, %v; want %q", tt.give, got, err, tt.wantValue)
			}
			ttl, err := c.PTTL(t.Context(), tt.give).Result()
			if err != nil || ttl <= tt.wantTTL-time.Minute || ttl > tt.wantTTL {
				t.Errorf("PTTL %s = %v, %v; want in (%v, %v]", tt.give, ttl, err, tt.wantTTL-time.Minute, tt.wantTTL)
			}
		})
	}
}

func TestSetAndPublish(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	c, rec := newClient(t, srv)
	s := newStore(t, c, roomy())
	ps := subscribe(t, srv, "sp:inv")
	noop := func(t *testing.T) {}
	flush := func(t *testing.T) {
		if err := c.ScriptFlush(t.Context()).Err(); err != nil {
			t.Fatalf("SCRIPT FLUSH = %v", err)
		}
	}

	// The steps share one key, so each one also shows that SetAndPublish
	// overwrites (unlike Fill).
	tests := []struct {
		name      string
		setup     func(t *testing.T)
		give      []byte
		giveMsg   []byte
		wantTrips [][]string
	}{
		{name: "first call loads the script", setup: noop, give: []byte("v1"), giveMsg: []byte{0, 'm', 1},
			wantTrips: [][]string{{"evalsha"}, {"eval"}}},
		{name: "cached script is one round trip", setup: noop, give: []byte{0, 'v', 2, 0}, giveMsg: []byte("m2"),
			wantTrips: [][]string{{"evalsha"}}},
		{name: "after SCRIPT FLUSH it falls back to EVAL", setup: flush, give: []byte("v3"), giveMsg: []byte("m3"),
			wantTrips: [][]string{{"evalsha"}, {"eval"}}},
		{name: "then it is cached again", setup: noop, give: []byte("v4"), giveMsg: []byte{},
			wantTrips: [][]string{{"evalsha"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.setup(t)
			rec.reset()
			it := l2.Item{Key: "sp:k", Value: tt.give, TTL: time.Minute}
			if err := s.SetAndPublish(t.Context(), it, "sp:inv", tt.giveMsg); err != nil {
				t.Fatalf("SetAndPublish = %v", err)
			}
			if got := rec.names(); !reflect.DeepEqual(got, tt.wantTrips) {
				t.Errorf("round trips = %v; want %v", got, tt.wantTrips)
			}
			if got := receive(t, ps); !bytes.Equal(got, tt.giveMsg) {
				t.Errorf("message = %q; want %q", got, tt.giveMsg)
			}
			got, err := c.Get(t.Context(), it.Key).Bytes()
			if err != nil || !bytes.Equal(got, tt.give) {
				t.Errorf("GET = %q, %v; want %q", got, err, tt.give)
			}
			ttl, err := c.PTTL(t.Context(), it.Key).Result()
			if err != nil || ttl <= 0 || ttl > time.Minute {
				t.Errorf("PTTL = %v, %v; want in (0, 1m]", ttl, err)
			}
		})
	}
}

// TestPublishedChangeIsVisible shows that the key changes before its
// invalidation goes out: a subscriber that reads the key as soon as it gets
// the message always sees the change, over 200 writes and 200 deletes.
func TestPublishedChangeIsVisible(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	c, _ := newClient(t, srv)
	s := newStore(t, c, roomy())
	reader := srv.Client(t)
	ps := subscribe(t, srv, "vis:inv")
	ctx := t.Context()

	for i := range 200 {
		v := fmt.Appendf(nil, "v%d", i)
		if err := s.SetAndPublish(ctx, l2.Item{Key: "vis:k", Value: v, TTL: time.Minute}, "vis:inv", v); err != nil {
			t.Fatalf("SetAndPublish %d = %v", i, err)
		}
		if msg := receive(t, ps); !bytes.Equal(msg, v) {
			t.Fatalf("message %d = %q; want %q", i, msg, v)
		}
		if got, err := reader.Get(ctx, "vis:k").Bytes(); err != nil || !bytes.Equal(got, v) {
			t.Fatalf("set %d: GET on delivery = %q, %v; want %q", i, got, err, v)
		}

		if _, err := s.DeleteAndPublish(ctx, []string{"vis:k"}, "vis:inv", v); err != nil {
			t.Fatalf("DeleteAndPublish %d = %v", i, err)
		}
		receive(t, ps)
		if err := reader.Get(ctx, "vis:k").Err(); !errors.Is(err, redis.Nil) {
			t.Fatalf("delete %d: GET on delivery = %v; want redis.Nil", i, err)
		}
	}
}

func TestDeleteAndPublish(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	c, rec := newClient(t, srv)
	s := newStore(t, c, roomy())
	ps := subscribe(t, srv, "dp:inv")
	// Load the script, so that each case below is one round trip.
	if _, err := s.DeleteAndPublish(t.Context(), []string{"dp:warm"}, "dp:inv", nil); err != nil {
		t.Fatalf("DeleteAndPublish warm-up = %v", err)
	}
	receive(t, ps)

	var many []string
	for i := range 10000 {
		many = append(many, fmt.Sprintf("dp:many:%d", i))
	}

	tests := []struct {
		name    string
		seed    []string
		give    []string
		giveMsg []byte
		want    int64
	}{
		{name: "counts only the keys that existed", seed: []string{"dp:a", "dp:b", "dp:c"},
			give: []string{"dp:a", "dp:b", "dp:c", "dp:absent"}, giveMsg: []byte{0, 'd', 0}, want: 3},
		{name: "publishes even when nothing existed", seed: nil,
			give: []string{"dp:x", "dp:y"}, giveMsg: []byte("none"), want: 0},
		{name: "10000 keys in one script", seed: many, give: many, giveMsg: []byte("many"), want: 10000},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			kv := map[string][]byte{}
			for _, k := range tt.seed {
				kv[k] = []byte("x")
			}
			seed(t, c, kv)
			rec.reset()

			n, err := s.DeleteAndPublish(t.Context(), tt.give, "dp:inv", tt.giveMsg)
			if err != nil || n != tt.want {
				t.Fatalf("DeleteAndPublish = %d, %v; want %d", n, err, tt.want)
			}
			if got, want := rec.names(), [][]string{{"evalsha"}}; !reflect.DeepEqual(got, want) {
				t.Errorf("round trips = %v; want %v", got, want)
			}
			if got := receive(t, ps); !bytes.Equal(got, tt.giveMsg) {
				t.Errorf("message = %q; want %q", got, tt.giveMsg)
			}
			if left, err := c.Exists(t.Context(), tt.give...).Result(); err != nil || left != 0 {
				t.Errorf("EXISTS after delete = %d, %v; want 0", left, err)
			}
		})
	}
}

// op is one Store method, called on fixed arguments.
type op struct {
	name   string
	what   string        // how its errors begin
	budget time.Duration // the read or write budget given to ops
	call   func(context.Context, *l2.Store) error
}

// ops returns every Store method that reaches Redis, with the budget that
// bounds it when the Store has ReadTimeout read and WriteTimeout write
// (tests that do not look at budgets pass zeros).
func ops(read, write time.Duration) []op {
	it := l2.Item{Key: "op:k", Value: []byte("v"), TTL: time.Minute}
	return []op{
		{name: "Get", what: `l2 get "op:k"`, budget: read, call: func(ctx context.Context, s *l2.Store) error {
			_, err := s.Get(ctx, "op:k")
			return err
		}},
		{name: "GetMany", what: `l2 get many "op:k" and 1 more`, budget: read, call: func(ctx context.Context, s *l2.Store) error {
			_, err := s.GetMany(ctx, []string{"op:k", "op:j"})
			return err
		}},
		{name: "Read", what: `l2 read "op:k"`, budget: read, call: func(ctx context.Context, s *l2.Store) error {
			_, err := s.Read(ctx, "op:k", 1024, "op:tv")
			return err
		}},
		{name: "ReadMany", what: `l2 read "op:k" and 1 more`, budget: read, call: func(ctx context.Context, s *l2.Store) error {
			_, err := s.ReadMany(ctx, []string{"op:k", "op:j"}, 1024, "")
			return err
		}},
		// A lease fill needs no fence, so no Read before the server stops.
		{name: "Fill", what: `l2 fill "op:k"`, budget: write, call: func(ctx context.Context, s *l2.Store) error {
			_, err := s.Fill(ctx, []l2.Fill{{Item: it, Mode: l2.FillLease, Lease: []byte("L")}}, "")
			return err
		}},
		{name: "FillMany", what: `l2 fill "op:k" and 1 more`, budget: write, call: func(ctx context.Context, s *l2.Store) error {
			_, err := s.Fill(ctx, []l2.Fill{
				{Item: it, Mode: l2.FillLease, Lease: []byte("L")},
				{Item: l2.Item{Key: "op:j"}, Mode: l2.FillLease, Lease: []byte("L")},
			}, "op:inv")
			return err
		}},
		{name: "Acquire", what: `l2 acquire "op:k"`, budget: write, call: func(ctx context.Context, s *l2.Store) error {
			_, _, err := s.Acquire(ctx, "op:k", []byte("L"), time.Second)
			return err
		}},
		{name: "BumpTags", what: `l2 bump tags "op:tv"`, budget: write, call: func(ctx context.Context, s *l2.Store) error {
			return s.BumpTags(ctx, "op:tv", []string{"t"}, time.Minute, "inv", []byte("m"))
		}},
		{name: "DropUnreadable", what: `l2 drop unreadable "op:k"`, budget: write, call: func(ctx context.Context, s *l2.Store) error {
			_, err := s.DropUnreadable(ctx, "op:k", []byte("bad"), 0, "op:inv", []byte("m"))
			return err
		}},
		{name: "WriteAndPublish", what: `l2 write and publish "op:k"`, budget: write, call: func(ctx context.Context, s *l2.Store) error {
			_, err := s.WriteAndPublish(ctx, []l2.Op{{Item: it}}, "op:inv", []byte("m"))
			return err
		}},
		{name: "SetAndPublish", what: `l2 set and publish "op:k"`, budget: write, call: func(ctx context.Context, s *l2.Store) error {
			return s.SetAndPublish(ctx, it, "op:inv", []byte("m"))
		}},
		{name: "DeleteAndPublish", what: `l2 delete and publish "op:k"`, budget: write, call: func(ctx context.Context, s *l2.Store) error {
			_, err := s.DeleteAndPublish(ctx, []string{"op:k"}, "op:inv", []byte("m"))
			return err
		}},
	}
}

// pause stops srv from running commands of any client for d.
func pause(t testing.TB, srv *redistest.Server, d time.Duration) {
	t.Helper()
	admin := srv.Client(t)
	if err := admin.Do(t.Context(), "client", "pause", d.Milliseconds(), "all").Err(); err != nil {
		t.Fatalf("CLIENT PAUSE = %v", err)
	}
}

// TestBudget pauses the server and checks that every operation gives up
// with context.DeadlineExceeded and says which budget ran out, for budgets
// set in Options and for the defaults. It does not measure how long that
// took.
func TestBudget(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	c, _ := newClient(t, srv)
	pause(t, srv, 20*time.Second) // ends with the server, stopped in Cleanup

	tests := []struct {
		name      string
		give      l2.Options
		wantRead  time.Duration
		wantWrite time.Duration
	}{
		// The breaker is off: it would open after a few of these timeouts.
		{name: "set", give: l2.Options{ReadTimeout: 20 * time.Millisecond, WriteTimeout: 30 * time.Millisecond, Breaker: noBreaker},
			wantRead: 20 * time.Millisecond, wantWrite: 30 * time.Millisecond},
		{name: "defaults", give: l2.Options{Breaker: noBreaker}, wantRead: l2.DefaultReadTimeout, wantWrite: l2.DefaultWriteTimeout},
	}
	for _, tt := range tests {
		s := newStore(t, c, tt.give)
		for _, o := range ops(tt.wantRead, tt.wantWrite) {
			t.Run(tt.name+"/"+o.name, func(t *testing.T) {
				err := o.call(t.Context(), s)
				if !errors.Is(err, context.DeadlineExceeded) {
					t.Fatalf("%s = %v; want context.DeadlineExceeded", o.name, err)
				}
				if want := fmt.Sprintf("%s: budget %v used up: ", o.what, o.budget); !strings.HasPrefix(err.Error(), want) {
					t.Errorf("%s error = %q; want it to begin with %q", o.name, err, want)
				}
			})
		}
	}
}

// TestCallerContextWins checks that an earlier deadline, or a cancellation,
// of the caller's context ends the call, and that the error does not blame
// the store's budget, whether the store has a longer budget or none.
func TestCallerContextWins(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	c, _ := newClient(t, srv)
	pause(t, srv, 20*time.Second) // ends with the server, stopped in Cleanup
	canceled, cancel := context.WithCancel(t.Context())
	cancel()

	tests := []struct {
		name string
		give l2.Options
	}{
		{name: "longer budget", give: l2.Options{ReadTimeout: time.Hour, WriteTimeout: time.Hour}},
		{name: "no budget", give: l2.Options{ReadTimeout: -1, WriteTimeout: -1}},
	}
	for _, tt := range tests {
		s := newStore(t, c, tt.give)
		for _, o := range ops(0, 0) {
			t.Run(tt.name+"/"+o.name+"/deadline", func(t *testing.T) {
				ctx, cancel := context.WithTimeout(t.Context(), 20*time.Millisecond)
				defer cancel()
				err := o.call(ctx, s)
				if !errors.Is(err, context.DeadlineExceeded) {
					t.Fatalf("%s = %v; want context.DeadlineExceeded", o.name, err)
				}
				if want := o.what + ": context deadline exceeded"; !strings.HasPrefix(err.Error(), want) {
					t.Errorf("%s error = %q; want it to begin with %q", o.name, err, want)
				}
			})
			t.Run(tt.name+"/"+o.name+"/canceled", func(t *testing.T) {
				err := o.call(canceled, s)
				if !errors.Is(err, context.Canceled) {
					t.Fatalf("%s = %v; want context.Canceled", o.name, err)
				}
			})
		}
	}
}

// TestBudgetNeedsContextTimeoutEnabled pins the caveat in the package
// documentation: without ContextTimeoutEnabled, go-redis does not turn the
// budget into a socket deadline, so a Get outlives a pause longer than its
// budget and succeeds.
func TestBudgetNeedsContextTimeoutEnabled(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	c := srv.Client(t) // ContextTimeoutEnabled: false
	if err := c.Set(t.Context(), "nb:k", "v", 0).Err(); err != nil {
		t.Fatal(err)
	}
	s := newStore(t, c, l2.Options{ReadTimeout: 20 * time.Millisecond})
	pause(t, srv, 200*time.Millisecond)

	got, err := s.Get(t.Context(), "nb:k")
	if err != nil || string(got) != "v" {
		t.Errorf(`Get = %q, %v; want "v", nil (the budget cannot cut the read short)`, got, err)
	}
}

// TestTransportError kills the server: every operation then fails with an
// error that is neither a miss nor an invalid argument. The client dials
// once per call and does not retry: after PoolSize failed dials go-redis
// starts a goroutine that redials every second and outlives Close by up to
// a second, which goleak would report.
func TestTransportError(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	opts := srv.Options()
	opts.ContextTimeoutEnabled = true
	opts.MaxRetries = -1
	opts.DialerRetries = 1
	c := redis.NewClient(opts)
	t.Cleanup(func() { c.Close() })
	if err := c.Ping(t.Context()).Err(); err != nil {
		t.Fatalf("Ping = %v", err)
	}
	s := newStore(t, c, roomy())
	srv.Kill()

	for _, tt := range ops(0, 0) {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.call(t.Context(), s)
			if err == nil || errors.Is(err, l2.ErrMiss) || errors.Is(err, l2.ErrInvalid) {
				t.Fatalf("%s = %v; want a transport error", tt.name, err)
			}
			if !strings.HasPrefix(err.Error(), tt.what+": ") {
				t.Errorf("%s error = %q; want it to begin with %q", tt.name, err, tt.what+": ")
			}
		})
	}
}

func TestInvalidArguments(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	c, rec := newClient(t, srv)
	s := newStore(t, c, roomy())
	ok := l2.Item{Key: "k", Value: []byte("v"), TTL: time.Minute}
	fence := read(t, s, "k", "").Fence
	rec.reset()

	tests := []struct {
		name    string
		give    func(context.Context) error
		wantMsg string
	}{
		{name: "New nil client", wantMsg: "l2 new: nil client", give: func(context.Context) error {
			_, err := l2.New(nil, l2.Options{})
			return err
		}},
		{name: "New nil *redis.Client", wantMsg: "l2 new: nil client", give: func(context.Context) error {
			_, err := l2.New((*redis.Client)(nil), l2.Options{})
			return err
		}},
		{name: "nil store", wantMsg: `l2 get "k": store not created with New`, give: func(ctx context.Context) error {
			var nilStore *l2.Store
			_, err := nilStore.Get(ctx, "k")
			return err
		}},
		{name: "zero store", wantMsg: "l2 delete and publish: store not created with New", give: func(ctx context.Context) error {
			_, err := new(l2.Store).DeleteAndPublish(ctx, []string{"k"}, "ch", nil)
			return err
		}},
		{name: "Get empty key", wantMsg: "l2 get: empty key", give: func(ctx context.Context) error {
			_, err := s.Get(ctx, "")
			return err
		}},
		{name: "GetMany empty key", wantMsg: "l2 get many: key 1 of 2: empty key", give: func(ctx context.Context) error {
			_, err := s.GetMany(ctx, []string{"k", ""})
			return err
		}},
		{name: "New negative replica acks", wantMsg: "l2 new: negative replica acks -1", give: func(context.Context) error {
			_, err := l2.New(c, l2.Options{ReplicaAcks: -1})
			return err
		}},
		{name: "New fence prefix with a brace", wantMsg: `l2 new: fence prefix "app{x}:" has a '{'`, give: func(context.Context) error {
			_, err := l2.New(c, l2.Options{FencePrefix: "app{x}:"})
			return err
		}},
		{name: "Read empty key", wantMsg: "l2 read: key 0 of 1: empty key", give: func(ctx context.Context) error {
			_, err := s.Read(ctx, "", 1024, "")
			return err
		}},
		{name: "Read limit 0", wantMsg: "l2 read: limit 0 not positive", give: func(ctx context.Context) error {
			_, err := s.Read(ctx, "k", 0, "")
			return err
		}},
		{name: "ReadMany empty key", wantMsg: "l2 read: key 1 of 2: empty key", give: func(ctx context.Context) error {
			_, err := s.ReadMany(ctx, []string{"k", ""}, 1024, "")
			return err
		}},
		{name: "Fill empty key", wantMsg: "l2 fill: fill 0 of 1: empty key", give: func(ctx context.Context) error {
			_, err := s.Fill(ctx, []l2.Fill{{Item: l2.Item{Value: []byte("v"), TTL: time.Minute}, Fence: fence}}, "")
			return err
		}},
		{name: "Fill ttl 0", wantMsg: `l2 fill: fill 0 of 1: "k": ttl 0s is not positive`, give: func(ctx context.Context) error {
			_, err := s.Fill(ctx, []l2.Fill{{Item: l2.Item{Key: "k", Value: []byte("v")}, Fence: fence}}, "")
			return err
		}},
		{name: "Fill ttl -1", wantMsg: `l2 fill: fill 0 of 1: "k": ttl -1ns is not positive`, give: func(ctx context.Context) error {
			_, err := s.Fill(ctx, []l2.Fill{{Item: l2.Item{Key: "k", Value: []byte("v"), TTL: -1}, Fence: fence}}, "")
			return err
		}},
		{name: "Fill one bad fill of two", wantMsg: `l2 fill: fill 1 of 2: "k": ttl 0s is not positive`, give: func(ctx context.Context) error {
			_, err := s.Fill(ctx, []l2.Fill{{Item: ok, Fence: fence}, {Item: l2.Item{Key: "k"}, Fence: fence}}, "")
			return err
		}},
		{name: "Fill without the fence of a Read", wantMsg: `l2 fill "k": no fence`, give: func(ctx context.Context) error {
			_, err := s.Fill(ctx, []l2.Fill{{Item: ok}}, "")
			return err
		}},
		{name: "FillReplace without the fence of a Read", wantMsg: `l2 fill "k": no fence`, give: func(ctx context.Context) error {
			_, err := s.Fill(ctx, []l2.Fill{{Item: ok, Mode: l2.FillReplace}}, "")
			return err
		}},
		{name: "FillLease without a lease", wantMsg: "l2 fill: fill 0 of 1: empty key or lease", give: func(ctx context.Context) error {
			_, err := s.Fill(ctx, []l2.Fill{{Item: ok, Mode: l2.FillLease}}, "")
			return err
		}},
		{name: "FillLease drop without a lease", wantMsg: "l2 fill: fill 0 of 1: empty key or lease", give: func(ctx context.Context) error {
			_, err := s.Fill(ctx, []l2.Fill{{Item: l2.Item{Key: "k"}, Mode: l2.FillLease}}, "")
			return err
		}},
		{name: "Fill message without a channel", wantMsg: `l2 fill "k": message without a channel`, give: func(ctx context.Context) error {
			_, err := s.Fill(ctx, []l2.Fill{{Item: ok, Fence: fence, Msg: []byte("m")}}, "")
			return err
		}},
		{name: "Fill tags without a version set", wantMsg: `l2 fill "k": tags without a version set`, give: func(ctx context.Context) error {
			tags := &l2.TagFill{Names: []string{"t"}, Entries: []l2.TagEntry{{Set: "ts", Member: "k", TTL: time.Minute}}}
			_, err := s.Fill(ctx, []l2.Fill{{Item: ok, Fence: fence, Tags: tags}}, "")
			return err
		}},
		{name: "Fill tag names and entries apart", wantMsg: `l2 fill "k": tags without a version set, or 2 names for 1 entries`, give: func(ctx context.Context) error {
			tags := &l2.TagFill{Versions: "tv", Names: []string{"t", "u"}, Entries: []l2.TagEntry{{Set: "ts", Member: "k", TTL: time.Minute}}}
			_, err := s.Fill(ctx, []l2.Fill{{Item: ok, Fence: fence, Tags: tags}}, "")
			return err
		}},
		{name: "BumpTags no tags", wantMsg: `l2 bump tags "tv": no set, tags or channel, or keep`, give: func(ctx context.Context) error {
			return s.BumpTags(ctx, "tv", nil, time.Minute, "inv", []byte("m"))
		}},
		{name: "BumpTags keep 0", wantMsg: `l2 bump tags "tv": no set, tags or channel, or keep 0s`, give: func(ctx context.Context) error {
			return s.BumpTags(ctx, "tv", []string{"t"}, 0, "inv", []byte("m"))
		}},
		{name: "BumpTags empty tag", wantMsg: `l2 bump tags "tv": empty tag`, give: func(ctx context.Context) error {
			return s.BumpTags(ctx, "tv", []string{"t", ""}, time.Minute, "inv", []byte("m"))
		}},
		{name: "DropUnreadable empty channel", wantMsg: `l2 drop unreadable "k": empty key or channel`, give: func(ctx context.Context) error {
			_, err := s.DropUnreadable(ctx, "k", []byte("v"), 0, "", nil)
			return err
		}},
		{name: "DropUnreadable negative length", wantMsg: `l2 drop unreadable "k": empty key or channel, or negative length`, give: func(ctx context.Context) error {
			_, err := s.DropUnreadable(ctx, "k", nil, -1, "ch", nil)
			return err
		}},
		{name: "SetAndPublish ttl 0", wantMsg: `l2 set and publish: "k": ttl 0s is not positive`, give: func(ctx context.Context) error {
			return s.SetAndPublish(ctx, l2.Item{Key: "k"}, "ch", nil)
		}},
		{name: "SetAndPublish empty key", wantMsg: "l2 set and publish: empty key", give: func(ctx context.Context) error {
			return s.SetAndPublish(ctx, l2.Item{TTL: time.Minute}, "ch", nil)
		}},
		{name: "SetAndPublish empty channel", wantMsg: `l2 set and publish "k": empty channel`, give: func(ctx context.Context) error {
			return s.SetAndPublish(ctx, ok, "", nil)
		}},
		{name: "DeleteAndPublish no keys", wantMsg: "l2 delete and publish: no keys", give: func(ctx context.Context) error {
			_, err := s.DeleteAndPublish(ctx, nil, "ch", nil)
			return err
		}},
		{name: "DeleteAndPublish empty key", wantMsg: "l2 delete and publish: key 0 of 1: empty key", give: func(ctx context.Context) error {
			_, err := s.DeleteAndPublish(ctx, []string{""}, "ch", nil)
			return err
		}},
		{name: "DeleteAndPublish empty channel", wantMsg: `l2 delete and publish "k": empty channel`, give: func(ctx context.Context) error {
			_, err := s.DeleteAndPublish(ctx, []string{"k"}, "", nil)
			return err
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec.reset()
			err := tt.give(t.Context())
			if !errors.Is(err, l2.ErrInvalid) {
				t.Fatalf("error = %v; want l2.ErrInvalid", err)
			}
			if !strings.HasPrefix(err.Error(), tt.wantMsg) {
				t.Errorf("error = %q; want it to begin with %q", err, tt.wantMsg)
			}
			if got := len(rec.names()); got != 0 {
				t.Errorf("round trips = %d; want 0 (arguments are checked first)", got)
			}
		})
	}
}

// TestClusterKeysInSeveralSlots checks that a cluster client refuses, before
// any round trip, a script over keys of several hash slots. The client points
// at a standalone server that it never reaches.
func TestClusterKeysInSeveralSlots(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	cc := redis.NewClusterClient(&redis.ClusterOptions{Addrs: []string{srv.Addr}})
	t.Cleanup(func() { cc.Close() })
	rec := new(recorder)
	cc.AddHook(rec)
	s := newStore(t, cc, roomy())

	_, err := s.DeleteAndPublish(t.Context(), []string{"{u1}a", "{u1}b", "{u2}a"}, "ch", nil)
	if !errors.Is(err, l2.ErrInvalid) {
		t.Fatalf("DeleteAndPublish = %v; want l2.ErrInvalid", err)
	}
	if want := `l2 delete and publish "{u1}a" and 2 more: keys "{u1}a" and "{u2}a" are in hash slots `; !strings.HasPrefix(err.Error(), want) {
		t.Errorf("error = %q; want it to begin with %q", err, want)
	}
	if got := len(rec.names()); got != 0 {
		t.Errorf("round trips = %d; want 0", got)
	}
}

// TestRing checks that a ring of one shard carries scripts and their
// messages, and that a ring of two refuses them rather than publish where
// subscribers may not listen.
func TestRing(t *testing.T) {
	t.Parallel()
	srv1, srv2 := redistest.Start(t), redistest.Start(t)
	newRing := func(addrs map[string]string) *redis.Ring {
		r := redis.NewRing(&redis.RingOptions{Addrs: addrs, ContextTimeoutEnabled: true})
		t.Cleanup(func() { r.Close() })
		return r
	}
	one := newStore(t, newRing(map[string]string{"a": srv1.Addr}), roomy())
	two := newStore(t, newRing(map[string]string{"a": srv1.Addr, "b": srv2.Addr}), roomy())
	it := l2.Item{Key: "r:k", Value: []byte("v"), TTL: time.Minute}

	t.Run("one shard", func(t *testing.T) {
		ps := subscribe(t, srv1, "r:inv")
		if err := one.SetAndPublish(t.Context(), it, "r:inv", []byte("set")); err != nil {
			t.Fatalf("SetAndPublish = %v", err)
		}
		if got := receive(t, ps); string(got) != "set" {
			t.Errorf("message = %q; want %q", got, "set")
		}
		if got, err := one.Get(t.Context(), it.Key); err != nil || string(got) != "v" {
			t.Errorf(`Get = %q, %v; want "v"`, got, err)
		}
		if n, err := one.DeleteAndPublish(t.Context(), []string{it.Key}, "r:inv", []byte("del")); err != nil || n != 1 {
			t.Fatalf("DeleteAndPublish = %d, %v; want 1", n, err)
		}
		if got := receive(t, ps); string(got) != "del" {
			t.Errorf("message = %q; want %q", got, "del")
		}
	})

	tests := []struct {
		name string
		give func(context.Context) error
	}{
		{name: "SetAndPublish", give: func(ctx context.Context) error {
			return two.SetAndPublish(ctx, it, "r:inv", nil)
		}},
		{name: "DeleteAndPublish", give: func(ctx context.Context) error {
			_, err := two.DeleteAndPublish(ctx, []string{it.Key}, "r:inv", nil)
			return err
		}},
	}
	for _, tt := range tests {
		t.Run("two shards/"+tt.name, func(t *testing.T) {
			err := tt.give(t.Context())
			if !errors.Is(err, l2.ErrInvalid) || !strings.Contains(err.Error(), "ring of 2 shards") {
				t.Errorf("%s = %v; want l2.ErrInvalid naming the ring of 2 shards", tt.name, err)
			}
		})
	}
}
