package codec

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/klauspost/compress/s2"
	"github.com/vmihailenco/msgpack/v5"
	"go.uber.org/goleak"
)

type inner struct {
	ID   int64    `msgpack:"id"`
	Tags []string `msgpack:"tags"`
}

type record struct {
	Name   string         `msgpack:"name"`
	Raw    []byte         `msgpack:"raw"`
	When   time.Time      `msgpack:"when"`
	Inner  inner          `msgpack:"inner"`
	Ptr    *inner         `msgpack:"ptr"`
	Nil    *inner         `msgpack:"nil"`
	Counts map[string]int `msgpack:"counts"`
	List   []float64      `msgpack:"list"`
	Any    any            `msgpack:"any"`
}

// newCodec returns a Codec with opts or fails the test.
func newCodec(t testing.TB, opts Options) *Codec {
	t.Helper()
	c, err := New(opts)
	if err != nil {
		t.Fatalf("New(%+v) = %v", opts, err)
	}
	return c
}

// envelope returns a plain version 1 envelope around a msgpack body.
func envelope(body ...byte) []byte {
	return append([]byte{headerV1}, body...)
}

// roundTrip marshals give, unmarshals it into a new value of the same type,
// and returns the envelope and the decoded value.
func roundTrip(t *testing.T, c *Codec, give any) ([]byte, any) {
	t.Helper()
	b, err := c.Marshal(give)
	if err != nil {
		t.Fatalf("Marshal(%T) = %v", give, err)
	}
	got := reflect.New(reflect.TypeOf(give))
	if err := c.Unmarshal(b, got.Interface()); err != nil {
		t.Fatalf("Unmarshal(Marshal(%T)) = %v", give, err)
	}
	return b, got.Elem().Interface()
}

func TestRoundTrip(t *testing.T) {
	when := time.Unix(1700000000, 123456789)
	tests := []struct {
		name string
		give any
	}{
		{"struct", record{
			Name:   "Ada",
			Raw:    []byte{0, 1, 2, 0xff},
			When:   when,
			Inner:  inner{ID: 7, Tags: []string{"a", "b"}},
			Ptr:    &inner{ID: -1},
			Counts: map[string]int{"x": 1, "y": -2},
			List:   []float64{0.5, -1e300, math.Inf(1)},
			Any:    "anything",
		}},
		{"zero struct", record{}},
		{"map of any", map[string]any{
			"int":   int64(-3),
			"uint":  uint64(math.MaxUint64),
			"float": 1.5,
			"str":   "s",
			"bytes": []byte("b"),
			"bool":  true,
			"nil":   nil,
			"list":  []any{"a", int64(2)},
			"map":   map[string]any{"k": "v"},
			"time":  when,
		}},
		{"int64 max", int64(math.MaxInt64)},
		{"int64 min", int64(math.MinInt64)},
		{"uint64 max", uint64(math.MaxUint64)},
		{"empty string", ""},
		{"unicode", "héllo, 世界 🌍\u0000"},
		{"bytes", []byte{0, 0xc1, 0xff}},
		{"empty slice", []string{}},
		{"nil slice", []string(nil)},
		{"time", when},
		{"times", []time.Time{when, time.Unix(0, 0), time.Unix(1<<40, 999999999)}},
		{"pointer", &inner{ID: 9, Tags: []string{"t"}}},
		{"nested maps", map[string]map[string][]int{"a": {"b": {1, 2, 3}}}},
	}
	c := newCodec(t, Options{})
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, got := roundTrip(t, c, tt.give)
			if !reflect.DeepEqual(got, tt.give) {
				t.Errorf("round trip = %#v; want %#v", got, tt.give)
			}
		})
	}
}

func TestRoundTripTime(t *testing.T) {
	tests := []struct {
		name string
		give time.Time
	}{
		{"now", time.Now()},
		{"utc", time.Date(2024, 2, 29, 23, 59, 59, 999999999, time.UTC)},
		{"fixed zone", time.Date(2001, 9, 9, 1, 46, 40, 5, time.FixedZone("X", -7*3600))},
		{"before 1970", time.Date(1900, 1, 1, 0, 0, 0, 1, time.UTC)},
		{"after 2106", time.Date(2200, 1, 1, 0, 0, 0, 0, time.UTC)},
		{"zero", time.Time{}},
	}
	c := newCodec(t, Options{})
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, got := roundTrip(t, c, tt.give)
			if got := got.(time.Time); !got.Equal(tt.give) {
				t.Errorf("round trip = %v; want %v", got, tt.give)
			}
		})
	}
}

