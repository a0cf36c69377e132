package codec

import (
	"bytes"
	"encoding/binary"
	"errors"
	"reflect"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/klauspost/compress/s2"
	"github.com/vmihailenco/msgpack/v5"
)

// tree is a recursive map type: the kind of destination where msgpack's
// habit of reading an ext payload as a map could nest without bound.
type tree map[string]tree

// fuzzValue is the struct FuzzDecodeValue decodes into.
type fuzzValue struct {
	S    string            `msgpack:"s"`
	B    []byte            `msgpack:"b"`
	I    int64             `msgpack:"i"`
	U    uint64            `msgpack:"u"`
	F    float64           `msgpack:"f"`
	T    time.Time         `msgpack:"t"`
	L    []string          `msgpack:"l"`
	M    map[string]int    `msgpack:"m"`
	MS   map[string]string `msgpack:"ms"`
	A    map[string]any    `msgpack:"a"`
	Tree tree              `msgpack:"tree"`
	Next *fuzzValue        `msgpack:"next"`
	Any  any               `msgpack:"any"`
	N    string            `msgpack:"n,intern"`
}

// fuzzSeeds returns valid envelopes of several values, plain and compressed,
// a tombstone, and the decode bombs.
func fuzzSeeds(t testing.TB) [][]byte {
	plain := newCodec(t, Options{CompressAbove: -1})
	small := newCodec(t, Options{CompressAbove: 16})
	values := []any{
		nil,
		"hello",
		int64(-1),
		[]any{1, "a", []byte{1}, 1.5, true, nil, time.Unix(1<<33, 5)},
		map[string]any{"k": map[string]any{"n": []any{}}},
		fuzzValue{
			S: "s", B: []byte("b"), I: -5, U: 5, F: 0.5, T: time.Unix(1700000000, 0x8f<<22),
			L: []string{"x", "y"}, M: map[string]int{"m": 1}, MS: map[string]string{"a": "b"},
			A: map[string]any{"a": int64(1)}, Tree: tree{"a": tree{"b": nil}},
			Next: &fuzzValue{S: "next", N: "interned"}, Any: []any{"z"}, N: "interned",
		},
		strings.Repeat("compressible ", 20),
	}
	var seeds [][]byte
	for _, v := range values {
		for _, c := range []*Codec{plain, small} {
			b, err := c.Marshal(v)
			if err != nil {
				t.Fatalf("Marshal(%T) = %v", v, err)
			}
			seeds = append(seeds, b)
		}
	}
	seeds = append(seeds, Tombstone())
	if b, err := plain.MarshalMeta("v", time.Second, time.UnixMilli(1_800_000_000_000)); err == nil {
		seeds = append(seeds, b)
	}
	for _, tt := range bombs {
		seeds = append(seeds, tt.give)
	}
	for _, tt := range guardBombs {
		seeds = append(seeds, tt.give)
	}
	// Bodies whose bound is near FuzzDecodeValue's MaxHeap for some of
	// its types, on either side: nils and empty maps for slices of big
	// structs, keys with nils or empty maps for maps of pointers to them.
	seeds = append(seeds,
		envelope(cat([]byte{0xdc}, be16(20), nils(20))...),
		envelope(cat([]byte{0xdc}, be16(100), bytes.Repeat([]byte{0x80}, 100))...),
		envelope(0x82, 0xa1, 'a', 0x80, 0xa1, 'b', codeNil),
		envelope(cat([]byte{codeMap16}, be16(70), bytes.Repeat([]byte{0xa0, 0x80}, 70))...),
		envelope(cat([]byte{0x81, 0xa1, 'l', 0x93}, nils(3))...),
	)
	return seeds
}

// fuzzBody returns the msgpack body of envelope data, decompressed, if
// data is a value envelope, and the length that Unmarshal takes it to have
// (what a compressed body claims) if it is a value envelope within
// fuzzMaxSize.
func fuzzBody(data []byte) (body []byte, n int, ok bool) {
	if len(data) == 0 || data[0]>>versionShift != Version || data[0]&(flagTombstone|flagLease) != 0 {
		return nil, 0, false
	}
	body = data[1:]
	if data[0]&flagDelta != 0 {
		_, w := binary.Uvarint(body)
		if w <= 0 {
			return nil, 0, false
		}
		body = body[w:]
	}
	if data[0]&flagExpiry != 0 {
		_, w := binary.Uvarint(body)
		if w <= 0 {
			return nil, 0, false
		}
		body = body[w:]
	}
	if data[0]&flagCompressed == 0 {
		return body, len(body), len(body) <= fuzzMaxSize
	}
	n, err := s2.DecodedLen(body)
	if err != nil || n > fuzzMaxSize {
		return nil, 0, false
	}
	body, err = s2.Decode(nil, body)
	return body, n, err == nil
}

