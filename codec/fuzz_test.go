package codec

import (
	"bytes"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

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
	for _, tt := range bombs {
		seeds = append(seeds, tt.give)
	}
	for _, tt := range guardBombs {
		seeds = append(seeds, tt.give)
	}
	return seeds
}

// FuzzDecodeValue checks that Unmarshal never panics, returns only the
// documented errors, and that whatever it decodes can be encoded and decoded
// again.
func FuzzDecodeValue(f *testing.F) {
	for _, seed := range fuzzSeeds(f) {
		f.Add(seed)
	}
	// A small MaxSize keeps decompression bombs from slowing the fuzzer.
	c := newCodec(f, Options{MaxSize: 1 << 20})
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, v := range []any{new(any), new(fuzzValue), new(tree), new([]map[string]int)} {
			err := c.Unmarshal(data, v)
			if err != nil {
				if !errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrVersion) &&
					!errors.Is(err, ErrTooLarge) && !errors.Is(err, ErrTombstone) && !errors.Is(err, ErrLease) {
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