// TestRoundTripGuardedExt round-trips values whose ext payloads start with a
// map header or nil, the bytes guardReader watches: times (decoded by msgpack
// with Read) and interned strings (decoded with ReadByte, but not by
// DecodeMapLen).
func TestRoundTripGuardedExt(t *testing.T) {
	type interned struct {
		Name string `msgpack:"name,intern"`
	}
	var names []interned
	for i := range 400 {
		names = append(names, interned{Name: fmt.Sprintf("name-%03d", i%200)})
	}
	var times []time.Time
	for _, top := range []int64{0x80, 0x85, 0x8f, 0xc0, 0xde, 0xdf} {
		times = append(times, time.Unix(1700000000, top<<22))
	}
	tests := []struct {
		name     string
		give     any
		wantBody []byte // a guarded ext that must be in the body
	}{
		{"interned strings", names, []byte{0xd4, 0x80, 0x80}},
		{"times", times, []byte{0xd7, 0xff, 0x8f}},
		{"times by key", map[string]time.Time{"a": times[0], "b": times[3]}, []byte{0xd7, 0xff, 0xc0}},
	}
	c := newCodec(t, Options{CompressAbove: -1})
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, got := roundTrip(t, c, tt.give)
			if !bytes.Contains(b, tt.wantBody) {
				t.Fatalf("envelope does not contain % x", tt.wantBody)
			}
			if !reflect.DeepEqual(got, tt.give) {
				t.Errorf("round trip = %v; want %v", got, tt.give)
			}
		})
	}
}

func TestUnmarshalNil(t *testing.T) {
	c := newCodec(t, Options{})
	b, err := c.Marshal(nil)
	if err != nil {
		t.Fatalf("Marshal(nil) = %v", err)
	}
	if got, want := b, envelope(codeNil); !bytes.Equal(got, want) {
		t.Fatalf("Marshal(nil) = % x; want % x", got, want)
	}

	var a any
	if err := c.Unmarshal(b, &a); err != nil || a != nil {
		t.Errorf("Unmarshal(nil, *any) = %v, %v; want nil, nil", a, err)
	}
	p := &inner{ID: 1}
	if err := c.Unmarshal(b, &p); err != nil || p != nil {
		t.Errorf("Unmarshal(nil, **inner) = %v, %v; want nil, nil", p, err)
	}
	r := record{Ptr: &inner{ID: 1}}
	b, err = c.Marshal(record{})
	if err != nil {
		t.Fatalf("Marshal(record{}) = %v", err)
	}
	if err := c.Unmarshal(b, &r); err != nil || r.Ptr != nil {
		t.Errorf("Unmarshal(record{}) Ptr = %v, %v; want nil, nil", r.Ptr, err)
	}
}

func TestCompression(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	random := make([]byte, 1<<20)
	for i := range random {
		random[i] = byte(rng.Uint32())
	}
	compressible := []byte(strings.Repeat("tiercache ", (1<<20)/10))

	tests := []struct {
		name           string
		opts           Options
		give           []byte
		wantHeader     byte
		wantSmallerBy2 bool // the envelope is less than half the body
	}{
		{"compressible", Options{}, compressible, headerV1 | flagCompressed, true},
		{"compressible, compression off", Options{CompressAbove: -1}, compressible, headerV1, false},
		{"compressible, below threshold", Options{CompressAbove: 2 << 20}, compressible, headerV1, false},
		{"incompressible", Options{}, random, headerV1, false},
		{"incompressible, compression off", Options{CompressAbove: -1}, random, headerV1, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newCodec(t, tt.opts)
			b, got := roundTrip(t, c, tt.give)
			if !bytes.Equal(got.([]byte), tt.give) {
				t.Errorf("round trip changed the value")
			}
			if got, want := b[0], tt.wantHeader; got != want {
				t.Errorf("header = %#02x; want %#02x", got, want)
			}
			if got, want := len(b) < len(tt.give)/2, tt.wantSmallerBy2; got != want {
				t.Errorf("envelope is %d bytes for a %d byte value; want smaller by half: %v", len(b), len(tt.give), want)
			}
		})
	}
}

