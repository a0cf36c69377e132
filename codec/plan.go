package codec

import (
	"encoding"
	"encoding/binary"
	"math"
	"reflect"
	"strings"
	"time"

	"github.com/vmihailenco/msgpack/v5"
)

// A plan says how msgpack v5 decodes into one Go type, as far as the heap
// bound needs to know: which decoder it picks (in the order msgpack's
// getDecoder tries them), the size of an element, and what the type's
// elements, entries or fields decode into. Plans are built once per
// destination type and are immutable afterwards; recursive types make
// cyclic plans.
type plan struct {
	typ   reflect.Type
	kind  planKind
	size  int   // bytes of a value of the type, as reflect.Type.Size
	alloc int   // planPointer: heap of the new pointee
	elem  *plan // planSlice, planStrings, planArray, planPointer: element; planMap: value
	key   *plan // planMap: key
	slot  int   // planMap: bytes of one slot (key and value, or pointers to them)
	extra int   // planMap: heap of each entry's key or value too big for a slot

	fields map[string]*field // planStruct: by msgpack name, aliases and inlined names included
	list   []field           // planStruct: msgpack's field list, for structs encoded as arrays
}

// planKind is the decoder msgpack uses for a type.
type planKind uint8

const (
	planFree      planKind = iota // bools and numbers, decoded in place (also chans and funcs, which msgpack refuses)
	planString                    // string kinds
	planInternStr                 // a string field tagged intern
	planBytes                     // slices of a uint8 kind
	planByteArray                 // arrays of a uint8 kind, decoded in place
	planStrings                   // slices of string: appended one by one
	planSlice                     // other slices: allocated at the claimed length
	planArray                     // other arrays, decoded in place
	planMap                       // maps
	planPointer                   // pointers: a new pointee unless nil
	planAny                       // interfaces: msgpack's generic decoding
	planInternAny                 // an interface field tagged intern
	planStruct                    // structs by field name, or as arrays
	planTime                      // time.Time: msgpack's registered ext decoder
	planRaw                       // msgpack.RawMessage: a copy of the encoding
	planCustom                    // a type with a decoder of its own
)

// field is where a struct field's value goes.
type field struct {
	p    *plan
	hops int    // heap of the nil embedded struct pointers msgpack allocates on the way
	key  string // in plan.list: the msgpack encoding of the name that maps to this field, if one does
	idx  int    // the field's index in plan.list, or -1

	// A key of up to 8 bytes, as the bits of a little-endian uint64 and
	// the mask of its bytes (0 for longer keys).
	keyBits, keyMask uint64
}

// planner builds the plans of one destination type and of the types it
// reaches.
type planner struct {
	plans map[reflect.Type]*plan
	depth int // of struct inlining, to stop on a type that embeds itself
}

// newPlan returns the plan of t.
func newPlan(t reflect.Type) *plan {
	pl := planner{plans: make(map[reflect.Type]*plan)}
	p := pl.of(t)
	// msgpack cannot decode a pointer type that leads back to itself
	// (type P *P); keep the bound from following one forever.
	for _, q := range pl.plans {
		r := q
		for steps := 0; r.kind == planPointer; steps++ {
			if steps > len(pl.plans) {
				q.kind = planAny
				break
			}
			r = r.elem
		}
	}
	return p
}

// of returns the plan of t, building it the first time.
func (pl *planner) of(t reflect.Type) *plan {
	if p, ok := pl.plans[t]; ok {
		return p
	}
	p := &plan{typ: t, size: int(t.Size())}
	pl.plans[t] = p // before filling it in: t may reach itself
	pl.fill(p, t)
	return p
}

