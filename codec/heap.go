package codec

import (
	"encoding/binary"
	"fmt"
	"math"
	"reflect"
)

// Heap figures of the Go runtime (Go 1.24 and later, 64-bit) that the bound
// is made of. Boxed values are what msgpack's generic decoding stores in an
// interface.
const (
	boxString = 16 // a string header, boxed
	boxSlice  = 24 // a slice header, boxed
	boxTime   = 24 // a time.Time, boxed
	boxNumber = 16 // a number of 2 to 8 bytes, boxed: a tiny-allocator block at worst
	mapHeader = 48 // a map's header
	mapTable  = 48 // each table of up to 1024 slots: its header and directory entry
	mapGroup  = 8  // slots per group, each group led by 8 control bytes

	// timeZone is what time.Parse may allocate for the zone of a time
	// msgpack reads from a string (only at the top level: see DecodeTime).
	timeZone = 512

	// maxBound caps every limit so that sums of bounds cannot overflow.
	maxBound = math.MaxInt / 4
)

// msgpack v5 constants the bound mirrors.
const (
	sliceAllocLimit     = 1_000_000 // elements of a []string allocated before appending
	minInternedLen      = 3         // shortest string msgpack interns
	maxInternedStrings  = 65535     // most strings msgpack's decoder interns
	internedStringExtID = 0x80      // ext type of an interned-string index (int8 -128)
)

// allocSize is an upper bound of the heap an allocation of n bytes takes:
// the Go allocator rounds small sizes up to size classes at most a quarter
// apart (and 16 bytes, the tiny-allocator block, below 16) and large ones up
// to whole 8 KiB pages, never by more than a quarter above 32 KiB.
func allocSize(n int) int {
	if n <= 0 {
		return 0
	}
	return (n + n/4 + 15) &^ 15
}

// mapCost is an upper bound of the heap of a Go map of n entries, whose
// slots take slot bytes and whose entries take extra bytes each outside
// them. Swiss tables keep at least 7 entries in 16 slots once past one
// group of 8, whether sized by msgpack's hint or grown by insertion.
func mapCost(n, slot, extra int) int {
	cost := mapHeader
	if n == 0 {
		return cost
	}
	slots := mapGroup
	if n > mapGroup {
		slots = 16*n/7 + mapGroup
	}
	groups := (slots + mapGroup - 1) / mapGroup
	tables := (slots + 1023) / 1024
	return cost + allocSize(groups*(mapGroup+mapGroup*slot)) + tables*mapTable + allocSize(8*tables) + n*extra
}

// Object classes, as the bound tells msgpack objects apart.
const (
	objNil   = iota
	objFree  // bools, fixints, int8 and uint8: decoded in place or boxed for free
	objNum   // other numbers
	objStr   // n bytes at at
	objBin   // n bytes at at
	objExt   // n bytes at at, its type at at-1
	objArray // n elements from at
	objMap   // n entries from at
)

// head reads the header of the object at b[i], which validate has
// accepted. It returns the object's class; n, the length of a str, bin or
// ext payload, the elements of an array or the entries of a map (0 for other
// objects); and at, the offset of the payload or first element (of the next
// object for other objects).
func head(b []byte, i int) (cls, n, at int) {
	c := b[i]
	switch {
	case c < codeFixMap || c >= codeNegFix:
		return objFree, 0, i + 1
	case c < codeFixArray:
		return objMap, int(c & 0x0f), i + 1
	case c < codeFixStr:
		return objArray, int(c & 0x0f), i + 1
	case c < codeNil:
		return objStr, int(c & 0x1f), i + 1
	}
	switch c {
	case codeNil:
		return objNil, 0, i + 1
	case 0xc2, 0xc3: // false, true
		return objFree, 0, i + 1
	case 0xcc, 0xd0: // uint8, int8
		return objFree, 0, i + 2
	case 0xcd, 0xd1: // uint16, int16
		return objNum, 0, i + 3
	case 0xca, 0xce, 0xd2: // float32, uint32, int32
		return objNum, 0, i + 5
	case 0xcb, 0xcf, 0xd3: // float64, uint64, int64
		return objNum, 0, i + 9
	case 0xc4: // bin8
		return objBin, int(b[i+1]), i + 2
	case 0xc5:
		return objBin, int(binary.BigEndian.Uint16(b[i+1:])), i + 3
	case 0xc6:
		return objBin, int(binary.BigEndian.Uint32(b[i+1:])), i + 5
	case 0xd9: // str8
		return objStr, int(b[i+1]), i + 2
	case 0xda:
		return objStr, int(binary.BigEndian.Uint16(b[i+1:])), i + 3
	case 0xdb:
		return objStr, int(binary.BigEndian.Uint32(b[i+1:])), i + 5
	case 0xd4, 0xd5, 0xd6, 0xd7, 0xd8: // fixext1..16: code, type, payload
		return objExt, 1 << (c - 0xd4), i + 2
	case 0xc7: // ext8: code, length, type, payload
		return objExt, int(b[i+1]), i + 3
	case 0xc8:
		return objExt, int(binary.BigEndian.Uint16(b[i+1:])), i + 4
	case 0xc9:
		return objExt, int(binary.BigEndian.Uint32(b[i+1:])), i + 6
	case 0xdc: // array16
		return objArray, int(binary.BigEndian.Uint16(b[i+1:])), i + 3
	case 0xdd:
		return objArray, int(binary.BigEndian.Uint32(b[i+1:])), i + 5
	case codeMap16:
		return objMap, int(binary.BigEndian.Uint16(b[i+1:])), i + 3
	default: // map32; validate refuses 0xc1
		return objMap, int(binary.BigEndian.Uint32(b[i+1:])), i + 5
	}
}