// TestCompressionThreshold checks that bodies strictly larger than
// CompressAbove are compressed.
func TestCompressionThreshold(t *testing.T) {
	body := func(n int) []byte { // a str8 body of n bytes
		return []byte(strings.Repeat("a", n-2))
	}
	c := newCodec(t, Options{CompressAbove: 100})
	tests := []struct {
		name       string
		give       []byte
		wantHeader byte
	}{
		{"at threshold", body(100), headerV1},
		{"above threshold", body(101), headerV1 | flagCompressed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := c.Marshal(string(tt.give))
			if err != nil {
				t.Fatalf("Marshal = %v", err)
			}
			if got, want := b[0], tt.wantHeader; got != want {
				t.Errorf("header = %#02x; want %#02x", got, want)
			}
		})
	}
}

func TestHeader(t *testing.T) {
	c := newCodec(t, Options{})
	plain, err := c.Marshal("x")
	if err != nil {
		t.Fatalf("Marshal = %v", err)
	}
	if got, want := plain[0]>>5, byte(Version); got != want {
		t.Errorf("version bits = %d; want %d", got, want)
	}
	if got, want := plain[0], byte(0x20); got != want {
		t.Errorf("plain header = %#02x; want %#02x", got, want)
	}
	if got, want := Tombstone(), []byte{0x22}; !bytes.Equal(got, want) {
		t.Errorf("Tombstone() = % x; want % x", got, want)
	}

	validS2 := s2.Encode(nil, []byte{0xa1, 'x'})
	tests := []struct {
		name string
		give []byte
		want error
	}{
		{"plain", plain, nil},
		{"compressed", append([]byte{0x21}, validS2...), nil},
		{"empty", nil, ErrCorrupt},
		{"empty body", []byte{0x20}, ErrCorrupt},
		{"version 0", []byte{0x00, 0xa1, 'x'}, ErrVersion},
		{"version 2", []byte{0x40, 0xa1, 'x'}, ErrVersion},
		{"version 2 tombstone", []byte{0x42}, ErrVersion},
		{"version 7 with reserved bits", []byte{0xfc, 0xa1, 'x'}, ErrVersion},
		{"lease", []byte{0x24, 0xa1, 'x'}, ErrLease},
		{"lease without token", []byte{0x24}, ErrCorrupt},
		{"lease with token too long", append([]byte{0x24}, make([]byte, MaxLeaseToken+1)...), ErrCorrupt},
		{"compressed lease", []byte{0x25, 'x'}, ErrCorrupt},
		{"lease tombstone", []byte{0x26}, ErrCorrupt},
		{"delta then body", []byte{0x28, 0x05, 0xa1, 'x'}, nil},
		{"delta then compressed body", append([]byte{0x29, 0x05}, validS2...), nil},
		{"delta, no body", []byte{0x28, 0x05}, ErrCorrupt},
		{"delta truncated", []byte{0x28, 0xa1}, ErrCorrupt},
		{"delta too large", []byte{0x28, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01, 0xa1, 'x'}, ErrCorrupt},
		{"delta tombstone", []byte{0x2a}, ErrCorrupt},
		{"expiry then body", []byte{0x30, 0x05, 0xa1, 'x'}, nil},
		{"delta, expiry, compressed body", append([]byte{0x39, 0x05, 0x06}, validS2...), nil},
		{"expiry, no body", []byte{0x30, 0x05}, ErrCorrupt},
		{"expiry truncated", []byte{0x30, 0xa1}, ErrCorrupt},
		{"expiry too large", []byte{0x30, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01, 0xa1, 'x'}, ErrCorrupt},
		{"expiry tombstone", []byte{0x32}, ErrCorrupt},
		{"expiry lease", []byte{0x34, 'x'}, ErrCorrupt},
		{"tombstone", []byte{0x22}, ErrTombstone},
		{"tombstone with body", []byte{0x22, 0xc0}, ErrCorrupt},
		{"compressed tombstone", []byte{0x23}, ErrCorrupt},
		{"compressed, not s2", []byte{0x21, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, ErrCorrupt},
		{"compressed, empty", []byte{0x21}, ErrCorrupt},
		{"compressed, truncated s2", append([]byte{0x21}, validS2[:len(validS2)-1]...), ErrCorrupt},
		{"trailing byte", []byte{0x20, 0xa1, 'x', 0}, ErrCorrupt},
		{"plain body that is s2", append([]byte{0x20}, validS2...), ErrCorrupt},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var s string
			err := c.Unmarshal(tt.give, &s)
			if !errors.Is(err, tt.want) || (tt.want == nil) != (err == nil) {
				t.Errorf("Unmarshal(% x) = %v; want %v", tt.give, err, tt.want)
			}
		})
	}
}

