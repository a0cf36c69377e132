package codec

import (
	"bytes"
	"encoding/binary"
	"errors"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/klauspost/compress/s2"
)

// cat concatenates byte slices.
func cat(parts ...[]byte) []byte {
	return bytes.Join(parts, nil)
}

// be16 and be32 return n big-endian.
func be16(n int) []byte { return binary.BigEndian.AppendUint16(nil, uint16(n)) }
func be32(n int) []byte { return binary.BigEndian.AppendUint32(nil, uint32(n)) }

// fill returns n bytes of positive fixints.
func fill(n int) []byte { return bytes.Repeat([]byte{0x01}, n) }

// validBodies holds one well-formed msgpack object of every format.
var validBodies = []struct {
	name string
	give []byte
}{
	{"positive fixint 0", []byte{0x00}},
	{"positive fixint 127", []byte{0x7f}},
	{"negative fixint -32", []byte{0xe0}},
	{"negative fixint -1", []byte{0xff}},
	{"nil", []byte{0xc0}},
	{"false", []byte{0xc2}},
	{"true", []byte{0xc3}},
	{"uint8", []byte{0xcc, 0xff}},
	{"uint16", []byte{0xcd, 0xff, 0xff}},
	{"uint32", []byte{0xce, 0xff, 0xff, 0xff, 0xff}},
	{"uint64", cat([]byte{0xcf}, bytes.Repeat([]byte{0xff}, 8))},
	{"int8", []byte{0xd0, 0x80}},
	{"int16", []byte{0xd1, 0x80, 0x00}},
	{"int32", []byte{0xd2, 0x80, 0, 0, 0}},
	{"int64", cat([]byte{0xd3, 0x80}, make([]byte, 7))},
	{"float32", []byte{0xca, 0x3f, 0x80, 0, 0}},
	{"float64", cat([]byte{0xcb, 0x3f, 0xf0}, make([]byte, 6))},
	{"fixstr empty", []byte{0xa0}},
	{"fixstr 31", cat([]byte{0xbf}, fill(31))},
	{"str8 empty", []byte{0xd9, 0}},
	{"str8", cat([]byte{0xd9, 0xff}, fill(255))},
	{"str16", cat([]byte{0xda}, be16(256), fill(256))},
	{"str32", cat([]byte{0xdb}, be32(3), []byte("abc"))},
	{"bin8 empty", []byte{0xc4, 0}},
	{"bin8", []byte{0xc4, 2, 0xc1, 0xc1}},
	{"bin16", cat([]byte{0xc5}, be16(3), []byte{0xdd, 0xff, 0xff})},
	{"bin32", cat([]byte{0xc6}, be32(1), []byte{0xdf})},
	{"fixext1", []byte{0xd4, 0x01, 0x01}},
	{"fixext2", []byte{0xd5, 0x01, 0x01, 0x02}},
	{"fixext4 time", []byte{0xd6, 0xff, 0x65, 0x53, 0xf1, 0x00}},
	{"fixext8", cat([]byte{0xd7, 0x01}, fill(8))},
	{"fixext16", cat([]byte{0xd8, 0x01}, fill(16))},
	{"ext8 empty", []byte{0xc7, 0x00, 0x01}},
	{"ext8", []byte{0xc7, 0x03, 0x01, 0xdd, 0xff, 0xff}},
	{"ext16", cat([]byte{0xc8}, be16(2), []byte{0x01, 0xc1, 0xc1})},
	{"ext32", cat([]byte{0xc9}, be32(1), []byte{0x01, 0x91})},
	{"ext payload starting with a map", []byte{0xd5, 0x01, 0x81, 0x01}},
	{"empty ext followed by an int", []byte{0x92, 0xc7, 0x00, 0x01, 0x01}},
	{"empty ext at the end", []byte{0x92, 0x01, 0xc7, 0x00, 0x01}},
	{"fixarray empty", []byte{0x90}},
	{"fixarray 15", cat([]byte{0x9f}, fill(15))},
	{"array16", cat([]byte{0xdc}, be16(3), fill(3))},
	{"array16 empty", cat([]byte{0xdc}, be16(0))},
	{"array32", cat([]byte{0xdd}, be32(2), fill(2))},
	{"fixmap empty", []byte{0x80}},
	{"fixmap", []byte{0x82, 0xa1, 'a', 0x01, 0xa1, 'b', 0xc0}},
	{"map16", cat([]byte{0xde}, be16(1), []byte{0xa1, 'k', 0x90})},
	{"map32", cat([]byte{0xdf}, be32(1), []byte{0x01, 0x02})},
	{"nested", []byte{0x92, 0x81, 0xa1, 'k', 0x91, 0x90, 0x93, 0x01, 0x80, 0xc0}},
	{"containers closing together", []byte{0x92, 0x91, 0x91, 0x91, 0x01, 0x02}},
	{"max depth", cat(bytes.Repeat([]byte{0x91}, DefaultMaxDepth-1), []byte{0x90})},
	{"max depth of maps", cat(bytes.Repeat([]byte{0x81, 0xa0}, DefaultMaxDepth-1), []byte{0x80})},
}

