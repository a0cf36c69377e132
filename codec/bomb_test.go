package codec

import (
	"bytes"
	"encoding/binary"
	"errors"
	"runtime"
	"strings"
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

// Types that hostile bodies decode into: a struct with a []string field, a
// slice of big structs and one of pointers to them, and nested slices.
type (
	withTags struct {
		Tags []string `msgpack:"tags"`
	}
	bigItem struct {
		Data [128]int64 `msgpack:"data"` // 1 KiB
	}
	nestedTags struct {
		Items []withTags `msgpack:"items"`
	}
)

// nils returns n msgpack nils.
func nils(n int) []byte { return bytes.Repeat([]byte{codeNil}, n) }

// array32 returns an array32 header claiming n elements.
func array32(n int) []byte { return cat([]byte{0xdd}, be32(n)) }

// tagsBomb is the body of a withTags whose tags are n nils: each one byte of
// msgpack, each a 16-byte string header in the []string.
func tagsBomb(n int) []byte {
	return cat([]byte{0x81, 0xa4}, []byte("tags"), array32(n), nils(n))
}

// s2BombNils is how many nils the s2 bomb holds: with its framing, a body a
// few bytes under DefaultMaxSize.
const s2BombNils = 16_777_152

// refusal is what refusing one envelope costs.
type refusal struct {
	allocs float64 // allocations per Unmarshal
	bytes  uint64  // bytes allocated per Unmarshal
}

// measureRefusal checks that runs Unmarshals of data into new values from
// newV each fail with ErrTooComplex, and no other sentinel, and returns what
// one allocates, as measureBomb does. UnmarshalCost and Cost must return 0
// with the error.
func measureRefusal(t *testing.T, c *Codec, data []byte, newV func() any, runs int) refusal {
	t.Helper()
	check := func(heap int, err error) {
		t.Helper()
		if !errors.Is(err, ErrTooComplex) || errors.Is(err, ErrTooLarge) || errors.Is(err, ErrCorrupt) || heap != 0 {
			t.Fatalf("UnmarshalCost = %d, %v; want 0, ErrTooComplex alone", heap, err)
		}
		if !strings.HasPrefix(err.Error(), "codec: value too complex: ") {
			t.Fatalf("error %q lacks the codec: prefix and sentinel", err)
		}
	}
	dsts := make([]any, 2*runs+1)
	for i := range dsts {
		dsts[i] = newV()
	}
	check(c.UnmarshalCost(data, dsts[2*runs])) // warms msgpack's caches and the Codec's plans and pool
	check(c.Cost(data, dsts[2*runs]))
	i := 0
	allocs := testing.AllocsPerRun(runs, func() {
		check(c.UnmarshalCost(data, dsts[i]))
		i++
	})
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for _, v := range dsts[runs : 2*runs] {
		_, err := c.UnmarshalCost(data, v)
		if !errors.Is(err, ErrTooComplex) {
			t.Fatalf("Unmarshal = %v; want ErrTooComplex", err)
		}
	}
	runtime.ReadMemStats(&after)
	return refusal{allocs: allocs, bytes: (after.TotalAlloc - before.TotalAlloc) / uint64(runs)}
}

// TestDecodeBombTooComplex checks that bodies within MaxSize whose objects
// would become far bigger Go values are refused with ErrTooComplex before
// msgpack allocates them, at a cost that does not grow with what they claim:
// no more than refusals by Validate cost (bombMaxAllocs, bombMaxBytes),
// plus, for a compressed one, the decompression buffer that MaxSize bounds.
func TestDecodeBombTooComplex(t *testing.T) {
	c := newCodec(t, Options{})
	compressed := cat([]byte{headerV1 | flagCompressed}, s2.Encode(nil, tagsBomb(s2BombNils)))
	if len(compressed) > 38 {
		t.Fatalf("s2 bomb envelope is %d bytes; want at most 38", len(compressed))
	}
	structs := func(n int, each ...byte) []byte { return cat(array32(n), bytes.Repeat(each, n)) }
	emptyKeyMap := func(n int) []byte { return cat([]byte{codeMap32}, be32(n), bytes.Repeat([]byte{0xa0, codeNil}, n)) }
	var nested []byte
	for range 500 {
		nested = append(nested, tagsBomb(10_000)...)
	}
	nested = cat([]byte{0x81, 0xa5}, []byte("items"), array32(500), nested)

	tests := []struct {
		name      string
		give      []byte
		into      func() any
		wantBytes uint64 // most bytes one refusal may allocate
	}{
		// The attack as reported: 16,777,152 nils for a []string field,
		// compressed to a few dozen bytes. Decoding them would build a
		// 256 MiB slice; refusing costs the decompressed body.
		{"s2 nils into a []string field", compressed, func() any { return new(withTags) }, s2BombNils + 4<<10 + bombMaxBytes},
		{"nils into a []string field", envelope(tagsBomb(s2BombNils)...), func() any { return new(withTags) }, bombMaxBytes},
		{"nils into a slice of big structs", envelope(structs(70_000, codeNil)...), func() any { return new([]bigItem) }, bombMaxBytes},
		{"empty maps into a slice of big structs", envelope(structs(70_000, 0x80)...), func() any { return new([]bigItem) }, bombMaxBytes},
		{"zeros into a slice of pointers to big structs", envelope(structs(70_000, 0x00)...), func() any { return new([]*bigItem) }, bombMaxBytes},
		{"map of empty keys", envelope(emptyKeyMap(1_000_000)...), func() any { return new(map[string]int) }, bombMaxBytes},
		{"map of empty keys into any values", envelope(emptyKeyMap(1_000_000)...), func() any { return new(map[string]any) }, bombMaxBytes},
		{"nested slices of nils", envelope(nested...), func() any { return new(nestedTags) }, bombMaxBytes},
		{"nils into any", envelope(structs(8_000_000, codeNil)...), func() any { return new(any) }, bombMaxBytes},
		{"empty maps into any", envelope(structs(1_500_000, 0x80)...), func() any { return new(any) }, bombMaxBytes},
		{"empty arrays into any", envelope(structs(2_000_000, 0x90)...), func() any { return new(any) }, bombMaxBytes},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			runs := 20
			switch {
			case len(tt.give) > 1<<20 || tt.give[0]&flagCompressed != 0:
				runs = 3
				if raceEnabled {
					runs = 1 // the race detector makes walking 16 MiB slow
				}
			case raceEnabled:
				runs = 5
			}
			cost := measureRefusal(t, c, tt.give, tt.into, runs)
			t.Logf("%d byte envelope: %.1f allocs, %d B per refusal", len(tt.give), cost.allocs, cost.bytes)
			if cost.allocs > bombMaxAllocs {
				t.Errorf("refusal allocates %.1f times; want at most %d", cost.allocs, bombMaxAllocs)
			}
			if cost.bytes > tt.wantBytes {
				t.Errorf("refusal allocates %d bytes; want at most %d", cost.bytes, tt.wantBytes)
			}
		})
	}
}

