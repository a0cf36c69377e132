package codec

import (
	"bytes"
	"encoding/binary"
	"errors"
	"runtime"
	"testing"

	"github.com/klauspost/compress/s2"
)

// Bounds on what one Unmarshal of a hostile envelope may allocate, whatever
// length its headers claim. Measured on linux/amd64 with Go 1.26 (the test
// logs the figures): every refusal, by Validate or by the s2 length check,
// costs 3 or 4 allocations and 120 to 160 bytes (the wrapped error, its
// message and its boxed arguments); under the race detector, whose sync.Pool
// drops the Codec's decode state at random, 4 or 5 allocations and up to 310
// bytes. No figure depends on the claimed length or on the destination. The
// bounds leave over 3x margin above the race figures for other Go and
// msgpack versions, and are two million times below what honouring a single
// 4 GiB claim would allocate.
const (
	bombMaxAllocs = 16      // allocations per Unmarshal
	bombMaxBytes  = 2 << 10 // bytes allocated per Unmarshal
)

// claim32 is the largest length a 32-bit msgpack header can claim.
const claim32 = 0xffffffff

// headerBombs are msgpack bodies whose headers claim far more elements or
// bytes than follow them: alone in 5 bytes, nested in plausible containers,
// and at the field of a struct that would allocate for them.
var headerBombs = []struct {
	name string
	body []byte
}{
	{"array32", cat([]byte{0xdd}, be32(claim32))},
	{"map32", cat([]byte{0xdf}, be32(claim32))},
	{"str32", cat([]byte{0xdb}, be32(claim32))},
	{"bin32", cat([]byte{0xc6}, be32(claim32))},
	{"ext32", cat([]byte{0xc9}, be32(claim32))},
	{"ext32 with type", cat([]byte{0xc9}, be32(claim32), []byte{0x01})},
	{"array16 of array32", cat([]byte{0xdc}, be16(3), bytes.Repeat(cat([]byte{0xdd}, be32(claim32)), 3))},
	{"array16 claiming 65535 of array32", cat([]byte{0xdc}, be16(0xffff), []byte{0xdd}, be32(claim32))},
	{"array32 of str32", cat([]byte{0xdd}, be32(2), []byte{0xdb}, be32(claim32), []byte{0xdb}, be32(claim32))},
	{"map16 of map32", cat([]byte{0xde}, be16(1), []byte{0xa1, 'k', 0xdf}, be32(claim32))},
	{"map32 of bin32 keys", cat([]byte{0xdf}, be32(1), []byte{0xc6}, be32(claim32), []byte{0x01})},
	{"fixarray of bin32 after valid items", cat([]byte{0x93, 0x01, 0xa1, 'a', 0xc6}, be32(claim32))},
	{"fixmap of ext32", cat([]byte{0x81, 0xa1, 'k', 0xc9}, be32(claim32), []byte{0x01})},
	{"63 nested arrays around array32", cat(bytes.Repeat([]byte{0x91}, DefaultMaxDepth-1), []byte{0xdd}, be32(claim32))},
	{"struct field list of array32", cat([]byte{0x81, 0xa4}, []byte("list"), []byte{0xdd}, be32(claim32))},
	{"struct field counts of map32", cat([]byte{0x81, 0xa6}, []byte("counts"), []byte{0xdf}, be32(claim32))},
	{"struct field raw of bin32", cat([]byte{0x81, 0xa3}, []byte("raw"), []byte{0xc6}, be32(claim32))},
	{"struct field name of str32", cat([]byte{0x81, 0xa4}, []byte("name"), []byte{0xdb}, be32(claim32))},
	{"struct field inner tags of array32", cat([]byte{0x81, 0xa5}, []byte("inner"), []byte{0x81, 0xa4}, []byte("tags"), []byte{0xdd}, be32(claim32))},
}

// bombDestinations are the types each bomb is decoded into: the generic
// containers, the types whose decoders allocate a claimed length up front,
// and a struct with slice and map fields.
var bombDestinations = []struct {
	name string
	new  func() any
}{
	{"any", func() any { return new(any) }},
	{"[]any", func() any { return new([]any) }},
	{"map[string]any", func() any { return new(map[string]any) }},
	{"[]string", func() any { return new([]string) }},
	{"[]byte", func() any { return new([]byte) }},
	{"string", func() any { return new(string) }},
	{"[][]byte", func() any { return new([][]byte) }},
	{"map[string][]string", func() any { return new(map[string][]string) }},
	{"struct", func() any { return new(record) }},
}

// bombCost is what decoding one envelope costs.
type bombCost struct {
	allocs float64 // allocations per Unmarshal
	bytes  uint64  // bytes allocated per Unmarshal
}

