package main

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"reflect"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/tiercache/tiercache/codec"
)

// TestDecodeEnvelopeCLI proves that get's generic decoding turns what
// msgpack can hold into JSON that says what it was.
func TestDecodeEnvelopeCLI(t *testing.T) {
	at := time.Date(2024, 5, 6, 7, 8, 9, 123456789, time.UTC)
	tests := []struct {
		name string
		give any
		want any
	}{
		{"int keys", map[int]string{1: "a", -2: "b"}, map[string]any{"1": "a", "-2": "b"}},
		{"uint64", uint64(math.MaxUint64), uint64(math.MaxUint64)},
		{"negative", int64(-5), int64(-5)},
		{"float", 1.5, 1.5},
		{"NaN", math.NaN(), "NaN"},
		{"infinity", math.Inf(-1), "-Inf"},
		{"bytes", []byte{1, 2}, map[string]any{"$bin": "AQI="}},
		{"time", at, "2024-05-06T07:08:09.123456789Z"},
		{"nil", nil, nil},
		{"nested", []any{[]any{true, "x"}, map[string]any{}}, []any{[]any{true, "x"}, map[string]any{}}},
	}
	cd := newCodec(t)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			data, err := cd.Marshal(tt.give)
			if err != nil {
				t.Fatal(err)
			}
			env, got, truncated, err := decodeEnvelope(cd, data, defaultMaxOutput)
			if err != nil || truncated {
				t.Fatalf("decodeEnvelope: truncated %v, %v", truncated, err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("decodeEnvelope(%v) = %#v; want %#v", tt.give, got, tt.want)
			}
			if env.Version != codec.Version || env.Size != len(data) {
				t.Errorf("envelope = %+v; want version %d, size %d", env, codec.Version, len(data))
			}
			if _, err := json.Marshal(got); err != nil {
				t.Errorf("json: %v", err)
			}
		})
	}
	t.Run("fail-safe expiry", func(t *testing.T) {
		data, err := cd.MarshalMeta("v", -1, at)
		if err != nil {
			t.Fatal(err)
		}
		env, got, _, err := decodeEnvelope(cd, data, defaultMaxOutput)
		if want := "2024-05-06T07:08:09.123Z"; err != nil || got != "v" || env.Expires != want {
			t.Errorf("decodeEnvelope = %+v, %#v, %v; want expires %s and v", env, got, err, want)
		}
	})
	t.Run("ext", func(t *testing.T) {
		// An extension type the CLI does not know: shown, not decoded.
		body := []byte{0xd4, 0x05, 0x2a} // fixext1, type 5, payload 0x2a
		got, truncated, err := msgpackJSON(body, defaultMaxOutput)
		if want := map[string]any{"$ext": int8(5), "data": "Kg=="}; err != nil || truncated || !reflect.DeepEqual(got, want) {
			t.Errorf("msgpackJSON(ext) = %#v, %v, %v; want %#v", got, truncated, err, want)
		}
	})
}

// newCodec returns a Codec with the library's default limits.
func newCodec(t testing.TB) *codec.Codec {
	t.Helper()
	cd, err := codec.New(codec.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return cd
}

// TestDecodeEnvelopeMaxOutput proves that get's generic decoding builds no
// more than about --max-output bytes of JSON, whatever the value's shape:
// lists and maps lose their last elements, strings and bytes their end,
// and it says so.
func TestDecodeEnvelopeMaxOutput(t *testing.T) {
	const maxOutput = 4096
	words := make([]string, 10_000)
	for i := range words {
		words[i] = fmt.Sprintf("word-%05d", i)
	}
	nested := make(map[string][]int, 1000)
	for i := range 1000 {
		nested[fmt.Sprint(i)] = []int{i, i, i}
	}
	tests := []struct {
		name          string
		give          any
		wantTruncated bool
	}{
		{"short list", words[:10], false},
		{"long list", words, true},
		{"long string", strings.Repeat("é", 100_000), true},
		{"long bytes", make([]byte, 100_000), true},
		{"map of lists", nested, true},
		{"list of a long string", []any{1, strings.Repeat("x", 100_000), 2}, true},
	}
	cd := newCodec(t)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			data, err := cd.Marshal(tt.give)
			if err != nil {
				t.Fatal(err)
			}
			_, got, truncated, err := decodeEnvelope(cd, data, maxOutput)
			if err != nil || truncated != tt.wantTruncated {
				t.Fatalf("decodeEnvelope = truncated %v, %v; want truncated %v", truncated, err, tt.wantTruncated)
			}
			out, err := json.MarshalIndent(got, "  ", "  ") // as a field of get's result
			if err != nil {
				t.Fatal(err)
			}
			if len(out) > maxOutput+200 || !utf8.Valid(out) {
				t.Errorf("JSON of %d bytes, valid UTF-8 %v; want about %d bytes at most", len(out), utf8.Valid(out), maxOutput)
			}
			if !truncated {
				if want, _ := json.MarshalIndent(tt.give, "  ", "  "); !bytes.Equal(out, want) {
					t.Errorf("JSON = %s; want %s", out, want)
				}
			}
		})
	}
}

// TestDecodeEnvelopeTooComplex proves that get refuses, before decoding, a
// value that the library refuses: one whose generic decoding would build
// more heap than MaxHeap allows, such as millions of nils.
func TestDecodeEnvelopeTooComplex(t *testing.T) {
	const n = 5_000_000 // 5 MB of nils: 80 MB of interface values
	body := append(binary.BigEndian.AppendUint32([]byte{0x20, 0xdd}, n), bytes.Repeat([]byte{0xc0}, n)...)
	env, got, _, err := decodeEnvelope(newCodec(t), body, defaultMaxOutput)
	if !errors.Is(err, codec.ErrTooComplex) || got != nil || env.Size != len(body) {
		t.Errorf("decodeEnvelope = %+v, %v, %v; want the envelope, nil, ErrTooComplex", env, got, err)
	}
}

// FuzzDecodeEnvelope checks that get's decoding never panics and always
// gives JSON, whatever Redis holds.
func FuzzDecodeEnvelope(f *testing.F) {
	for _, v := range []any{map[string]any{"a": []any{1, "b", nil}}, []byte("x"), 1.5, "text", map[int]bool{1: true}} {
		b, err := (*codec.Codec)(nil).Marshal(v)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	raw, _ := msgpack.Marshal(map[string]any{"k": "v"})
	f.Add(append([]byte{0x20}, raw...))
	f.Add(codec.Tombstone())
	f.Add([]byte{0x20, 0xdd, 0xff, 0xff, 0xff, 0xff}) // an array claiming 4G elements
	cd := newCodec(f)
	const maxOutput = 256
	f.Fuzz(func(t *testing.T, data []byte) {
		_, v, _, err := decodeEnvelope(cd, data, maxOutput)
		if err != nil {
			return
		}
		out, err := json.Marshal(v)
		if err != nil {
			t.Errorf("decodeEnvelope(%x) = %#v, which JSON cannot encode: %v", data, v, err)
		}
		// JSON escapes and the deepest nesting's indentation are not
		// counted exactly: the budget holds within a few times over.
		if len(out) > 8*maxOutput+1024 {
			t.Errorf("decodeEnvelope(%x) gives %d bytes of JSON; want about %d", data, len(out), maxOutput)
		}
	})
}
