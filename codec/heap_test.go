package codec

import (
	"bytes"
	"fmt"
	"maps"
	"reflect"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vmihailenco/msgpack/v5"
)

// heapUse is what decoding one value costs, measured.
type heapUse struct {
	retained  float64 // bytes of heap the decoded value holds
	allocated float64 // bytes allocated while decoding it
}

// measureHeap decodes data into k new values from newV and returns, per
// value, the heap still held once the garbage is collected and the bytes
// allocated meanwhile. Two collections before each reading empty the
// sync.Pools (msgpack's decoders, the Codec's buffers), so that what they
// keep counts on neither side.
func measureHeap(t *testing.T, c *Codec, data []byte, newV func() any, k int) heapUse {
	t.Helper()
	dsts := make([]any, k)
	for i := range dsts {
		dsts[i] = newV()
	}
	var before, decoded, after runtime.MemStats
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&before)
	for _, v := range dsts {
		if err := c.Unmarshal(data, v); err != nil {
			t.Fatalf("Unmarshal = %v", err)
		}
	}
	runtime.ReadMemStats(&decoded)
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&after)
	runtime.KeepAlive(dsts)
	return heapUse{
		retained:  (float64(after.HeapAlloc) - float64(before.HeapAlloc)) / float64(k),
		allocated: float64(decoded.TotalAlloc-before.TotalAlloc) / float64(k),
	}
}

// TestUnmarshalCostBoundsHeap checks, on ordinary values of every shape,
// that they decode as they were, that UnmarshalCost bounds the heap they
// hold once decoded (measured after collecting the garbage of decoding),
// and that the bound is not wild: at most twice what decoding allocates, as
// UnmarshalCost documents for such values. Sizes are averaged over enough
// copies for the runtime's own allocations to be noise.
func TestUnmarshalCostBoundsHeap(t *testing.T) {
	words := make([]string, 1000)
	counts := make(map[string]int)
	byID := make(map[int]string)
	ptrs := make([]*inner, 200)
	doc := make(map[string]any)
	for i := range 1000 {
		words[i] = fmt.Sprintf("word-%d", i)
		counts[fmt.Sprintf("key-%d", i)] = i * 1000
		byID[i] = fmt.Sprintf("v%d", i)
	}
	for i := range ptrs {
		ptrs[i] = &inner{ID: int64(i), Tags: []string{"x", "yy"}}
	}
	for i := range 300 {
		doc[fmt.Sprintf("k%d", i)] = []any{int64(i) * 1000, "str", 1.5, true, nil, map[string]any{"a": "b"}, []byte("xyz"), time.Unix(1, 2)}
	}
	ints := make([]int64, 10_000)
	for i := range ints {
		ints[i] = int64(i)
	}
	type interned struct {
		Name string `msgpack:"name,intern"`
		Kind any    `msgpack:"kind,intern"`
	}
	names := make([]interned, 500)
	for i := range names {
		names[i] = interned{Name: fmt.Sprintf("name-%d", i%50), Kind: fmt.Sprintf("kind-%d", i%7)}
	}
	bv := benchValues()

	tests := []struct {
		name string
		give any
	}{
		{"small record", bv[0].give},
		{"large record", bv[1].give},
		{"record with time, pointer, map and any", record{
			Name: "n", Raw: []byte("raw"), When: time.Unix(1700000000, 5), Inner: inner{ID: 1, Tags: []string{"a"}},
			Ptr: &inner{ID: 2}, Counts: map[string]int{"a": 1, "b": 2}, List: []float64{1, 2, 3}, Any: map[string]any{"x": "y"},
		}},
		{"strings", words},
		{"map of strings to ints", counts},
		{"map of ints to strings", byID},
		{"int64s", ints},
		{"pointers to structs", ptrs},
		{"interned strings", names},
		{"document into a map of any", doc},
		{"string", strings.Repeat("s", 100_000)},
		{"bytes", bytes.Repeat([]byte{7}, 1<<20)},
		{"strings past msgpack's preallocation", make([]string, 1_200_000)},
		{"recursive map", tree{"a": tree{"b": tree{"c": nil}}, "d": nil}},
		{"time", time.Unix(1700000000, 123)},
		{"nil pointer", (*inner)(nil)},
	}
	c := newCodec(t, Options{CompressAbove: -1})
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			data, err := c.Marshal(tt.give)
			if err != nil {
				t.Fatalf("Marshal = %v", err)
			}
			typ := reflect.TypeOf(tt.give)
			newV := func() any { return reflect.New(typ).Interface() }
			got := newV()
			bound, err := c.UnmarshalCost(data, got)
			if err != nil {
				t.Fatalf("UnmarshalCost = %v", err)
			}
			if !reflect.DeepEqual(reflect.ValueOf(got).Elem().Interface(), tt.give) {
				t.Errorf("decoded value differs from the encoded one")
			}
			untouched := newV()
			if cost, err := c.Cost(data, untouched); cost != bound || err != nil || !reflect.ValueOf(untouched).Elem().IsZero() {
				t.Errorf("Cost = %d, %v, and set the value: %v; want %d, nil, and leave it", cost, err, !reflect.ValueOf(untouched).Elem().IsZero(), bound)
			}
			total := 32 << 20 // bytes of decoded values to measure
			if raceEnabled {
				total = 4 << 20 // the race detector makes decoding slow
			}
			k := min(max(1, total/max(bound, 1)), 20_000)
			use := measureHeap(t, c, data, newV, k)
			t.Logf("%d B of msgpack: bound %d B, holds %.0f B, allocates %.0f B (bound/held %.2f, bound/allocated %.2f)",
				len(data)-1, bound, use.retained, use.allocated, float64(bound)/use.retained, float64(bound)/use.allocated)
			// The runtime allocates a little on its own (up to a few KiB
			// while collecting); over k copies it is noise.
			if noise := 16384 / float64(k); use.retained > float64(bound)+noise {
				t.Errorf("decoded value holds %.0f B; want at most the bound, %d B", use.retained, bound)
			}
			if float64(bound) > 2*use.allocated+256 {
				t.Errorf("bound %d B is more than twice what decoding allocates, %.0f B", bound, use.allocated)
			}
		})
	}
}