func TestLease(t *testing.T) {
	b, err := Lease("owner-1")
	if err != nil {
		t.Fatal(err)
	}
	if !IsLease(b) || IsTombstone(b) {
		t.Fatalf("IsLease(%q) = %v, IsTombstone = %v", b, IsLease(b), IsTombstone(b))
	}
	var s string
	if err := newCodec(t, Options{}).Unmarshal(b, &s); !errors.Is(err, ErrLease) {
		t.Fatalf("Unmarshal(lease) = %v, want ErrLease", err)
	}
	for _, bad := range []string{"", strings.Repeat("x", MaxLeaseToken+1)} {
		if _, err := Lease(bad); err == nil {
			t.Errorf("Lease(%d bytes) = nil error", len(bad))
		}
	}
	plain, _ := newCodec(t, Options{}).Marshal("x")
	for _, notLease := range [][]byte{nil, {0x24}, plain, Tombstone()} {
		if IsLease(notLease) {
			t.Errorf("IsLease(% x) = true", notLease)
		}
	}
}

func TestMarshalDelta(t *testing.T) {
	for _, tt := range []struct {
		name    string
		opts    Options
		give    time.Duration
		want    time.Duration
		payload string
	}{
		{"zero", Options{}, 0, 0, "v"},
		{"µs rounding", Options{}, 1500*time.Microsecond + 700, 1500 * time.Microsecond, "v"},
		{"negative", Options{}, -time.Second, 0, "v"},
		{"clamped", Options{}, 1000 * time.Hour, maxDeltaMicros * time.Microsecond, "v"},
		{"compressed", Options{CompressAbove: 8}, 4 * time.Second, 4 * time.Second, strings.Repeat("abc", 100)},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := newCodec(t, tt.opts)
			b, err := c.MarshalDelta(tt.payload, tt.give)
			if err != nil {
				t.Fatal(err)
			}
			got, ok := Delta(b)
			if !ok || got != tt.want {
				t.Fatalf("Delta = %v, %v; want %v, true", got, ok, tt.want)
			}
			var s string
			if err := c.Unmarshal(b, &s); err != nil || s != tt.payload {
				t.Fatalf("Unmarshal = %q, %v", s, err)
			}
		})
	}
	plain, _ := newCodec(t, Options{}).Marshal("v")
	for _, none := range [][]byte{nil, plain, Tombstone(), {0x28}, {0x28, 0xff}} {
		if d, ok := Delta(none); ok {
			t.Errorf("Delta(% x) = %v, true", none, d)
		}
	}
}

func TestIsTombstone(t *testing.T) {
	c := newCodec(t, Options{})
	nilValue, err := c.Marshal(nil)
	if err != nil {
		t.Fatalf("Marshal(nil) = %v", err)
	}
	tests := []struct {
		name string
		give []byte
		want bool
	}{
		{"tombstone", Tombstone(), true},
		{"nil value", nilValue, false},
		{"empty", nil, false},
		{"tombstone with body", []byte{0x22, 0xc0}, false},
		{"compressed tombstone", []byte{0x23}, false},
		{"version 2 tombstone", []byte{0x42}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := IsTombstone(tt.give); got != tt.want {
				t.Errorf("IsTombstone(% x) = %v; want %v", tt.give, got, tt.want)
			}
		})
	}

	a, b := Tombstone(), Tombstone()
	a[0] = 0
	if !IsTombstone(b) {
		t.Errorf("Tombstone() returned shared memory")
	}
}

func TestMarshalError(t *testing.T) {
	tests := []struct {
		name     string
		give     any
		wantText string
	}{
		{"chan", make(chan int), "codec: encode chan int: "},
		{"func", func() {}, "codec: encode func(): "},
		{"map with a chan", map[string]any{"c": make(chan int)}, "codec: encode map[string]interface {}: "},
		{"struct with a func", struct{ F func() }{}, "codec: encode struct { F func() }: "},
	}
	c := newCodec(t, Options{})
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := c.Marshal(tt.give)
			if err == nil || !strings.HasPrefix(err.Error(), tt.wantText) {
				t.Errorf("Marshal(%T) = % x, %v; want error starting %q", tt.give, b, err, tt.wantText)
			}
		})
	}
}