// TestDecodeBombMaxHeap checks the limit itself: a []string of nils whose
// bound is MaxHeap decodes, one element more is refused, and a larger
// MaxHeap accepts it.
func TestDecodeBombMaxHeap(t *testing.T) {
	const maxHeap = 1 << 20
	n := 0 // the most elements whose backing array's bound fits
	for allocSize(16*(n+1)) <= maxHeap {
		n++
	}
	c := newCodec(t, Options{MaxHeap: maxHeap})
	var got []string
	heap, err := c.UnmarshalCost(envelope(cat(array32(n), nils(n))...), &got)
	if err != nil || len(got) != n || heap != allocSize(16*n) {
		t.Errorf("UnmarshalCost(%d nils) = %d, %v, %d strings; want %d, nil, %d", n, heap, err, len(got), allocSize(16*n), n)
	}
	over := envelope(cat(array32(n+1), nils(n+1))...)
	if _, err := c.UnmarshalCost(over, new([]string)); !errors.Is(err, ErrTooComplex) {
		t.Errorf("UnmarshalCost(%d nils) = %v; want ErrTooComplex", n+1, err)
	}
	if err := newCodec(t, Options{MaxHeap: 2 * maxHeap}).Unmarshal(over, new([]string)); err != nil {
		t.Errorf("Unmarshal(%d nils) with twice the MaxHeap = %v; want nil", n+1, err)
	}
}