func TestValidateAccepts(t *testing.T) {
	for _, tt := range validBodies {
		t.Run(tt.name, func(t *testing.T) {
			if err := Validate(tt.give, 0); err != nil {
				t.Errorf("Validate(% x) = %v; want nil", tt.give, err)
			}
		})
	}
}

// TestValidateRejectsTruncatedAndTrailing checks every proper prefix of every
// valid body, and every valid body with a byte appended.
func TestValidateRejectsTruncatedAndTrailing(t *testing.T) {
	for _, tt := range validBodies {
		t.Run(tt.name, func(t *testing.T) {
			for n := range len(tt.give) {
				if err := Validate(tt.give[:n], 0); !errors.Is(err, ErrCorrupt) {
					t.Errorf("Validate(% x) = %v; want ErrCorrupt", tt.give[:n], err)
				}
			}
			trailing := cat(tt.give, []byte{0x01})
			if err := Validate(trailing, 0); !errors.Is(err, ErrCorrupt) {
				t.Errorf("Validate(% x) = %v; want ErrCorrupt", trailing, err)
			}
		})
	}
}

func TestValidateRejects(t *testing.T) {
	tests := []struct {
		name     string
		give     []byte
		maxDepth int
		wantText string
	}{
		{"empty", nil, 0, "empty msgpack body"},
		{"never used", []byte{0xc1}, 0, "never-used code 0xc1 at offset 0"},
		{"never used in array", []byte{0x92, 0x01, 0xc1}, 0, "0xc1 at offset 2"},
		{"two objects", []byte{0x01, 0x02}, 0, "1 trailing bytes at offset 1"},
		{"array32 bomb", cat([]byte{0xdd}, be32(0xffffffff)), 0, "array at offset 0 claims 4294967295 elements, 0 bytes remain"},
		{"array16 claims more than remain", cat([]byte{0xdc}, be16(65535), fill(3)), 0, "array at offset 0 claims 65535 elements, 3 bytes remain"},
		{"fixarray claims more than remain", []byte{0x93, 0x01, 0x01}, 0, "array at offset 0 claims 3 elements, 2 bytes remain"},
		{"map32 bomb", cat([]byte{0xdf}, be32(0xffffffff)), 0, "map at offset 0 claims 4294967295 entries, 0 bytes remain"},
		{"map16 entries need two bytes", cat([]byte{0xde}, be16(2), fill(3)), 0, "map at offset 0 claims 2 entries, 3 bytes remain"},
		{"fixmap entries need two bytes", []byte{0x81, 0x01}, 0, "map at offset 0 claims 1 entries, 1 bytes remain"},
		{"str32 bomb", cat([]byte{0xdb}, be32(0xffffffff)), 0, "str at offset 0 claims 4294967295 bytes, 0 remain"},
		{"bin32 bomb", cat([]byte{0xc6}, be32(0xffffffff), []byte{1}), 0, "bin at offset 0 claims 4294967295 bytes, 1 remain"},
		{"ext32 bomb", cat([]byte{0xc9}, be32(0xffffffff), []byte{1}), 0, "ext at offset 0 claims 4294967295 bytes, 0 remain"},
		{"fixstr past end", []byte{0xa3, 'a'}, 0, "str at offset 0 claims 3 bytes, 1 remain"},
		{"fixext past end", []byte{0xd7, 0x01, 0x01}, 0, "ext at offset 0 claims 8 bytes, 1 remain"},
		{"ext missing type", []byte{0xc7, 0x00}, 0, "ext at offset 0 claims 0 bytes, 0 remain"},
		{"truncated length", []byte{0xda, 0x01}, 0, "truncated length of str at offset 0"},
		{"truncated uint64", []byte{0xcf, 0x01}, 0, "truncated int at offset 0"},
		{"truncated float", []byte{0xcb, 0x01}, 0, "truncated float at offset 0"},
		{"missing element", []byte{0x92, 0x91, 0x01}, 0, "truncated: object expected at offset 3"},
		{"too deep", cat(bytes.Repeat([]byte{0x91}, DefaultMaxDepth), []byte{0x90}), 0, "array at offset 64 nests deeper than 64"},
		{"too deep, empty innermost", cat(bytes.Repeat([]byte{0x91}, 2), []byte{0x80}), 2, "map at offset 2 nests deeper than 2"},
		{"empty ext before map", []byte{0x92, 0xc7, 0x00, 0x01, 0x80}, 0, "empty ext at offset 1 is followed by a map or nil"},
		{"empty ext before nil", []byte{0x92, 0xc8, 0x00, 0x00, 0x01, 0xc0}, 0, "empty ext at offset 1"},
		{"empty ext before map32", cat([]byte{0x92, 0xc9}, be32(0), []byte{0x01, 0xdf}, be32(0)), 0, "empty ext at offset 1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := Validate(tt.give, tt.maxDepth)
			if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), tt.wantText) {
				t.Errorf("Validate(% x) = %v; want ErrCorrupt containing %q", tt.give, err, tt.wantText)
			}
		})
	}
}