func TestMaxSize(t *testing.T) {
	small := newCodec(t, Options{MaxSize: 100})
	big := newCodec(t, Options{})
	at := strings.Repeat("a", 98)      // str8: a 100 byte body
	above := strings.Repeat("a", 99)   // a 101 byte body
	huge := strings.Repeat("a", 1<<20) // compressed by big

	if _, err := small.Marshal(at); err != nil {
		t.Errorf("Marshal(100 byte body) = %v; want nil", err)
	}
	_, err := small.Marshal(above)
	if !errors.Is(err, ErrTooLarge) || !strings.Contains(err.Error(), "101 bytes, max 100") {
		t.Errorf("Marshal(101 byte body) = %v; want ErrTooLarge naming the size", err)
	}

	tests := []struct {
		name string
		give string
		want error
	}{
		{"at max", at, nil},
		{"above max", above, ErrTooLarge},
		{"compressed above max", huge, ErrTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := big.Marshal(tt.give)
			if err != nil {
				t.Fatalf("Marshal = %v", err)
			}
			var s string
			if err := small.Unmarshal(b, &s); !errors.Is(err, tt.want) || (tt.want == nil) != (err == nil) {
				t.Errorf("Unmarshal = %v; want %v", err, tt.want)
			}
		})
	}
}

func TestNew(t *testing.T) {
	tests := []struct {
		name    string
		give    Options
		wantErr bool
	}{
		{"zero", Options{}, false},
		{"never compress", Options{CompressAbove: -1}, false},
		{"all set", Options{CompressAbove: 1, MaxSize: 1, MaxDepth: 1, MaxHeap: 1}, false},
		{"negative MaxSize", Options{MaxSize: -1}, true},
		{"negative MaxDepth", Options{MaxDepth: -1}, true},
		{"negative MaxHeap", Options{MaxHeap: -1}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := New(tt.give)
			if got := err != nil; got != tt.wantErr {
				t.Errorf("New(%+v) = %v; want error %v", tt.give, err, tt.wantErr)
			}
		})
	}
}

func TestZeroAndNilCodec(t *testing.T) {
	var zero Codec
	var nilCodec *Codec
	for _, c := range []*Codec{&zero, nilCodec} {
		b, err := c.Marshal(strings.Repeat("z", 10000))
		if err != nil {
			t.Fatalf("Marshal = %v", err)
		}
		if got, want := b[0], byte(headerV1|flagCompressed); got != want {
			t.Errorf("header = %#02x; want %#02x (compressed by default)", got, want)
		}
		var s string
		if err := c.Unmarshal(b, &s); err != nil || len(s) != 10000 {
			t.Errorf("Unmarshal = %d bytes, %v", len(s), err)
		}
	}
}

func TestMaxDepth(t *testing.T) {
	nested := func(depth int) []byte {
		return envelope(append(bytes.Repeat([]byte{0x91}, depth-1), 0x90)...)
	}
	tests := []struct {
		name string
		opts Options
		give []byte
		want error
	}{
		{"default, at limit", Options{}, nested(DefaultMaxDepth), nil},
		{"default, above limit", Options{}, nested(DefaultMaxDepth + 1), ErrCorrupt},
		{"raised", Options{MaxDepth: 100}, nested(100), nil},
		{"raised, above limit", Options{MaxDepth: 100}, nested(101), ErrCorrupt},
		{"lowered", Options{MaxDepth: 1}, nested(1), nil},
		{"lowered, above limit", Options{MaxDepth: 1}, nested(2), ErrCorrupt},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var v any
			err := newCodec(t, tt.opts).Unmarshal(tt.give, &v)
			if !errors.Is(err, tt.want) || (tt.want == nil) != (err == nil) {
				t.Errorf("Unmarshal = %v; want %v", err, tt.want)
			}
		})
	}
}

func TestUnmarshalInvalidDestination(t *testing.T) {
	c := newCodec(t, Options{})
	b, err := c.Marshal("x")
	if err != nil {
		t.Fatalf("Marshal = %v", err)
	}
	tests := []struct {
		name string
		give any
	}{
		{"nil", nil},
		{"non-pointer", "x"},
		{"nil pointer", (*string)(nil)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := c.Unmarshal(b, tt.give)
			if err == nil || errors.Is(err, ErrCorrupt) {
				t.Errorf("Unmarshal(%T) = %v; want a non-ErrCorrupt error", tt.give, err)
			}
		})
	}
}