// TestUnmarshalCostDestinations checks how the bound follows the
// destination rather than the bytes: the same body costs what each type
// makes of it.
func TestUnmarshalCostDestinations(t *testing.T) {
	const n = 1000
	body := envelope(cat(array32(n), nils(n))...)
	tests := []struct {
		name    string
		into    any
		atLeast int
		atMost  int
	}{
		{"[]string", new([]string), 16 * n, allocSize(16 * n)},
		{"[]int8", new([]int8), n, allocSize(n)},
		{"[]bigItem", new([]bigItem), 1024 * n, allocSize(1024 * n)},
		{"[]*bigItem", new([]*bigItem), 8 * n, allocSize(8 * n)},
		{"[]any", new([]any), 16 * n, allocSize(16 * n)},
		{"any", new(any), 16*n + 24, allocSize(16*n) + boxSlice},
		{"[n]string, in place", new([n]string), 0, 0},
		{"any holding a *[]string", func() any { var a any = new([]string); return &a }(), 16 * n, allocSize(16 * n)},
	}
	c := newCodec(t, Options{})
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			heap, err := c.UnmarshalCost(body, tt.into)
			if err != nil || heap < tt.atLeast || heap > tt.atMost {
				t.Errorf("UnmarshalCost = %d, %v; want %d to %d, nil", heap, err, tt.atLeast, tt.atMost)
			}
		})
	}
	for _, give := range [][]byte{Tombstone(), envelope(codeNil)} {
		if heap, err := c.UnmarshalCost(give, new([]string)); heap != 0 || (err != nil && err != ErrTombstone) {
			t.Errorf("UnmarshalCost(% x) = %d, %v; want 0", give, heap, err)
		}
	}
}

// fieldNames returns the names that plan p decodes struct fields by.
func fieldNames(p *plan) []string {
	return slices.Sorted(maps.Keys(p.fields))
}