func TestValidateDoesNotAllocate(t *testing.T) {
	body := validBodies[len(validBodies)-1].give
	if allocs := testing.AllocsPerRun(100, func() {
		if err := Validate(body, 0); err != nil {
			t.Fatal(err)
		}
	}); allocs != 0 {
		t.Errorf("Validate allocates %v times; want 0", allocs)
	}
}

func TestValidateGuards(t *testing.T) {
	tests := []struct {
		name string
		give []byte
		want []int
	}{
		{"none", []byte{0x92, 0xd4, 0x01, 0x01, 0xc7, 0x01, 0x01, 0x91}, nil},
		{"fixmap", []byte{0x92, 0xd4, 0x01, 0x81, 0xd5, 0x01, 0x8f, 0x00}, []int{3, 6}},
		{"nil, map16, map32", []byte{0x93, 0xd4, 0x01, 0xc0, 0xc7, 0x01, 0x01, 0xde, 0xd4, 0x01, 0xdf}, []int{3, 7, 10}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []int
			if err := validate(tt.give, 0, &got); err != nil {
				t.Fatalf("validate = %v", err)
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("guards = %v; want %v", got, tt.want)
			}
		})
	}
}

// bombs are hostile envelopes: each must fail without allocating much more
// than its own size.
var bombs = []struct {
	name string
	give []byte
	want error
}{
	{"array32", envelope(cat([]byte{0xdd}, be32(0xffffffff))...), ErrCorrupt},
	{"map32", envelope(cat([]byte{0xdf}, be32(0xffffffff))...), ErrCorrupt},
	{"str32", envelope(cat([]byte{0xdb}, be32(0xffffffff))...), ErrCorrupt},
	{"bin32", envelope(cat([]byte{0xc6}, be32(0xffffffff))...), ErrCorrupt},
	{"ext32", envelope(cat([]byte{0xc9}, be32(0xffffffff), []byte{0x01})...), ErrCorrupt},
	{"array16 with 3 bytes", envelope(cat([]byte{0xdc}, be16(65535), fill(3))...), ErrCorrupt},
	{"map16 with 3 bytes", envelope(cat([]byte{0xde}, be16(65535), fill(3))...), ErrCorrupt},
	{"array32 in array32", envelope(cat([]byte{0xdd}, be32(10), []byte{0xdd}, be32(0xffffffff))...), ErrCorrupt},
	{"100k nested arrays", envelope(cat(bytes.Repeat([]byte{0x91}, 100000), []byte{0xc0})...), ErrCorrupt},
	{"100k nested maps", envelope(cat(bytes.Repeat([]byte{0x81, 0xa0}, 100000), []byte{0xc0})...), ErrCorrupt},
	{"s2 claiming 1 GiB", cat([]byte{headerV1 | flagCompressed}, binary.AppendUvarint(nil, 1<<30), []byte{0x00, 0x01}), ErrTooLarge},
	{"s2 claiming 4 GiB", cat([]byte{headerV1 | flagCompressed}, binary.AppendUvarint(nil, 0xffffffff), []byte{0x00}), ErrTooLarge},
	{"s2 of a bomb", cat([]byte{headerV1 | flagCompressed}, s2.Encode(nil, cat([]byte{0xdd}, be32(0xffffffff)))), ErrCorrupt},
}

