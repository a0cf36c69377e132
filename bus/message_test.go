package bus

import (
	"bytes"
	"errors"
	"fmt"
	"reflect"
	"runtime"
	"strings"
	"testing"

	"github.com/vmihailenco/msgpack/v5"
)

// mp is msgpack.Marshal for building payloads the way another language would.
func mp(t testing.TB, v any) []byte {
	t.Helper()
	b, err := msgpack.Marshal(v)
	if err != nil {
		t.Fatalf("msgpack.Marshal(%v): %v", v, err)
	}
	return b
}

func cat(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

func TestMarshalRoundTrip(t *testing.T) {
	tests := []struct {
		name string
		give Message
		want Message
	}{
		{
			name: "keys",
			give: Message{Origin: "node-1", Keyspace: "users", Keys: []string{"42", "43"}},
			want: Message{Version: WireVersion, Origin: "node-1", Keyspace: "users", Keys: []string{"42", "43"}},
		},
		{
			name: "flush one keyspace",
			give: Message{Version: WireVersion, Keyspace: "users", Flush: true},
			want: Message{Version: WireVersion, Keyspace: "users", Flush: true},
		},
		{
			name: "flush every keyspace",
			give: Message{Flush: true},
			want: Message{Version: WireVersion, Flush: true},
		},
		{
			name: "tags only",
			give: Message{Keyspace: "products", Tags: []string{"category:7"}},
			want: Message{Version: WireVersion, Keyspace: "products", Tags: []string{"category:7"}},
		},
		{
			name: "empty slices read back as nil",
			give: Message{Keyspace: "users", Keys: []string{}, Tags: []string{"x"}},
			want: Message{Version: WireVersion, Keyspace: "users", Tags: []string{"x"}},
		},
		{
			name: "long strings and many keys use the wide headers",
			give: Message{Keyspace: strings.Repeat("k", 300), Keys: manyKeys(70_000, "")},
			want: Message{Version: WireVersion, Keyspace: strings.Repeat("k", 300), Keys: manyKeys(70_000, "")},
		},
		{
			name: "filled keys",
			give: Message{Origin: "node-1", Keyspace: "users", Keys: []string{"42"}, Filled: true},
			want: Message{Version: WireVersion, Origin: "node-1", Keyspace: "users", Keys: []string{"42"}, Filled: true},
		},
		{
			name: "a flush with a generation",
			give: Message{Origin: "node-1", Keyspace: "users", Flush: true, Gen: 1 << 40},
			want: Message{Version: WireVersion, Origin: "node-1", Keyspace: "users", Flush: true, Gen: 1 << 40},
		},
		{
			name: "tags whose keys follow",
			give: Message{Origin: "node-1", Keyspace: "users", Tags: []string{"t"}, KeysFollow: true},
			want: Message{Version: WireVersion, Origin: "node-1", Keyspace: "users", Tags: []string{"t"}, KeysFollow: true},
		},
		{
			name: "a canary",
			give: Message{Origin: "cli", Canary: "c0ffee"},
			want: Message{Version: WireVersion, Origin: "cli", Canary: "c0ffee"},
		},
		{
			name: "numbered in a slot's log",
			give: Message{Origin: "node-1", Keyspace: "users", Keys: []string{"42"}, Seq: 1_733_000_000_000_123, Log: "a1"},
			want: Message{Version: WireVersion, Origin: "node-1", Keyspace: "users", Keys: []string{"42"}, Seq: 1_733_000_000_000_123, Log: "a1"},
		},
		{
			name: "a 70 KB key",
			give: Message{Keyspace: "blobs", Keys: []string{strings.Repeat("b", 70_000)}},
			want: Message{Version: WireVersion, Keyspace: "blobs", Keys: []string{strings.Repeat("b", 70_000)}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := tt.give.Marshal()
			if err != nil {
				t.Fatalf("Marshal: %v", err)
			}
			got, err := Unmarshal(b, Limits{})
			if err != nil {
				t.Fatalf("Unmarshal: %v", err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Unmarshal(Marshal(%.60v)) = %.60v; want %.60v", tt.give, got, tt.want)
			}
			// msgpack itself reads the same thing: the format is plain msgpack.
			var plain Message
			if err := msgpack.Unmarshal(b, &plain); err != nil {
				t.Fatalf("msgpack.Unmarshal: %v", err)
			}
			if !reflect.DeepEqual(plain, tt.want) {
				t.Errorf("msgpack.Unmarshal = %.60v; want %.60v", plain, tt.want)
			}
		})
	}
}

func manyKeys(n int, prefix string) []string {
	keys := make([]string, n)
	for i := range keys {
		keys[i] = fmt.Sprint(prefix, i)
	}
	return keys
}

func TestMarshalWireFields(t *testing.T) {
	b, err := Message{Origin: "a", Keyspace: "users", Keys: []string{"1"}, Tags: []string{"t"}, Flush: true}.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	var got map[string]any
	if err := msgpack.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{
		"v": int8(1), "o": "a", "ks": "users",
		"k": []any{"1"}, "t": []any{"t"}, "f": true,
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("wire map = %#v; want %#v", got, want)
	}
}

// A filled message carries "fl": true and nothing else new; a message that
// is not filled carries no "fl" at all, so old subscribers see no change.
func TestMarshalFilledField(t *testing.T) {
	tests := []struct {
		name string
		give Message
		want map[string]any
	}{
		{
			name: "filled",
			give: Message{Origin: "a", Keyspace: "users", Keys: []string{"1"}, Filled: true},
			want: map[string]any{"v": int8(1), "o": "a", "ks": "users", "k": []any{"1"}, "fl": true},
		},
		{
			name: "canary",
			give: Message{Origin: "a", Canary: "c1"},
			want: map[string]any{"v": int8(1), "o": "a", "ks": "", "cn": "c1"},
		},
		{
			name: "numbered",
			give: Message{Origin: "a", Keyspace: "users", Keys: []string{"1"}, Seq: 7, Log: "x"},
			want: map[string]any{"v": int8(1), "o": "a", "ks": "users", "k": []any{"1"}, "sq": uint64(7), "lg": "x"},
		},
		{
			name: "not filled",
			give: Message{Origin: "a", Keyspace: "users", Keys: []string{"1"}},
			want: map[string]any{"v": int8(1), "o": "a", "ks": "users", "k": []any{"1"}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := tt.give.Marshal()
			if err != nil {
				t.Fatal(err)
			}
			var got map[string]any
			if err := msgpack.Unmarshal(b, &got); err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("wire map = %#v; want %#v", got, tt.want)
			}
		})
	}
}

func TestMarshalErrors(t *testing.T) {
	tests := []struct {
		name string
		give Message
		want error
	}{
		{name: "unknown version", give: Message{Version: 2, Keyspace: "u", Keys: []string{"1"}}, want: ErrVersion},
		{name: "no keyspace", give: Message{Keys: []string{"1"}}, want: ErrMalformed},
		{name: "nothing to evict", give: Message{Keyspace: "u"}, want: ErrMalformed},
		{name: "too many keys", give: Message{Keyspace: "u", Keys: make([]string, DefaultMaxKeys+1)}, want: ErrTooLarge},
		{name: "too many tags", give: Message{Keyspace: "u", Tags: make([]string, DefaultMaxKeys+1)}, want: ErrTooLarge},
		{name: "too many bytes", give: Message{Keyspace: "u", Keys: []string{strings.Repeat("x", DefaultMaxBytes)}}, want: ErrTooLarge},
		{name: "filled with flush", give: Message{Keyspace: "u", Keys: []string{"1"}, Flush: true, Filled: true}, want: ErrMalformed},
		{name: "filled with tags", give: Message{Keyspace: "u", Keys: []string{"1"}, Tags: []string{"t"}, Filled: true}, want: ErrMalformed},
		{name: "filled without keys", give: Message{Keyspace: "u", Filled: true}, want: ErrMalformed},
		{name: "filled without keyspace", give: Message{Keys: []string{"1"}, Filled: true}, want: ErrMalformed},
		{name: "keys follow without tags", give: Message{Keyspace: "u", Keys: []string{"1"}, KeysFollow: true}, want: ErrMalformed},
		{name: "a generation without flush", give: Message{Keyspace: "u", Keys: []string{"1"}, Gen: 3}, want: ErrMalformed},
		{name: "a canary with keys", give: Message{Keyspace: "u", Keys: []string{"1"}, Canary: "c"}, want: ErrMalformed},
		{name: "a canary with a flush", give: Message{Flush: true, Canary: "c"}, want: ErrMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := tt.give.Marshal()
			if !errors.Is(err, tt.want) {
				t.Errorf("Marshal = %v; want %v", err, tt.want)
			}
			if err != nil && !strings.HasPrefix(err.Error(), "bus: ") {
				t.Errorf("error %q lacks the bus: prefix", err)
			}
		})
	}
}

