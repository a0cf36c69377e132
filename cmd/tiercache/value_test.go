package main

import (
	"encoding/json"
	"math"
	"reflect"
	"testing"
	"time"

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
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			data, err := (*codec.Codec)(nil).Marshal(tt.give)
			if err != nil {
				t.Fatal(err)
			}
			env, got, err := decodeEnvelope(data)
			if err != nil {
				t.Fatalf("decodeEnvelope: %v", err)
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
	t.Run("ext", func(t *testing.T) {
		// An extension type the CLI does not know: shown, not decoded.
		body := []byte{0xd4, 0x05, 0x2a} // fixext1, type 5, payload 0x2a
		got, err := msgpackJSON(body)
		if want := map[string]any{"$ext": int8(5), "data": "Kg=="}; err != nil || !reflect.DeepEqual(got, want) {
			t.Errorf("msgpackJSON(ext) = %#v, %v; want %#v", got, err, want)
		}
	})
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
	f.Fuzz(func(t *testing.T, data []byte) {
		_, v, err := decodeEnvelope(data)
		if err != nil {
			return
		}
		if _, err := json.Marshal(v); err != nil {
			t.Errorf("decodeEnvelope(%x) = %#v, which JSON cannot encode: %v", data, v, err)
		}
	})
}