// fill sets p to the plan of t.
func (pl *planner) fill(p *plan, t reflect.Type) {
	switch t {
	case reflect.TypeFor[time.Time]():
		p.kind = planTime
		return
	case reflect.TypeFor[msgpack.RawMessage]():
		p.kind = planRaw
		return
	}
	kind := t.Kind()
	if kind == reflect.Pointer {
		p.kind, p.elem, p.alloc = planPointer, pl.of(t.Elem()), allocSize(int(t.Elem().Size()))
		return
	}
	if hasDecoder(t) || hasDecoder(reflect.PointerTo(t)) {
		p.kind = planCustom
		return
	}
	switch kind {
	case reflect.String:
		p.kind = planString
	case reflect.Slice:
		switch {
		case t.Elem().Kind() == reflect.Uint8:
			p.kind = planBytes
		case t.Elem() == reflect.TypeFor[string]():
			p.kind, p.elem = planStrings, pl.of(t.Elem())
		default:
			p.kind, p.elem = planSlice, pl.of(t.Elem())
		}
	case reflect.Array:
		if t.Elem().Kind() == reflect.Uint8 {
			p.kind = planByteArray
		} else {
			p.kind, p.elem = planArray, pl.of(t.Elem())
		}
	case reflect.Map:
		p.kind, p.key, p.elem = planMap, pl.of(t.Key()), pl.of(t.Elem())
		p.slot, p.extra = mapSlot(t.Key(), t.Elem())
	case reflect.Interface:
		p.kind = planAny
	case reflect.Struct:
		p.kind = planStruct
		p.fields, p.list = pl.structFields(t)
	default:
		p.kind = planFree
	}
}

// hasDecoder reports whether msgpack decodes t with one of the decoders a
// type can bring: CustomDecoder, Unmarshaler, encoding.BinaryUnmarshaler or
// encoding.TextUnmarshaler.
func hasDecoder(t reflect.Type) bool {
	return t.Implements(reflect.TypeFor[msgpack.CustomDecoder]()) ||
		t.Implements(reflect.TypeFor[msgpack.Unmarshaler]()) ||
		t.Implements(reflect.TypeFor[encoding.BinaryUnmarshaler]()) ||
		t.Implements(reflect.TypeFor[encoding.TextUnmarshaler]())
}

// hasEncoder is hasDecoder for encoders.
func hasEncoder(t reflect.Type) bool {
	return t.Implements(reflect.TypeFor[msgpack.CustomEncoder]()) ||
		t.Implements(reflect.TypeFor[msgpack.Marshaler]()) ||
		t.Implements(reflect.TypeFor[encoding.BinaryMarshaler]()) ||
		t.Implements(reflect.TypeFor[encoding.TextMarshaler]())
}

// plainStruct reports whether msgpack encodes and decodes t, a struct type,
// field by field: what it requires of an embedded struct before inlining
// its fields.
func plainStruct(t reflect.Type) bool {
	return t.Kind() == reflect.Struct && t != reflect.TypeFor[time.Time]() &&
		!hasDecoder(t) && !hasDecoder(reflect.PointerTo(t)) &&
		!hasEncoder(t) && !hasEncoder(reflect.PointerTo(t))
}

// namedField is a field of msgpack's set, with its name.
type namedField struct {
	name   string
	f      field
	listed bool // in the list, not only in the map
}

// structFields returns the fields of struct type t by the names msgpack
// decodes them by, and msgpack's list of them in order. It follows
// msgpack's rules: the msgpack tag names a field ("-" skips it) and may
// give an alias; unexported fields are skipped unless embedded; an embedded
// struct, or pointer to one, that msgpack handles field by field is inlined
// (its fields join the outer ones) unless tagged noinline or unless one of
// its names is taken, and always when tagged inline, skipping the taken
// names.
//
// Each field of the list records the name that maps to it, so that keys
// can be matched in msgpack's order before being looked up.
func (pl *planner) structFields(t reflect.Type) (map[string]*field, []field) {
	named := pl.namedFields(t)
	list := make([]field, len(named.list))
	byName := make(map[string]*field, len(named.all))
	k := 0
	for _, nf := range named.all {
		if nf.listed {
			list[k] = nf.f
			list[k].idx = k
			byName[nf.name] = &list[k]
			k++
			continue
		}
		f := nf.f
		f.idx = -1
		byName[nf.name] = &f
	}
	for k, nf := range named.list {
		if byName[nf.name] == &list[k] {
			key := encodedName(nf.name)
			list[k].key = key
			if len(key) <= 8 {
				var b [8]byte
				copy(b[:], key)
				list[k].keyBits = binary.LittleEndian.Uint64(b[:])
				list[k].keyMask = math.MaxUint64 >> (64 - 8*len(key))
			}
		}
	}
	return byName, list
}