func TestUnmarshal(t *testing.T) {
	valid := func(m Message) Message { m.Version = WireVersion; return m }
	deep := func(n int) []byte { // {"v":1,"ks":"u","k":["1"],"x":[[[...]]]}
		b := []byte{0x84}
		b = cat(b, mp(t, "v"), mp(t, 1), mp(t, "ks"), mp(t, "u"), mp(t, "k"), mp(t, []string{"1"}), mp(t, "x"))
		b = append(b, bytes.Repeat([]byte{0x91}, n)...)
		return append(b, 0xc0)
	}
	tests := []struct {
		name    string
		give    []byte
		lim     Limits
		want    Message
		wantErr error
	}{
		{
			name: "as another language builds it",
			give: mp(t, map[string]any{"v": 1, "ks": "users", "k": []string{"42"}}),
			want: valid(Message{Keyspace: "users", Keys: []string{"42"}}),
		},
		{
			name: "unsigned version, bin strings, nil origin",
			give: cat([]byte{0x84}, mp(t, "v"), []byte{0xcc, 0x01}, mp(t, "o"), []byte{0xc0},
				mp(t, "ks"), mp(t, []byte("users")), mp(t, "k"), mp(t, [][]byte{[]byte("7")})),
			want: valid(Message{Keyspace: "users", Keys: []string{"7"}}),
		},
		{
			name: "unknown fields of every kind are skipped",
			give: mp(t, map[string]any{
				"v": 1, "ks": "u", "k": []string{"1"},
				"x1": map[string]any{"a": []any{1, -200, 3.5, float32(1.5), "s", []byte{1}, nil, true, uint64(1 << 40)}},
				"x2": msgpack.RawMessage{0xd6, 0x01, 1, 2, 3, 4}, // fixext4
				"x3": msgpack.RawMessage{0xc7, 0x02, 0x05, 1, 2}, // ext8
				"x4": strings.Repeat("z", 70_000),
			}),
			want: valid(Message{Keyspace: "u", Keys: []string{"1"}}),
		},
		{
			name: "deeply nested unknown field",
			give: deep(200_000),
			want: valid(Message{Keyspace: "u", Keys: []string{"1"}}),
		},
		{
			name: "empty keys with flush",
			give: mp(t, map[string]any{"v": 1, "ks": "u", "k": []string{}, "f": true}),
			want: valid(Message{Keyspace: "u", Flush: true}),
		},
		{
			name: "filled, as another language builds it",
			give: mp(t, map[string]any{"v": 1, "ks": "users", "k": []string{"42"}, "fl": true}),
			want: valid(Message{Keyspace: "users", Keys: []string{"42"}, Filled: true}),
		},
		{
			name: "filled false on the wire",
			give: mp(t, map[string]any{"v": 1, "ks": "users", "k": []string{"42"}, "fl": false}),
			want: valid(Message{Keyspace: "users", Keys: []string{"42"}}),
		},
		{
			name: "filled beside an unknown field",
			give: mp(t, map[string]any{"v": 1, "ks": "users", "k": []string{"42"}, "fl": true, "fx": []any{1, "x"}}),
			want: valid(Message{Keyspace: "users", Keys: []string{"42"}, Filled: true}),
		},
		{name: "filled not bool", give: mp(t, map[string]any{"v": 1, "ks": "u", "k": []string{"1"}, "fl": 1}), wantErr: ErrMalformed},
		{name: "filled with flush", give: mp(t, map[string]any{"v": 1, "ks": "u", "k": []string{"1"}, "f": true, "fl": true}), wantErr: ErrMalformed},
		{name: "filled with tags", give: mp(t, map[string]any{"v": 1, "ks": "u", "k": []string{"1"}, "t": []string{"x"}, "fl": true}), wantErr: ErrMalformed},
		{name: "filled without keys", give: mp(t, map[string]any{"v": 1, "ks": "u", "fl": true}), wantErr: ErrMalformed},
		{name: "filled of version 2", give: mp(t, map[string]any{"v": 2, "ks": "u", "fl": "yes"}), wantErr: ErrVersion},
		{name: "empty", give: nil, wantErr: ErrMalformed},
		{name: "garbage", give: []byte("hello, world"), wantErr: ErrMalformed},
		{name: "not a map", give: mp(t, []int{1, 2}), wantErr: ErrMalformed},
		{name: "nil", give: []byte{0xc0}, wantErr: ErrMalformed},
		{name: "no version", give: mp(t, map[string]any{"ks": "u", "k": []string{"1"}}), wantErr: ErrMalformed},
		{name: "version 2", give: mp(t, map[string]any{"v": 2, "ks": "u", "k": []string{"1"}}), wantErr: ErrVersion},
		{name: "version 0", give: mp(t, map[string]any{"v": 0, "ks": "u", "k": []string{"1"}}), wantErr: ErrVersion},
		{name: "negative version", give: mp(t, map[string]any{"v": -1, "ks": "u", "k": []string{"1"}}), wantErr: ErrVersion},
		{
			name:    "version 2 with fields of other types",
			give:    mp(t, map[string]any{"v": 2, "ks": 5, "k": map[string]int{"a": 1}}),
			wantErr: ErrVersion,
		},
		{name: "float version", give: mp(t, map[string]any{"v": 1.0, "ks": "u", "k": []string{"1"}}), wantErr: ErrMalformed},
		{name: "keys not strings", give: mp(t, map[string]any{"v": 1, "ks": "u", "k": []int{1}}), wantErr: ErrMalformed},
		{name: "flush not bool", give: mp(t, map[string]any{"v": 1, "f": 1}), wantErr: ErrMalformed},
		{name: "nothing to evict", give: mp(t, map[string]any{"v": 1, "ks": "u"}), wantErr: ErrMalformed},
		{name: "no keyspace", give: mp(t, map[string]any{"v": 1, "k": []string{"1"}}), wantErr: ErrMalformed},
		{name: "trailing bytes", give: cat(mp(t, map[string]any{"v": 1, "ks": "u", "k": []string{"1"}}), []byte{0}), wantErr: ErrMalformed},
		{name: "truncated", give: mp(t, map[string]any{"v": 1, "ks": "u", "k": []string{"1"}})[:10], wantErr: ErrMalformed},
		{name: "map32 claiming 4G entries", give: []byte{0xdf, 0xff, 0xff, 0xff, 0xff}, wantErr: ErrMalformed},
		{name: "str32 key claiming 4 GB", give: []byte{0x81, 0xdb, 0xff, 0xff, 0xff, 0xff}, wantErr: ErrMalformed},
		{
			name:    "array32 claiming 4G keys",
			give:    cat([]byte{0x82}, mp(t, "v"), mp(t, 1), mp(t, "k"), []byte{0xdd, 0xff, 0xff, 0xff, 0xff}),
			wantErr: ErrTooLarge,
		},
		{
			name:    "array claiming more keys than bytes",
			give:    cat([]byte{0x82}, mp(t, "v"), mp(t, 1), mp(t, "k"), []byte{0xdc, 0x10, 0x00, 0xa0}),
			wantErr: ErrMalformed,
		},
		{
			name:    "unknown array32 claiming 4G items",
			give:    cat([]byte{0x82}, mp(t, "v"), mp(t, 1), mp(t, "x"), []byte{0xdd, 0xff, 0xff, 0xff, 0xff}),
			wantErr: ErrMalformed,
		},
		{
			name:    "unknown map32 claiming 4G entries",
			give:    cat([]byte{0x82}, mp(t, "v"), mp(t, 1), mp(t, "x"), []byte{0xdf, 0xff, 0xff, 0xff, 0xff}),
			wantErr: ErrMalformed,
		},
		{
			name:    "unknown ext32 claiming 4 GB",
			give:    cat([]byte{0x82}, mp(t, "v"), mp(t, 1), mp(t, "x"), []byte{0xc9, 0xff, 0xff, 0xff, 0xff, 0x01}),
			wantErr: ErrMalformed,
		},
		{name: "reserved code", give: cat([]byte{0x82}, mp(t, "v"), mp(t, 1), mp(t, "x"), []byte{0xc1}), wantErr: ErrMalformed},
		{
			name:    "more keys than MaxKeys",
			give:    mp(t, map[string]any{"v": 1, "ks": "u", "k": []string{"1", "2", "3"}}),
			lim:     Limits{MaxKeys: 2},
			wantErr: ErrTooLarge,
		},
		{
			name:    "more tags than MaxKeys",
			give:    mp(t, map[string]any{"v": 1, "ks": "u", "t": []string{"1", "2", "3"}}),
			lim:     Limits{MaxKeys: 2},
			wantErr: ErrTooLarge,
		},
		{
			name:    "more bytes than MaxBytes",
			give:    mp(t, map[string]any{"v": 1, "ks": "u", "k": []string{"1"}}),
			lim:     Limits{MaxBytes: 8},
			wantErr: ErrTooLarge,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Unmarshal(tt.give, tt.lim)
			if !errors.Is(err, tt.wantErr) || (tt.wantErr == nil && err != nil) {
				t.Fatalf("Unmarshal = %v; want error %v", err, tt.wantErr)
			}
			if err != nil && !strings.HasPrefix(err.Error(), "bus: ") {
				t.Errorf("error %q lacks the bus: prefix", err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Unmarshal = %+v; want %+v", got, tt.want)
			}
		})
	}
}