// fuzzMaxSize and fuzzMaxHeap are the limits FuzzDecodeValue decodes with:
// small, so that decompression bombs do not slow the fuzzer and inputs of a
// few dozen bytes can pass MaxHeap.
const (
	fuzzMaxSize = 1 << 20
	fuzzMaxHeap = 64 << 10
)

// FuzzDecodeValue checks that Unmarshal never panics, returns only the
// documented errors, that whatever it decodes can be encoded and decoded
// again, and that decoding allocates no more than UnmarshalCost documents:
// twice the bound (the value, and as much again of garbage) plus a few
// times the body (msgpack's buffers).
func FuzzDecodeValue(f *testing.F) {
	for _, seed := range fuzzSeeds(f) {
		f.Add(seed)
	}
	c := newCodec(f, Options{MaxSize: fuzzMaxSize, MaxHeap: fuzzMaxHeap})
	// Slices and maps of 1 KiB structs make a missed charge show on small
	// inputs.
	newTargets := func() []any {
		return []any{new(any), new(fuzzValue), new(tree), new([]map[string]int), new([]bigItem), new(map[string]*bigItem)}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		// The bounds, computed apart so that they cost nothing below.
		bounds := 0
		body, n, ok := fuzzBody(data)
		if ok && validate(body, 0, nil) == nil {
			var st decodeState
			for _, v := range newTargets() {
				if heap, err := c.heapBound(&st, body, reflect.ValueOf(v), fuzzMaxHeap); err == nil {
					bounds += heap
				}
			}
		}

		targets := newTargets()
		errs := make([]error, len(targets))
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		for i, v := range targets {
			errs[i] = c.Unmarshal(data, v)
		}
		runtime.ReadMemStats(&after)
		// The fuzzing engine's goroutines allocate a little meanwhile.
		if alloc, limit := after.TotalAlloc-before.TotalAlloc, uint64(2*bounds+4*len(targets)*n+16<<10); alloc > limit {
			t.Fatalf("decoding a %d byte body into %d types with bounds summing to %d bytes allocated %d bytes; want at most %d",
				n, len(targets), bounds, alloc, limit)
		}

		for i, v := range targets {
			if err := errs[i]; err != nil {
				if !errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrVersion) && !errors.Is(err, ErrTooLarge) &&
					!errors.Is(err, ErrTooComplex) && !errors.Is(err, ErrTombstone) && !errors.Is(err, ErrLease) {
					t.Fatalf("Unmarshal(%T) = %v; want a documented error", v, err)
				}
				continue
			}
			b, err := c.Marshal(v)
			if err != nil {
				t.Fatalf("Marshal(Unmarshal(%T)) = %v", v, err)
			}
			if err := c.Unmarshal(b, reflect.New(reflect.TypeOf(v).Elem()).Interface()); err != nil {
				t.Fatalf("Unmarshal(Marshal(Unmarshal(%T))) = %v", v, err)
			}
		}
	})
}

// FuzzValidate checks that Validate never panics, and that msgpack decodes
// whatever Validate accepts into *any without panicking.
func FuzzValidate(f *testing.F) {
	for _, tt := range validBodies {
		f.Add(tt.give)
	}
	for _, seed := range fuzzSeeds(f) {
		if len(seed) > 1 {
			f.Add(seed[1:])
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		err := Validate(data, 0)
		var guards []int
		if err2 := validate(data, 0, &guards); (err == nil) != (err2 == nil) {
			t.Fatalf("Validate = %v but validate with guards = %v", err, err2)
		}
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("Validate = %v; want ErrCorrupt", err)
			}
			return
		}
		// Not msgpack.Unmarshal: it starts goroutines that never exit.
		dec := msgpack.NewDecoder(bytes.NewReader(data))
		var v any
		_ = dec.Decode(&v)
	})
}