// encodedName returns name encoded as msgpack's encoder writes a string.
func encodedName(name string) string {
	n := len(name)
	var h []byte
	switch {
	case n < 32:
		h = []byte{codeFixStr | byte(n)}
	case n <= math.MaxUint8:
		h = []byte{0xd9, byte(n)}
	case n <= math.MaxUint16:
		h = binary.BigEndian.AppendUint16([]byte{0xda}, uint16(n))
	default:
		h = binary.BigEndian.AppendUint32([]byte{0xdb}, uint32(n))
	}
	return string(h) + name
}

// fieldSet is msgpack's field set of a struct: all holds, in the order
// msgpack adds them (later entries win), the names of the field map; list
// the field list.
type fieldSet struct {
	all  []namedField
	list []namedField
}

func (fs *fieldSet) has(name string) bool {
	for _, nf := range fs.all {
		if nf.name == name {
			return true
		}
	}
	return false
}

// add adds nf to the map and the list.
func (fs *fieldSet) add(nf namedField) {
	nf.listed = true
	fs.all = append(fs.all, nf)
	fs.list = append(fs.list, nf)
}

// maxInlineDepth stops inlining a struct that embeds itself through
// pointers (msgpack itself recurses without end on such a type).
const maxInlineDepth = 32

// namedFields returns msgpack's field set of struct type t.
func (pl *planner) namedFields(t reflect.Type) fieldSet {
	var fs fieldSet
	pl.depth++
	defer func() { pl.depth-- }()
	for i := range t.NumField() {
		sf := t.Field(i)
		name, opts := parseTag(sf.Tag.Get("msgpack"))
		if name == "-" {
			continue
		}
		if !sf.IsExported() && !sf.Anonymous {
			continue
		}
		if name == "" {
			name = sf.Name
		}
		f := field{p: pl.of(sf.Type)}
		if _, intern := opts["intern"]; intern {
			switch sf.Type.Kind() {
			case reflect.String:
				f.p = &plan{typ: sf.Type, kind: planInternStr, size: f.p.size}
			case reflect.Interface:
				f.p = &plan{typ: sf.Type, kind: planInternAny, size: f.p.size}
			}
		}
		if _, noinline := opts["noinline"]; sf.Anonymous && !noinline && pl.depth <= maxInlineDepth {
			_, inline := opts["inline"]
			if inline {
				if sf.Type.Kind() == reflect.Struct {
					for _, nf := range pl.namedFields(sf.Type).list {
						if !fs.has(nf.name) {
							fs.add(namedField{name: nf.name, f: nf.f})
						}
					}
				}
			} else {
				inline = pl.inline(&fs, sf.Type)
			}
			if inline {
				fs.all = append(fs.all, namedField{name: name, f: f})
				continue
			}
		}
		fs.add(namedField{name: name, f: f})
		if alias, ok := opts["alias"]; ok {
			fs.all = append(fs.all, namedField{name: alias, f: f})
		}
	}
	return fs
}

// inline adds to fs the fields of embedded type t, a plain struct or
// pointer to one, and reports true, unless one of their names is taken.
// Reaching a field through a nil embedded pointer allocates its struct.
func (pl *planner) inline(fs *fieldSet, t reflect.Type) bool {
	hops := 0
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
		hops += allocSize(int(t.Size()))
	}
	if !plainStruct(t) {
		return false
	}
	inner := pl.namedFields(t).list
	for _, nf := range inner {
		if fs.has(nf.name) {
			return false
		}
	}
	for _, nf := range inner {
		nf.f.hops += hops
		fs.add(namedField{name: nf.name, f: nf.f})
	}
	return true
}