// span locates an interned string in the body.
type span struct{ at, n int }

// walker computes the heap bound of a body that validate has accepted, so
// it trusts every length in it. Every method returns, with the offset after
// what it walked, a bound that it stops computing as soon as it exceeds
// limit (the offset is then meaningless).
type walker struct {
	b     []byte
	limit int
	dict  []span // the strings msgpack's decoder interns, in its order
}

// walk returns an upper bound of the heap that decoding the object at b[i]
// into a value of plan p makes that value hold, not counting the value
// itself, and the offset of the next object.
func (w *walker) walk(p *plan, i int) (cost, next int) {
	cls, n, at := head(w.b, i)
	if cls == objNil {
		return 0, at // every decoder turns nil into a zero value (or keeps the value)
	}
	for p.kind == planPointer {
		cost += p.alloc
		p = p.elem
	}
	switch p.kind {
	case planFree:
		if cls == objFree || cls == objNum {
			return cost, at
		}
	case planString, planBytes:
		if cls == objStr || cls == objBin {
			return cost + allocSize(n), at + n
		}
	case planInternStr:
		switch cls {
		case objStr, objBin:
			w.intern(n, at)
			return cost + allocSize(n), at + n
		case objExt:
			return cost, at + n // an index into the strings interned so far
		}
	case planByteArray:
		if cls == objStr || cls == objBin {
			return cost, at + n
		}
	case planStrings:
		if cls == objArray {
			// msgpack allocates up to sliceAllocLimit strings, then appends.
			elems := n
			if n > sliceAllocLimit {
				elems = n + n/4 + 256
			}
			return w.elems(p.elem, n, at, cost+w.allocN(elems, p.elem.size))
		}
	case planSlice:
		if cls == objArray {
			return w.elems(p.elem, n, at, cost+w.allocN(n, p.elem.size))
		}
	case planArray:
		if cls == objArray {
			return w.elems(p.elem, n, at, cost)
		}
	case planMap:
		if cls == objMap {
			return w.entries(p, n, at, cost)
		}
	case planInternAny:
		switch cls {
		case objStr, objBin:
			w.intern(n, at)
			if n > 0 {
				cost += boxString + allocSize(n)
			}
			return cost, at + n
		case objExt:
			return cost + boxString, at + n
		}
	case planStruct:
		switch cls {
		case objMap:
			return w.structMap(p, n, at, cost)
		case objArray:
			return w.structArray(p, n, at, cost)
		}
	case planTime:
		if cls == objExt {
			return cost, at + n
		}
		cost += timeZone
	case planRaw:
		// DecodeRaw appends the object's bytes to an empty slice.
		next = w.skip(i)
		return cost + allocSize(2*(next-i)), next
	case planCustom:
		// What a type's own decoder builds is unknown: charge a copy of
		// the encoding (DecodeRaw, DecodeBytes) and what msgpack's generic
		// decoding would build from it.
		c, next := w.generic(i)
		return cost + c + allocSize(2*(next-i)), next
	}
	// An interface, or an object msgpack refuses here: charging what it
	// would build in an interface keeps the bound an upper bound whatever
	// msgpack does with it.
	c, next := w.generic(i)
	return cost + c, next
}