// TestUnmarshalAllocs checks that hostile headers cost nothing, whatever
// they claim, and that a decoded message costs a small multiple of its size.
func TestUnmarshalAllocs(t *testing.T) {
	prefix := cat([]byte{0x82}, mp(t, "v"), mp(t, 1))
	tests := []struct {
		name string
		give []byte
		want uint64 // bytes allocated per call, at most
	}{
		{name: "str32 claiming 4 GB", give: cat(prefix, mp(t, "x"), []byte{0xdb, 0xff, 0xff, 0xff, 0xff}), want: 1024},
		{name: "array32 claiming 4G keys", give: cat(prefix, mp(t, "k"), []byte{0xdd, 0xff, 0xff, 0xff, 0xff}), want: 1024},
		{name: "array16 of 65535 keys in 30 bytes", give: cat(prefix, mp(t, "k"), []byte{0xdc, 0xff, 0xff}, make([]byte, 20)), want: 1024},
		{name: "1000 keys", give: mp(t, map[string]any{"v": 1, "ks": "u", "k": manyKeys(1000, "")}), want: 16*1000 + 2*4000 + 1024},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := allocBytes(func() { Unmarshal(tt.give, Limits{}) }); got > tt.want {
				t.Errorf("Unmarshal allocates %d bytes; want <= %d", got, tt.want)
			}
		})
	}
}