// guardBombs pass Validate: msgpack's DecodeMapLen skips an ext header and
// reads the ext's payload as the map, so guardReader must stop them when the
// destination, into, is a map. Some of them are valid values for other
// destinations (a time into *any).
var guardBombs = []struct {
	name string
	give []byte
	into func() any
}{
	{"map32 in ext8", envelope(0xc7, 0x05, 0x00, 0xdf, 0xff, 0xff, 0xff, 0xff), func() any { return new(map[string]any) }},
	{"array32 in time", envelope(0xd7, 0xff, 0x81, 0xa0, 0xdd, 0xff, 0xff, 0xff, 0xff, 0xff), func() any { return new(map[string][]any) }},
	{"map32 in fixext4 field", envelope(cat([]byte{0x81, 0xa6}, []byte("counts"), []byte{0xd6, 0x00, 0xdf, 0xff, 0xff, 0xff})...), func() any { return new(record) }},
	{"array32 in time field", envelope(cat([]byte{0x81, 0xa6}, []byte("counts"), []byte{0xd7, 0xff, 0x81, 0xa0, 0xdd, 0xff, 0xff, 0xff, 0xff, 0xff})...), func() any { return new(map[string]map[string][]any) }},
	{"nil then map32 in ext8", envelope(0x92, 0xc7, 0x06, 0x00, 0xc0, 0xdf, 0xff, 0xff, 0xff, 0xff, 0x01), func() any { return new([]map[string]int) }},
	// Interned-string indexes are read with ReadByte too, but not by
	// DecodeMapLen: a chain of them would otherwise nest a recursive map
	// type one level per 5 bytes, past MaxDepth.
	{"interned index chain", envelope(0x82, 0xa1, 'a', 0xd4, 0x80, 0x81, 0xa1, 'b', 0xd4, 0x80, 0x81), func() any { return new(tree) }},
}

// bombTargets are the destinations each bomb is decoded into.
var bombTargets = []struct {
	name string
	new  func() any
}{
	{"any", func() any { return new(any) }},
	{"[]string", func() any { return new([]string) }},
	{"map[string]int", func() any { return new(map[string]int) }},
	{"map[string]any", func() any { return new(map[string]any) }},
	{"map[string][]any", func() any { return new(map[string][]any) }},
	{"map[string]map[string]any", func() any { return new(map[string]map[string]any) }},
	{"[]map[string]int", func() any { return new([]map[string]int) }},
	{"struct", func() any { return new(record) }},
}