// value is walk with the commonest objects first: nil, a number into a
// number, and a fixstr into a string.
func (w *walker) value(p *plan, i int) (cost, next int) {
	c := w.b[i]
	switch {
	case c == codeNil:
		return 0, i + 1
	case p.kind == planFree:
		if c < codeFixMap || c >= codeNegFix {
			return 0, i + 1
		}
		if c >= 0xca && c <= 0xd3 { // float32 to int64
			return 0, i + 1 + numWidth(c)
		}
	case p.kind == planString && c >= codeFixStr && c < codeNil:
		n := int(c & 0x1f)
		return allocSize(n), i + 1 + n
	}
	return w.walk(p, i)
}

// numWidth returns the bytes after code c, a float32, float64, uint or int
// of 8 to 64 bits.
func numWidth(c byte) int {
	switch c {
	case 0xcc, 0xd0:
		return 1
	case 0xcd, 0xd1:
		return 2
	case 0xca, 0xce, 0xd2:
		return 4
	}
	return 8
}

// allocN returns an upper bound of the heap of an array of n elements of
// size bytes, or more than w.limit.
func (w *walker) allocN(n, size int) int {
	if size > 0 && n > w.limit/size {
		return w.limit + 1
	}
	return allocSize(n * size)
}

// elems adds to cost the bound of decoding n elements from b[i] into values
// of plan p.
func (w *walker) elems(p *plan, n, i, cost int) (int, int) {
	for range n {
		if cost > w.limit {
			return cost, i
		}
		var c int
		c, i = w.value(p, i)
		cost += c
	}
	return cost, i
}

// entries adds to cost the bound of decoding n map entries from b[i] into
// the map of plan p.
func (w *walker) entries(p *plan, n, i, cost int) (int, int) {
	if p.extra > 0 && n > w.limit/p.extra {
		return w.limit + 1, i
	}
	cost += mapCost(n, p.slot, p.extra)
	for range n {
		if cost > w.limit {
			return cost, i
		}
		var k, v int
		k, i = w.value(p.key, i)
		v, i = w.value(p.elem, i)
		cost += k + v
	}
	return cost, i
}

// structMap adds to cost the bound of decoding n map entries from b[i]
// into the struct of plan p: msgpack skips the values of keys that name no
// field.
func (w *walker) structMap(p *plan, n, i, cost int) (int, int) {
	guess := 0 // msgpack writes fields in list order: the next key is likely list[guess]'s
	for range n {
		if cost > w.limit {
			return cost, i
		}
		var c int
		if guess < len(p.list) {
			if f := &p.list[guess]; w.hasKey(i, f) {
				guess++
				c, i = w.value(f.p, i+len(f.key))
				cost += c + f.hops
				continue
			}
		}
		f, next := w.field(p, i)
		if f == nil {
			i = w.skip(next)
			continue
		}
		if f.idx >= 0 {
			guess = f.idx + 1
		}
		c, i = w.value(f.p, next)
		cost += c + f.hops
	}
	return cost, i
}

// hasKey reports whether b[i:] starts with f's encoded key.
func (w *walker) hasKey(i int, f *field) bool {
	if f.keyMask != 0 && len(w.b)-i >= 8 {
		return binary.LittleEndian.Uint64(w.b[i:])&f.keyMask == f.keyBits
	}
	return f.key != "" && len(w.b)-i >= len(f.key) && string(w.b[i:i+len(f.key)]) == f.key
}

// field returns the field of struct plan p that the key at b[i] names, as
// msgpack reads a key (a str or bin, nil for the empty name, or the index of
// a string interned earlier), and the offset of the value. It returns a nil
// field for a key that names none (msgpack skips the value) or that msgpack
// refuses.
func (w *walker) field(p *plan, i int) (*field, int) {
	cls, n, at := head(w.b, i)
	var name []byte
	switch cls {
	case objStr, objBin:
		name = w.b[at : at+n]
	case objNil:
	case objExt:
		s, ok := w.interned(i)
		if !ok {
			return nil, at + n
		}
		name = w.b[s.at : s.at+s.n]
	case objArray, objMap:
		return nil, w.skip(i)
	default:
		return nil, at
	}
	return p.fields[string(name)], at + n
}

// structArray adds to cost the bound of decoding n elements from b[i] into
// the fields of the struct of plan p, in order. (msgpack refuses an array
// whose length is not the number of fields before decoding any.)
func (w *walker) structArray(p *plan, n, i, cost int) (int, int) {
	for k := range n {
		if cost > w.limit {
			return cost, i
		}
		if k >= len(p.list) {
			i = w.skip(i)
			continue
		}
		f := &p.list[k]
		var c int
		c, i = w.value(f.p, i)
		cost += c + f.hops
	}
	return cost, i
}