// allocBytes returns the bytes f allocates, averaged over 100 calls.
func allocBytes(f func()) uint64 {
	const runs = 100
	f() // warm up pools
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for range runs {
		f()
	}
	runtime.ReadMemStats(&after)
	return (after.TotalAlloc - before.TotalAlloc) / runs
}

func FuzzDecodeInvalidation(f *testing.F) {
	for _, m := range []Message{
		{Keyspace: "users", Keys: []string{"42"}},
		{Origin: "node-1", Keyspace: "users", Keys: []string{"1", "2", "3"}, Tags: []string{"t"}},
		{Flush: true},
		{Keyspace: "u", Flush: true},
		{Origin: "node-2", Keyspace: "users", Keys: []string{"7", "8"}, Filled: true},
		{Origin: "node-2", Keyspace: "users", Tags: []string{"red"}, KeysFollow: true},
	} {
		b, err := m.Marshal()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add(mp(f, map[string]any{"v": 1, "ks": "users", "k": []string{"42"}, "x": []any{map[string]any{"y": nil}}}))
	f.Add(mp(f, map[string]any{"v": 2, "ks": "users", "k": []string{"42"}}))
	f.Add(mp(f, map[string]any{"v": 1, "ks": "users", "k": []string{"42"}, "fl": false}))
	f.Add(mp(f, map[string]any{"v": 1, "ks": "users", "k": []string{"42"}, "fl": true, "f": true}))
	f.Add(mp(f, map[string]any{"v": 1, "ks": "users", "fl": 1}))
	f.Add([]byte{})
	f.Add([]byte("garbage"))
	f.Add([]byte{0xc1})
	f.Add([]byte{0xdf, 0xff, 0xff, 0xff, 0xff}) // map32
	f.Add([]byte{0xdd, 0xff, 0xff, 0xff, 0xff}) // array32
	f.Add([]byte{0xdb, 0xff, 0xff, 0xff, 0xff}) // str32
	f.Add([]byte{0xc6, 0xff, 0xff, 0xff, 0xff}) // bin32
	f.Add([]byte{0x81, 0xa1, 'k', 0xdd, 0xff, 0xff, 0xff, 0xff})
	f.Add([]byte{0x81, 0xa1, 'x', 0xdf, 0xff, 0xff, 0xff, 0xff})
	f.Add(append([]byte{0x81, 0xa1, 'x'}, bytes.Repeat([]byte{0x91}, 10_000)...))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := Unmarshal(b, Limits{})
		if err != nil {
			if !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrVersion) && !errors.Is(err, ErrTooLarge) {
				t.Fatalf("Unmarshal error %v is none of the sentinels", err)
			}
			return
		}
		b2, err := m.Marshal()
		if err != nil {
			t.Fatalf("Marshal(%+v) of a decoded message: %v", m, err)
		}
		m2, err := Unmarshal(b2, Limits{})
		if err != nil {
			t.Fatalf("Unmarshal(Marshal(%+v)): %v", m, err)
		}
		if !reflect.DeepEqual(m, m2) {
			t.Fatalf("round trip = %+v; want %+v", m2, m)
		}
	})
}

func ExampleUnmarshal() {
	// What another service, in any language, publishes to evict users 42
	// and 43: a msgpack map with short field names.
	b, _ := msgpack.Marshal(map[string]any{"v": 1, "ks": "users", "k": []string{"42", "43"}})
	m, err := Unmarshal(b, Limits{})
	fmt.Println(m.Keyspace, m.Keys, err)
	// Output: users [42 43] <nil>
}