// Struct types whose field names exercise msgpack's naming rules. (msgpack
// cannot set the fields of an unexported embedded struct, so the embedded
// types are exported.)
type (
	Embedded struct {
		In   int `msgpack:"in"`
		Deep int `msgpack:"deep"`
	}
	EmbeddedTwice struct {
		In int `msgpack:"in"` // taken by Embedded: not inlined
	}
	Forced struct {
		In    int `msgpack:"in"` // taken: skipped
		Extra int `msgpack:"extra"`
	}
	tagged struct {
		A             int `msgpack:"a"`
		B             int `msgpack:"b,omitempty"`
		C             int `msgpack:"-"`
		D             int `msgpack:",omitempty"`
		E             int `msgpack:"e,alias:ee"`
		F             int `msgpack:"'f,g',omitempty"`
		G             int `msgpack:" spaced , omitempty"`
		H             int `msgpack:"alias:hh"`
		hidden        int
		Embedded                          // inlined: its fields, and its own name
		EmbeddedTwice                     // a name is taken: a field of its own
		Forced        `msgpack:",inline"` // inlined but for the taken name
		Kept          Embedded            `msgpack:",noinline"`
	}
	textual struct{ V string } // has its own decoder
	// withText embeds a type with its own decoder, whose methods it gets:
	// msgpack decodes it with them, as a whole.
	withText struct {
		textual
		N int
	}
)

func (t *textual) UnmarshalText(b []byte) error { t.V = string(b); return nil }
func (t textual) MarshalText() ([]byte, error)  { return []byte(t.V), nil }

// TestPlanFieldNames checks that plans name struct fields as msgpack does:
// every name the plan knows makes msgpack decode a field, no other does, and
// msgpack's encoder writes exactly the names of the plan's field list.
func TestPlanFieldNames(t *testing.T) {
	p := newPlan(reflect.TypeFor[tagged]())
	want := []string{"D", "Embedded", "EmbeddedTwice", "Forced", "H", "Kept", "a", "b", "deep", "e", "ee", "extra", "f,g", "hh", "in", "spaced"}
	if got := fieldNames(p); !slices.Equal(got, want) {
		t.Errorf("field names = %q; want %q", got, want)
	}

	full := tagged{A: 1, B: 1, C: 1, D: 1, E: 1, F: 1, G: 1, H: 1, hidden: 1, Embedded: Embedded{In: 1, Deep: 1},
		EmbeddedTwice: EmbeddedTwice{In: 1}, Forced: Forced{In: 1, Extra: 1}, Kept: Embedded{In: 1}}
	var listed []string
	for _, f := range p.list {
		if f.key != "" {
			var name string
			if err := msgpack.NewDecoder(strings.NewReader(f.key)).Decode(&name); err != nil {
				t.Fatalf("decode key %q: %v", f.key, err)
			}
			listed = append(listed, name)
		}
	}
	b, err := msgpack.Marshal(full)
	if err != nil {
		t.Fatal(err)
	}
	var written map[string]any
	if err := msgpack.NewDecoder(bytes.NewReader(b)).Decode(&written); err != nil {
		t.Fatal(err)
	}
	if got, want := slices.Sorted(maps.Keys(written)), slices.Sorted(slices.Values(listed)); !slices.Equal(got, want) {
		t.Errorf("msgpack writes names %q; the plan's list has %q", got, want)
	}

	// Decoding nil under a name zeroes the field it names: the struct
	// changes for the plan's names and for no other.
	others := []string{"A", "C", "E", "F", "G", "hidden", "-", "In", "Deep", "Extra", "'f", "g'", " spaced ", ""}
	for _, name := range slices.Concat(want, others) {
		body, err := msgpack.Marshal(map[string]any{name: nil})
		if err != nil {
			t.Fatal(err)
		}
		got := full
		if err := newCodec(t, Options{}).Unmarshal(envelope(body...), &got); err != nil {
			t.Fatalf("Unmarshal {%q: nil} = %v", name, err)
		}
		_, known := p.fields[name]
		if changed := !reflect.DeepEqual(got, full); changed != known {
			t.Errorf("decoding {%q: nil} changes the struct: %v; the plan knows the name: %v", name, changed, known)
		}
	}

	if p := newPlan(reflect.TypeFor[withText]()); p.kind != planCustom {
		t.Errorf("plan of a struct embedding a TextUnmarshaler has kind %d; want planCustom", p.kind)
	}
}