// measureBomb checks that every Unmarshal of data into a new value from
// newV fails with want, and returns what one Unmarshal allocates: the
// allocations as testing.AllocsPerRun counts them, and the mean of the
// runtime's TotalAlloc over many runs. The destination is allocated outside
// both measurements.
func measureBomb(t *testing.T, c *Codec, data []byte, newV func() any, want error) bombCost {
	t.Helper()
	const runs = 1000
	dsts := make([]any, runs+1)
	for i := range dsts {
		dsts[i] = newV()
	}
	// The first run warms msgpack's per-type caches and the Codec's pool.
	if err := c.Unmarshal(data, dsts[runs]); !errors.Is(err, want) {
		t.Fatalf("Unmarshal = %v; want %v", err, want)
	}
	var failed error
	i := 0
	allocs := testing.AllocsPerRun(runs-1, func() {
		if err := c.Unmarshal(data, dsts[i]); !errors.Is(err, want) {
			failed = err
		}
		i++
	})
	if failed != nil {
		t.Fatalf("Unmarshal = %v; want %v", failed, want)
	}

	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for _, v := range dsts[:runs] {
		if err := c.Unmarshal(data, v); !errors.Is(err, want) {
			failed = err
		}
	}
	runtime.ReadMemStats(&after)
	if failed != nil {
		t.Fatalf("Unmarshal = %v; want %v", failed, want)
	}
	return bombCost{allocs: allocs, bytes: (after.TotalAlloc - before.TotalAlloc) / runs}
}

// checkBombCost logs cost and fails t if it exceeds the bounds.
func checkBombCost(t *testing.T, cost bombCost) {
	t.Helper()
	t.Logf("%.1f allocs, %d B per Unmarshal", cost.allocs, cost.bytes)
	if cost.allocs > bombMaxAllocs {
		t.Errorf("Unmarshal allocates %.1f times; want at most %d", cost.allocs, bombMaxAllocs)
	}
	if cost.bytes > bombMaxBytes {
		t.Errorf("Unmarshal allocates %d bytes; want at most %d", cost.bytes, bombMaxBytes)
	}
}

// TestDecodeBombBoundedAllocation checks that envelopes whose msgpack
// headers, or whose s2 block header, claim huge lengths in a few bytes are
// refused without panicking and at a small cost that does not grow with the
// claim.
func TestDecodeBombBoundedAllocation(t *testing.T) {
	c := newCodec(t, Options{})
	for _, tt := range headerBombs {
		t.Run(tt.name, func(t *testing.T) {
			if err := Validate(tt.body, 0); !errors.Is(err, ErrCorrupt) {
				t.Errorf("Validate = %v; want ErrCorrupt", err)
			}
			for _, dst := range bombDestinations {
				t.Run(dst.name, func(t *testing.T) {
					checkBombCost(t, measureBomb(t, c, envelope(tt.body...), dst.new, ErrCorrupt))
				})
			}
		})
	}

	// An s2 block starts with the uvarint length of the block it decodes
	// to; Unmarshal checks it against MaxSize before allocating the buffer
	// to decode into.
	const maxSize = 4 << 10
	small := newCodec(t, Options{MaxSize: maxSize})
	compressed := func(blockLen uint64, rest ...byte) []byte {
		return cat([]byte{headerV1 | flagCompressed}, binary.AppendUvarint(nil, blockLen), rest)
	}
	tests := []struct {
		name string
		c    *Codec
		give []byte
		want error
	}{
		{"s2 claiming MaxSize+1", small, compressed(maxSize+1, 0x00, 0x01), ErrTooLarge},
		{"s2 claiming 4 GiB", c, compressed(claim32, 0x00), ErrTooLarge},
		{"s2 claiming 2^63 bytes, beyond s2's own limit", c, compressed(1<<63 - 1), ErrCorrupt},
		{"s2 of 1 MiB over MaxSize", small, cat([]byte{headerV1 | flagCompressed}, s2.Encode(nil, make([]byte, 1<<20))), ErrTooLarge},
		{"s2 of an array32 claim", c, cat([]byte{headerV1 | flagCompressed}, s2.Encode(nil, headerBombs[0].body)), ErrCorrupt},
		{"s2 with a truncated length", c, []byte{headerV1 | flagCompressed, 0xff, 0xff}, ErrCorrupt},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, dst := range bombDestinations {
				t.Run(dst.name, func(t *testing.T) {
					checkBombCost(t, measureBomb(t, tt.c, tt.give, dst.new, tt.want))
				})
			}
		})
	}
}
