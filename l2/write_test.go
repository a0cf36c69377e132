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

// TestWriteScriptArguments pins the KEYS and ARGV that DeleteAndPublish
// and WriteAndPublish give their scripts: the keys, then the fences of
// their slots (each once, in order of first use); ARGV[1] the channel,
// ARGV[2] the message, ARGV[3] the number of keys, then (WriteAndPublish)
// a value and a TTL in milliseconds per op, "" and "" for a delete. It
// also checks what the scripts did with them, each fence moving by one.
func TestWriteScriptArguments(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	c, rec := newClient(t, srv)
	s := newStore(t, c, roomy())
	ctx := t.Context()
	fa, fb := s.FenceKey("{a}x"), s.FenceKey("{b}z")
	if fa == fb || s.FenceKey("{a}y") != fa {
		t.Fatalf("fences %q, %q, %q; the test needs {a} and {b} in two slots", fa, s.FenceKey("{a}y"), fb)
	}

	tests := []struct {
		name   string
		call   func() error
		want   []any // after "evalsha" and the script's SHA1
		values map[string]string
	}{
		{
			name: "DeleteAndPublish",
			call: func() error {
				_, err := s.DeleteAndPublish(ctx, []string{"{a}x", "{a}y", "{b}z"}, "ch", []byte("m"))
				return err
			},
			want:   []any{5, "{a}x", "{a}y", "{b}z", fa, fb, "ch", []byte("m"), 3},
			values: map[string]string{"{a}x": "", "{a}y": "", "{b}z": ""},
		},
		{
			name: "WriteAndPublish",
			call: func() error {
				_, err := s.WriteAndPublish(ctx, []l2.Op{
					{Item: l2.Item{Key: "{a}x", Value: []byte("v1"), TTL: 1500 * time.Microsecond}},
					{Item: l2.Item{Key: "{b}z"}, Delete: true},
					{Item: l2.Item{Key: "{a}y", Value: []byte("v2"), TTL: time.Minute}},
				}, "ch", []byte("m"))
				return err
			},
			want: []any{5, "{a}x", "{b}z", "{a}y", fa, fb, "ch", []byte("m"), 3,
				[]byte("v1"), int64(2), "", "", []byte("v2"), int64(60000)},
			values: map[string]string{"{b}z": "", "{a}y": "v2"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			seed(t, c, map[string][]byte{"{a}x": []byte("old"), "{a}y": []byte("old"), "{b}z": []byte("old"), fa: []byte("10"), fb: []byte("20")})
			if err := tt.call(); err != nil { // loads the script
				t.Fatal(err)
			}
			seed(t, c, map[string][]byte{"{a}x": []byte("old"), "{a}y": []byte("old"), "{b}z": []byte("old"), fa: []byte("10"), fb: []byte("20")})
			rec.reset()
			if err := tt.call(); err != nil {
				t.Fatal(err)
			}
			got := rec.args()
			if len(got) != 1 || len(got[0]) < 2 || got[0][0] != "evalsha" || !reflect.DeepEqual(got[0][2:], tt.want) {
				t.Errorf("sent %v; want [evalsha <sha> %v]", got, tt.want)
			}
			for k, want := range tt.values {
				if v := c.Get(ctx, k).Val(); v != want {
					t.Errorf("%s = %q; want %q", k, v, want)
				}
			}
			if a, b := c.Get(ctx, fa).Val(), c.Get(ctx, fb).Val(); a != "11" || b != "21" {
				t.Errorf("fences = %s, %s; want 11, 21 (each moved once)", a, b)
			}
		})
	}
}