func TestUnmarshalTypeMismatch(t *testing.T) {
	c := newCodec(t, Options{})
	b, err := c.Marshal([]string{"a"})
	if err != nil {
		t.Fatalf("Marshal = %v", err)
	}
	var n int
	if err := c.Unmarshal(b, &n); !errors.Is(err, ErrCorrupt) {
		t.Errorf("Unmarshal([]string into *int) = %v; want ErrCorrupt", err)
	}
}

// TestUnmarshalPanic checks that a panic inside msgpack becomes ErrCorrupt.
func TestUnmarshalPanic(t *testing.T) {
	tests := []struct {
		name string
		give []byte
		into func() any
	}{
		// msgpack panics when a decoded map key is not hashable,
		{"unhashable key", envelope(0x81, 0x91, 0x01, 0x02), func() any { return new(map[any]int) }},
		// and when it decodes nil into an interface holding a pointer.
		{"nil into *any holding *int", envelope(codeNil), func() any { var a any = new(int); return &a }},
	}
	c := newCodec(t, Options{})
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := c.Unmarshal(tt.give, tt.into())
			if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "panic") {
				t.Errorf("Unmarshal = %v; want ErrCorrupt from a panic", err)
			}
			// The Codec still works.
			var s []int
			if err := c.Unmarshal(envelope(0x91, 0x01), &s); err != nil || len(s) != 1 {
				t.Errorf("Unmarshal after panic = %v, %v", s, err)
			}
		})
	}
}

// TestUnmarshalDoesNotAlias checks that decoded values share no memory with
// the envelope or with the Codec's pooled decompression buffer.
func TestUnmarshalDoesNotAlias(t *testing.T) {
	type blob struct {
		B []byte `msgpack:"b"`
		S string `msgpack:"s"`
		A any    `msgpack:"a"`
	}
	tests := []struct {
		name string
		opts Options
	}{
		{"plain", Options{CompressAbove: -1}},
		{"compressed", Options{CompressAbove: 1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newCodec(t, tt.opts)
			give := blob{B: bytes.Repeat([]byte("b"), 500), S: strings.Repeat("s", 500), A: bytes.Repeat([]byte("a"), 500)}
			data, err := c.Marshal(give)
			if err != nil {
				t.Fatalf("Marshal = %v", err)
			}
			var got blob
			if err := c.Unmarshal(data, &got); err != nil {
				t.Fatalf("Unmarshal = %v", err)
			}

			// Overwrite the envelope, and the pooled buffer by decoding
			// another value of the same size.
			other, err := c.Marshal(blob{B: bytes.Repeat([]byte("x"), 500), S: strings.Repeat("x", 500), A: bytes.Repeat([]byte("x"), 500)})
			if err != nil {
				t.Fatalf("Marshal = %v", err)
			}
			var sink blob
			if err := c.Unmarshal(other, &sink); err != nil {
				t.Fatalf("Unmarshal = %v", err)
			}
			for i := range data {
				data[i] = 'x'
			}
			if !reflect.DeepEqual(got, give) {
				t.Errorf("decoded value changed when the envelope and buffers were reused")
			}
		})
	}
}

// TestUnmarshalStartsNoGoroutines checks that decoding never enables
// msgpack's UsePreallocateValues, which starts a goroutine per decoded type
// that never exits (msgpack.Unmarshal enables it).
func TestUnmarshalStartsNoGoroutines(t *testing.T) {
	defer goleak.VerifyNone(t)
	type withMaps struct {
		M map[string]int
		P *inner
		T time.Time
	}
	c := newCodec(t, Options{})
	for _, give := range []any{
		map[string]int{"a": 1},
		withMaps{M: map[string]int{"a": 1}, P: &inner{ID: 1}, T: time.Now()},
		[]*inner{{ID: 1}},
	} {
		roundTrip(t, c, give)
		b, err := c.Marshal(give)
		if err != nil {
			t.Fatalf("Marshal = %v", err)
		}
		var a any
		if err := c.Unmarshal(b, &a); err != nil {
			t.Fatalf("Unmarshal(%T into *any) = %v", give, err)
		}
	}
}