// parseTag returns the name and options of a msgpack struct tag, read as
// msgpack's tag parser reads it: comma-separated options, the first of
// which is the name unless it is a key:value pair; values may be quoted
// with single quotes, escape characters with a backslash and hold
// parenthesised groups; names and values are trimmed of spaces.
func parseTag(tag string) (name string, opts map[string]string) {
	p := tagParser{s: tag}
	p.run()
	return p.name, p.opts
}

type tagParser struct {
	s       string
	i       int
	name    string
	hasName bool
	opts    map[string]string
}

func (p *tagParser) next() byte {
	if p.i >= len(p.s) {
		return 0
	}
	c := p.s[p.i]
	p.i++
	return c
}

func (p *tagParser) skip(c byte) bool {
	if p.i < len(p.s) && p.s[p.i] == c {
		p.i++
		return true
	}
	return false
}

func (p *tagParser) set(key, value string) {
	key, value = strings.TrimSpace(key), strings.TrimSpace(value)
	if !p.hasName {
		p.hasName = true
		if key == "" {
			p.name = value
			return
		}
	}
	if p.opts == nil {
		p.opts = make(map[string]string)
	}
	if key == "" {
		p.opts[value] = ""
	} else {
		p.opts[key] = value
	}
}

// run reads the options of the tag.
func (p *tagParser) run() {
	for p.option() {
	}
}

// option reads one option and reports whether another follows.
func (p *tagParser) option() bool {
	var b []byte
	for p.i < len(p.s) {
		switch c := p.next(); c {
		case ',':
			p.skip(' ')
			p.set("", string(b))
			return true
		case ':':
			return p.value(string(b))
		case '\'':
			return p.quoted("")
		default:
			b = append(b, c)
		}
	}
	if len(b) > 0 {
		p.set("", string(b))
	}
	return false
}

// value reads the value of option key, and reports whether options follow.
func (p *tagParser) value(key string) bool {
	if p.skip('\'') {
		return p.quoted(key)
	}
	var b []byte
	for p.i < len(p.s) {
		c := p.next()
		switch c {
		case '\\':
			b = append(b, p.next())
		case '(':
			b = append(b, c)
			for level := 0; p.i < len(p.s); {
				c := p.next()
				if c == '\\' {
					b = append(b, p.next())
					continue
				}
				b = append(b, c)
				if c == '(' {
					level++
				} else if c == ')' {
					if level--; level < 0 {
						break
					}
				}
			}
		case ',':
			p.skip(' ')
			p.set(key, string(b))
			return true
		default:
			b = append(b, c)
		}
	}
	p.set(key, string(b))
	return false
}

// quoted reads a value quoted with single quotes (the opening one read) for
// option key, and reports whether options follow.
func (p *tagParser) quoted(key string) bool {
	var b []byte
	for p.i < len(p.s) {
		j := strings.IndexByte(p.s[p.i:], '\'')
		if j < 0 {
			b = append(b, p.s[p.i:]...)
			p.i = len(p.s)
			break
		}
		part := p.s[p.i : p.i+j]
		p.i += j + 1
		if strings.HasSuffix(part, `\`) {
			b = append(b, part[:len(part)-1]...)
			b = append(b, '\'')
			continue
		}
		b = append(b, part...)
		break
	}
	p.set(key, string(b))
	if p.skip(',') {
		p.skip(' ')
	}
	return true
}

// mapSlot returns the bytes of one slot of a map with key type k and value
// type v, and the heap each entry takes outside its slot: Go keeps keys and
// values over 128 bytes outside the map's groups.
func mapSlot(k, v reflect.Type) (slot, extra int) {
	const maxInline = 128
	ks, ka := int(k.Size()), k.Align()
	if ks > maxInline {
		extra += allocSize(ks)
		ks, ka = 8, 8
	}
	vs, va := int(v.Size()), v.Align()
	if vs > maxInline {
		extra += allocSize(vs)
		vs, va = 8, 8
	}
	slot = alignUp(alignUp(ks, va)+vs, max(ka, va))
	return slot, extra
}

func alignUp(n, a int) int {
	if a <= 1 {
		return n
	}
	return (n + a - 1) / a * a
}