// TestPlanEmbeddedPointer checks that a field reached through an embedded
// pointer costs the struct msgpack allocates on the way. (Decoding one makes
// msgpack start a goroutine that never exits, so only the plan is checked.)
func TestPlanEmbeddedPointer(t *testing.T) {
	type outer struct {
		*bigItem
		Name string `msgpack:"name"`
	}
	p := newPlan(reflect.TypeFor[outer]())
	data, name := p.fields["data"], p.fields["name"]
	if data == nil || data.hops != allocSize(1024) || name == nil || name.hops != 0 {
		t.Errorf("fields data %+v, name %+v; want data through a %d B hop, name direct", data, name, allocSize(1024))
	}
}

func TestParseTag(t *testing.T) {
	tests := []struct {
		give     string
		wantName string
		wantOpts map[string]string
	}{
		{"", "", nil},
		{"name", "name", nil},
		{"-", "-", nil},
		{"name,omitempty", "name", map[string]string{"omitempty": ""}},
		{",omitempty", "", map[string]string{"omitempty": ""}},
		{"name,alias:other,intern", "name", map[string]string{"alias": "other", "intern": ""}},
		{"alias:x", "", map[string]string{"alias": "x"}},
		{"'a,b',inline", "a,b", map[string]string{"inline": ""}},
		{`'it\'s'`, "it's", nil},
		{" name , noinline ", "name", map[string]string{"noinline": ""}},
		{`n,v:(a,(b)),w:c\,d`, "n", map[string]string{"v": "(a,(b))", "w": "c,d"}},
		{"n,v:'x,y'", "n", map[string]string{"v": "x,y"}},
	}
	for _, tt := range tests {
		t.Run(tt.give, func(t *testing.T) {
			name, opts := parseTag(tt.give)
			if name != tt.wantName || !maps.Equal(opts, tt.wantOpts) {
				t.Errorf("parseTag(%q) = %q, %v; want %q, %v", tt.give, name, opts, tt.wantName, tt.wantOpts)
			}
		})
	}
}

// TestPlanPointerCycle checks that a pointer type leading back to itself
// does not send the bound into a loop. (msgpack itself recurses without
// end on such a type, so only the bound is computed.)
func TestPlanPointerCycle(t *testing.T) {
	type cycle *cycle
	var st decodeState
	if _, err := newCodec(t, Options{}).heapBound(&st, []byte{0x01}, reflect.ValueOf(new(cycle)), 1<<20); err != nil {
		t.Errorf("heapBound = %v; want nil", err)
	}
}

func TestAllocSize(t *testing.T) {
	// The size classes of the Go allocator up to 32 KiB, and a few large
	// sizes rounded to whole pages: allocSize must never be below them.
	classes := []int{8, 16, 24, 32, 48, 64, 80, 96, 112, 128, 144, 160, 176, 192, 208, 224, 240, 256, 288, 320, 352, 384, 416, 448, 480, 512,
		576, 640, 704, 768, 896, 1024, 1152, 1280, 1408, 1536, 1792, 2048, 2304, 2688, 3072, 3200, 3456, 4096, 4864, 5376, 6144, 6528, 6784,
		6912, 8192, 9472, 9728, 10240, 10880, 12288, 13568, 14336, 16384, 18432, 19072, 20480, 21760, 24576, 27264, 28672, 32768}
	rounded := func(n int) int {
		if i, _ := slices.BinarySearch(classes, n); i < len(classes) {
			return classes[i]
		}
		return (n + 8191) &^ 8191
	}
	for n := 1; n < 1<<20; n += 1 + n/64 {
		if got, want := allocSize(n), rounded(n); got < want {
			t.Fatalf("allocSize(%d) = %d; the allocator takes %d", n, got, want)
		}
	}
}