// generic returns the bound of msgpack's generic decoding of the object at
// b[i], into an empty interface.
func (w *walker) generic(i int) (int, int) {
	cls, n, at := head(w.b, i)
	switch cls {
	case objNum:
		return boxNumber, at
	case objStr:
		if n == 0 {
			return 0, at
		}
		return boxString + allocSize(n), at + n
	case objBin:
		return boxSlice + allocSize(n), at + n
	case objExt:
		switch w.b[at-1] {
		case 0xff: // a time
			return boxTime, at + n
		case internedStringExtID:
			return boxString, at + n
		}
		// Any other type decodes only if registered with
		// msgpack.RegisterExt, into what its UnmarshalMsgpack builds.
		return allocSize(2*n) + 64, at + n
	case objArray:
		cost := boxSlice + w.allocN(n, 16)
		i = at
		for range n {
			if cost > w.limit {
				return cost, i
			}
			var c int
			c, i = w.generic(i)
			cost += c
		}
		return cost, i
	case objMap:
		cost := mapCost(n, 32, 0) // string keys, interface values
		i = at
		for range n {
			if cost > w.limit {
				return cost, i
			}
			var k, v int
			if cls, m, a := head(w.b, i); cls == objStr || cls == objBin {
				k, i = allocSize(m), a+m
			} else {
				k, i = w.generic(i)
			}
			v, i = w.generic(i)
			cost += k + v
		}
		return cost, i
	}
	return 0, at // nil, bools, small numbers
}

// skip returns the offset after the object at b[i], which msgpack skips
// without allocating.
func (w *walker) skip(i int) int {
	for left := 1; left > 0; left-- {
		cls, n, at := head(w.b, i)
		switch cls {
		case objArray:
			left += n
			i = at
		case objMap:
			left += 2 * n
			i = at
		default:
			i = at + n
		}
	}
	return i
}

// intern records a string of n bytes at b[at] that msgpack's decoder
// interns.
func (w *walker) intern(n, at int) {
	if n >= minInternedLen && len(w.dict) < maxInternedStrings {
		w.dict = append(w.dict, span{at, n})
	}
}

// interned returns the string that the ext at b[i] refers to, if it is an
// interned-string index that msgpack's decoder would resolve.
func (w *walker) interned(i int) (span, bool) {
	var idx int
	switch w.b[i] {
	case 0xd4:
		idx = int(w.b[i+2])
	case 0xd5:
		idx = int(binary.BigEndian.Uint16(w.b[i+2:]))
	case 0xd6:
		idx = int(binary.BigEndian.Uint32(w.b[i+2:]))
	default:
		return span{}, false
	}
	if w.b[i+1] != internedStringExtID || idx >= len(w.dict) {
		return span{}, false
	}
	return w.dict[idx], true
}

// heapBound returns an upper bound of the heap that decoding body, which
// validate has accepted, into the value rv points to makes that value hold,
// or an error wrapping ErrTooComplex if the bound exceeds limit.
func (c *Codec) heapBound(st *decodeState, body []byte, rv reflect.Value, limit int) (int, error) {
	t := rv.Type().Elem()
	if t.Kind() == reflect.Interface && !rv.Elem().IsNil() {
		// msgpack decodes into the pointer an interface holds.
		if e := rv.Elem().Elem(); e.Kind() == reflect.Pointer && !e.IsNil() {
			t = e.Type().Elem()
		}
	}
	limit = min(limit, maxBound)
	w := walker{b: body, limit: limit, dict: st.dict[:0]}
	cost, _ := w.walk(c.plan(t), 0)
	st.dict = w.dict
	if cost > limit {
		return 0, fmt.Errorf("%w: decoding %d bytes of msgpack into %s would build more than %d bytes of heap (MaxHeap)", ErrTooComplex, len(body), t, limit)
	}
	return cost, nil
}

// plan returns the plan of t, cached in c.
func (c *Codec) plan(t reflect.Type) *plan {
	if c == nil {
		return newPlan(t)
	}
	if last := c.lastPlan.Load(); last != nil && last.typ == t {
		return last // a Codec usually decodes one type
	}
	p, ok := c.plans.Load(t)
	if !ok {
		p, _ = c.plans.LoadOrStore(t, newPlan(t))
	}
	c.lastPlan.Store(p.(*plan))
	return p.(*plan)
}