// TestMarshalAllocs checks that Marshal allocates only the envelope it
// returns once its pools are warm.
func TestMarshalAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector makes sync.Pool drop items")
	}
	c := newCodec(t, Options{})
	tests := []struct {
		name string
		give any
	}{
		{"string", "hello"},
		{"struct", inner{ID: 1, Tags: []string{"a", "b"}}},
		{"compressed", strings.Repeat("compress me ", 1000)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			allocs := testing.AllocsPerRun(100, func() {
				if _, err := c.Marshal(tt.give); err != nil {
					t.Fatal(err)
				}
			})
			if allocs > 1 {
				t.Errorf("Marshal(%T) allocates %v times; want 1", tt.give, allocs)
			}
		})
	}
}

// TestUnmarshalMatchesMsgpack checks that decoding through guardReader gives
// what msgpack gives on its own.
func TestUnmarshalMatchesMsgpack(t *testing.T) {
	give := record{Name: "n", Inner: inner{ID: 3, Tags: []string{"x"}}, Counts: map[string]int{"c": 3}, When: time.Unix(5, 6)}
	body, err := msgpack.Marshal(give)
	if err != nil {
		t.Fatalf("msgpack.Marshal = %v", err)
	}
	c := newCodec(t, Options{})
	var got record
	if err := c.Unmarshal(envelope(body...), &got); err != nil {
		t.Fatalf("Unmarshal = %v", err)
	}
	if !reflect.DeepEqual(got, give) {
		t.Errorf("Unmarshal = %+v; want %+v", got, give)
	}
}

// TestConcurrent shares one Codec, and its pools, between goroutines.
func TestConcurrent(t *testing.T) {
	c := newCodec(t, Options{CompressAbove: 64})
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 200 {
				give := inner{ID: int64(g*1000 + i), Tags: []string{strings.Repeat("t", i)}}
				b, err := c.Marshal(give)
				if err != nil {
					t.Errorf("Marshal = %v", err)
					return
				}
				var got inner
				if err := c.Unmarshal(b, &got); err != nil || !reflect.DeepEqual(got, give) {
					t.Errorf("Unmarshal = %+v, %v; want %+v", got, err, give)
					return
				}
			}
		}()
	}
	wg.Wait()
}

// TestMarshalMeta checks that a logical expiry, with or without a load
// duration and compression, reads back with Expiry, that Unmarshal skips
// it, and that values written without one (older releases) still decode
// and report none.
func TestMarshalMeta(t *testing.T) {
	at := time.Date(2026, 12, 4, 18, 0, 0, 123_456_789, time.UTC)
	for _, tt := range []struct {
		name      string
		opts      Options
		delta     time.Duration
		give      time.Time
		want      time.Time
		wantDelta bool
		payload   string
	}{
		{"expiry", Options{}, -1, at, at.Truncate(time.Millisecond), false, "v"},
		{"delta and expiry", Options{}, 3 * time.Second, at, at.Truncate(time.Millisecond), true, "v"},
		{"compressed", Options{CompressAbove: 8}, 4 * time.Second, at, at.Truncate(time.Millisecond), true, strings.Repeat("abc", 100)},
		{"before 1970", Options{}, -1, time.Unix(-5, 0), time.UnixMilli(0), false, "v"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := newCodec(t, tt.opts)
			b, err := c.MarshalMeta(tt.payload, tt.delta, tt.give)
			if err != nil {
				t.Fatal(err)
			}
			got, ok := Expiry(b)
			if !ok || !got.Equal(tt.want) {
				t.Fatalf("Expiry = %v, %v; want %v, true", got, ok, tt.want)
			}
			if d, ok := Delta(b); ok != tt.wantDelta || (ok && d != tt.delta) {
				t.Errorf("Delta = %v, %v; want %v, %v", d, ok, tt.delta, tt.wantDelta)
			}
			var s string
			if err := c.Unmarshal(b, &s); err != nil || s != tt.payload {
				t.Fatalf("Unmarshal = %q, %v", s, err)
			}
		})
	}
	c := newCodec(t, Options{})
	for _, old := range [][]byte{{0x20, 0xa1, 'v'}, {0x28, 0x05, 0xa1, 'v'}} {
		if _, ok := Expiry(old); ok {
			t.Errorf("Expiry(%x) = true; want false for a value without one", old)
		}
		var s string
		if err := c.Unmarshal(old, &s); err != nil || s != "v" {
			t.Errorf("Unmarshal(%x) = %q, %v; want v", old, s, err)
		}
	}
	if _, ok := Expiry(Tombstone()); ok {
		t.Errorf("Expiry(tombstone) = true")
	}
}