// unmarshalAlloc unmarshals data into v and returns the error and the bytes
// allocated meanwhile.
func unmarshalAlloc(c *Codec, data []byte, v any) (uint64, error) {
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	err := c.Unmarshal(data, v)
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc, err
}

// allocLimit is the most a hostile envelope may make Unmarshal allocate.
func allocLimit(data []byte) uint64 {
	return uint64(64*len(data) + 64<<10)
}

func TestDecodeBombs(t *testing.T) {
	c := newCodec(t, Options{})
	for _, target := range bombTargets {
		// Warm msgpack's per-type caches so they do not count as the bomb's.
		_ = c.Unmarshal(envelope(codeNil), target.new())
		for _, tt := range bombs {
			t.Run(target.name+"/"+tt.name, func(t *testing.T) {
				alloc, err := unmarshalAlloc(c, tt.give, target.new())
				if !errors.Is(err, tt.want) {
					t.Errorf("Unmarshal = %v; want %v", err, tt.want)
				}
				if limit := allocLimit(tt.give); alloc > limit {
					t.Errorf("Unmarshal allocated %d bytes; want at most %d", alloc, limit)
				}
			})
		}
		for _, tt := range guardBombs {
			t.Run(target.name+"/"+tt.name, func(t *testing.T) {
				alloc, err := unmarshalAlloc(c, tt.give, target.new())
				if err != nil && !errors.Is(err, ErrCorrupt) {
					t.Errorf("Unmarshal = %v; want nil or ErrCorrupt", err)
				}
				if limit := allocLimit(tt.give); alloc > limit {
					t.Errorf("Unmarshal allocated %d bytes; want at most %d", alloc, limit)
				}
			})
		}
	}
}

func TestGuardBombs(t *testing.T) {
	c := newCodec(t, Options{})
	for _, tt := range guardBombs {
		t.Run(tt.name, func(t *testing.T) {
			if err := Validate(tt.give[1:], 0); err != nil {
				t.Errorf("Validate = %v; want nil", err)
			}
			v := tt.into()
			_ = c.Unmarshal(envelope(codeNil), v) // warm msgpack's caches
			alloc, err := unmarshalAlloc(c, tt.give, v)
			if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "decoded as a map") {
				t.Errorf("Unmarshal(%T) = %v; want ErrCorrupt from the guard", v, err)
			}
			if limit := allocLimit(tt.give); alloc > limit {
				t.Errorf("Unmarshal allocated %d bytes; want at most %d", alloc, limit)
			}
		})
	}
}

// TestGuardReaderAllowsOtherReaders checks that a guarded ext payload can
// still be read by everything but DecodeMapLen.
func TestGuardReaderAllowsOtherReaders(t *testing.T) {
	payload := []byte{0x81, 0xa0, 0xdd, 0xff, 0xff, 0xff, 0xff, 0xff}
	tm := time.Unix(int64(binary.BigEndian.Uint64(payload)&(1<<34-1)), int64(binary.BigEndian.Uint64(payload)>>34))
	body := cat([]byte{0xd7, 0xff}, payload)
	c := newCodec(t, Options{})

	var got time.Time
	if err := c.Unmarshal(envelope(body...), &got); err != nil || !got.Equal(tm) {
		t.Errorf("Unmarshal(time) = %v, %v; want %v", got, err, tm)
	}
	var a any
	if err := c.Unmarshal(envelope(body...), &a); err != nil || !a.(time.Time).Equal(tm) {
		t.Errorf("Unmarshal(time into any) = %v, %v; want %v", a, err, tm)
	}
	var m map[string]int
	if err := c.Unmarshal(envelope(body...), &m); !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "ext payload at offset 2 decoded as a map") {
		t.Errorf("Unmarshal(time into map) = %v; want the guard's ErrCorrupt", err)
	}
}
