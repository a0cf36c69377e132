package codec

import (
	"encoding/binary"
	"fmt"
	"reflect"
	"sync"
	"sync/atomic"
	"time"

	"github.com/klauspost/compress/s2"
	"github.com/vmihailenco/msgpack/v5"
)

// Version is the envelope format version that Marshal writes and Unmarshal
// reads. It occupies bits 7..5 of the header byte.
const Version = 1

const (
	// DefaultCompressAbove is the default Options.CompressAbove, in bytes of
	// msgpack body.
	DefaultCompressAbove = 4096

	// DefaultMaxSize is the default Options.MaxSize, in bytes of msgpack
	// body: 16 MiB.
	DefaultMaxSize = 16 << 20

	// DefaultMaxDepth is the default Options.MaxDepth, in nested arrays and
	// maps.
	DefaultMaxDepth = 64

	// DefaultMaxHeapRatio is the default ratio of Options.MaxHeap to
	// Options.MaxSize: by default, decoding may build up to 64 MiB.
	DefaultMaxHeapRatio = 4
)

// MaxHeaderSize is the most bytes an envelope adds to its msgpack body:
// the header byte, the load duration and the logical expiry (uvarints).
// Options.MaxSize bounds the body, so a reader that bounds whole envelopes
// allows MaxSize + MaxHeaderSize.
const MaxHeaderSize = 1 + 2*binary.MaxVarintLen64

// Header bits.
const (
	flagCompressed = 1 << 0
	flagTombstone  = 1 << 1
	flagLease      = 1 << 2 // a load in progress: the body is the owner's token
	flagDelta      = 1 << 3 // a uvarint load duration in µs precedes the body
	flagExpiry     = 1 << 4 // a uvarint logical expiry in Unix ms precedes the body (after the delta)
	versionShift   = 5
	versionMask    = 0x7 << versionShift
	headerV1       = Version << versionShift
)

// MaxLeaseToken bounds the token of a lease envelope, in bytes.
const MaxLeaseToken = 64

// maxDeltaMicros bounds a recorded load duration: about 12 days.
const maxDeltaMicros = 1 << 40

// maxExpiryMillis bounds a recorded logical expiry, in Unix milliseconds:
// about the year 10889.
const maxExpiryMillis = 1 << 48

// maxPooledBuffer is the largest buffer a Codec keeps for reuse; larger ones
// are left to the garbage collector so that one big value does not pin its
// buffer in every pool.
const maxPooledBuffer = 1 << 20

// Options configures a Codec. The zero value is usable and means the
// defaults.
type Options struct {
	// CompressAbove is the size, in bytes of msgpack body, above which
	// Marshal compresses the body with S2. Bodies of exactly this size are
	// not compressed, and neither are bodies that S2 does not make smaller.
	// Zero means DefaultCompressAbove (4096); a negative value disables
	// compression. Unmarshal accepts compressed bodies whatever this is.
	CompressAbove int `json:"compressAbove" yaml:"compressAbove"`

	// MaxSize is the largest msgpack body, in bytes, that Marshal produces
	// (a larger one is ErrTooLarge) and that Unmarshal accepts after
	// decompression. It bounds the memory a hostile compressed value can
	// make Unmarshal allocate. Zero means DefaultMaxSize (16 MiB).
	MaxSize int `json:"maxSize" yaml:"maxSize"`

	// MaxDepth is the deepest nesting of msgpack arrays and maps that
	// Unmarshal accepts; it bounds decoding recursion. Zero means
	// DefaultMaxDepth (64).
	MaxDepth int `json:"maxDepth" yaml:"maxDepth"`

	// MaxHeap is the most heap, in bytes, that Unmarshal lets one value
	// build. Before decoding, Unmarshal computes from the msgpack body and
	// the Go type of the destination an upper bound of the heap the
	// decoded value will hold (see UnmarshalCost), and refuses a body
	// whose bound is larger with ErrTooComplex. MaxSize alone does not
	// bound the heap: a one-byte msgpack nil becomes a 16-byte string
	// header in a []string, and a whole zero struct in a slice of structs.
	// Zero means DefaultMaxHeapRatio times MaxSize, 64 MiB with the
	// default MaxSize. The bound is 1 to 8 times the msgpack size of
	// typical structs, slices and strings, and up to about 20 times that
	// of maps of small entries and of documents decoded into interfaces,
	// so with the defaults any value of a few MiB decodes, and one of
	// 16 MiB does if it is mostly strings and numbers. A value whose
	// bound is larger, even an honest one, is refused: raise MaxHeap for
	// a keyspace that holds such values (no default L1, 32 MiB, could
	// keep one anyway).
	MaxHeap int `json:"maxHeap" yaml:"maxHeap"`
}

// A Codec encodes values into envelopes and decodes them back. It is safe
// for concurrent use. The zero Codec and a nil *Codec use the default
// Options. A Codec must not be copied after first use.
type Codec struct {
	compressAbove int // 0 means DefaultCompressAbove
	maxSize       int // 0 means DefaultMaxSize
	maxDepth      int // 0 means DefaultMaxDepth
	maxHeap       int // 0 means DefaultMaxHeapRatio * maxSize

	encoders sync.Pool            // of *encodeState
	decoders sync.Pool            // of *decodeState
	plans    sync.Map             // reflect.Type of a destination to its *plan
	lastPlan atomic.Pointer[plan] // the plan used last, looked up first
}

// New returns a Codec configured by opts. It returns an error if MaxSize,
// MaxDepth or MaxHeap is negative.
func New(opts Options) (*Codec, error) {
	if opts.MaxSize < 0 {
		return nil, fmt.Errorf("codec: negative MaxSize %d", opts.MaxSize)
	}
	if opts.MaxDepth < 0 {
		return nil, fmt.Errorf("codec: negative MaxDepth %d", opts.MaxDepth)
	}
	if opts.MaxHeap < 0 {
		return nil, fmt.Errorf("codec: negative MaxHeap %d", opts.MaxHeap)
	}
	return &Codec{
		compressAbove: opts.CompressAbove,
		maxSize:       opts.MaxSize,
		maxDepth:      opts.MaxDepth,
		maxHeap:       opts.MaxHeap,
	}, nil
}

// options returns the effective settings, defaults applied.
func (c *Codec) options() (compressAbove, maxSize, maxDepth, maxHeap int) {
	compressAbove, maxSize, maxDepth = DefaultCompressAbove, DefaultMaxSize, DefaultMaxDepth
	if c != nil {
		if c.compressAbove != 0 {
			compressAbove = c.compressAbove
		}
		if c.maxSize != 0 {
			maxSize = c.maxSize
		}
		if c.maxDepth != 0 {
			maxDepth = c.maxDepth
		}
		maxHeap = c.maxHeap
	}
	if maxHeap == 0 {
		maxHeap = DefaultMaxHeapRatio * min(maxSize, maxBound/DefaultMaxHeapRatio)
	}
	return compressAbove, maxSize, maxDepth, maxHeap
}

// Tombstone returns a new tombstone envelope: the negative-cache marker that
// records that a key has no value. Unmarshal of it returns ErrTombstone.
func Tombstone() []byte {
	return []byte{headerV1 | flagTombstone}
}

// IsTombstone reports whether data is a tombstone envelope as made by
// Tombstone.
func IsTombstone(data []byte) bool {
	return len(data) == 1 && data[0] == headerV1|flagTombstone
}

// Lease returns a lease envelope: the marker a loader stores under a key
// while it loads it, so that other replicas wait instead of loading too.
// token identifies the owner; it must be 1 to MaxLeaseToken bytes.
// Unmarshal of a lease returns ErrLease.
func Lease(token string) ([]byte, error) {
	if len(token) == 0 || len(token) > MaxLeaseToken {
		return nil, fmt.Errorf("codec: lease token of %d bytes, want 1 to %d", len(token), MaxLeaseToken)
	}
	out := make([]byte, 1+len(token))
	out[0] = headerV1 | flagLease
	copy(out[1:], token)
	return out, nil
}

// IsLease reports whether data is a lease envelope as made by Lease.
func IsLease(data []byte) bool {
	return len(data) > 1 && len(data) <= 1+MaxLeaseToken && data[0] == headerV1|flagLease
}

// Expiry returns the logical expiry recorded by MarshalMeta in data, and
// false when data records none or is not a well-formed value envelope.
func Expiry(data []byte) (time.Time, bool) {
	if len(data) < 2 || data[0]>>versionShift != Version || data[0]&(flagExpiry|flagTombstone|flagLease) != flagExpiry {
		return time.Time{}, false
	}
	meta := data[1:]
	if data[0]&flagDelta != 0 {
		_, n := binary.Uvarint(meta)
		if n <= 0 {
			return time.Time{}, false
		}
		meta = meta[n:]
	}
	ms, n := binary.Uvarint(meta)
	if n <= 0 || ms > maxExpiryMillis {
		return time.Time{}, false
	}
	return time.UnixMilli(int64(ms)), true
}

// Delta returns the load duration recorded by MarshalDelta in data, and
// false when data records none or is not a well-formed value envelope.
func Delta(data []byte) (time.Duration, bool) {
	if len(data) < 2 || data[0]>>versionShift != Version || data[0]&(flagDelta|flagTombstone|flagLease) != flagDelta {
		return 0, false
	}
	us, n := binary.Uvarint(data[1:])
	if n <= 0 || us > maxDeltaMicros {
		return 0, false
	}
	return time.Duration(us) * time.Microsecond, true
}

// encodeState is the scratch space of one Marshal.
type encodeState struct {
	body limitBuffer // header byte, then the msgpack body
	z    []byte      // compression output
}

// Marshal returns the envelope of v: a header byte and the msgpack encoding
// of v, compressed with S2 when it is larger than Options.CompressAbove and
// compression makes it smaller. An error from msgpack (for example for a
// channel or a func, which msgpack cannot encode) is wrapped with the type of
// v. A msgpack body larger than Options.MaxSize is ErrTooLarge; Marshal then
// keeps counting but stops buffering, so it does not hold an oversized body
// in memory. Marshal does not support cyclic values.
func (c *Codec) Marshal(v any) ([]byte, error) {
	return c.marshal(v, -1, time.Time{})
}

// MarshalDelta is Marshal recording delta, the time the value took to load,
// in the envelope (rounded to microseconds, clamped to about 12 days; a
// negative delta counts as 0), for early refresh. Delta reads it back;
// Unmarshal skips it.
func (c *Codec) MarshalDelta(v any, delta time.Duration) ([]byte, error) {
	return c.marshal(v, max(delta, 0), time.Time{})
}

// MarshalMeta is Marshal recording delta as MarshalDelta does when it is
// not negative, and expiry, the value's logical expiry, when it is not
// zero (rounded down to the millisecond, clamped to the years 1970 to
// 10889), for fail-safe: a store keeps the value past it and knows it
// expired. Expiry reads it back; Unmarshal skips it.
func (c *Codec) MarshalMeta(v any, delta time.Duration, expiry time.Time) ([]byte, error) {
	return c.marshal(v, delta, expiry)
}

// marshal is Marshal, recording delta when it is not negative and expiry
// when it is not zero.
func (c *Codec) marshal(v any, delta time.Duration, expiry time.Time) ([]byte, error) {
	compressAbove, maxSize, _, _ := c.options()
	var meta [2 * binary.MaxVarintLen64]byte
	metaLen := 0
	var flags byte
	if delta >= 0 {
		metaLen = binary.PutUvarint(meta[:], min(uint64(delta/time.Microsecond), maxDeltaMicros))
		flags |= flagDelta
	}
	if !expiry.IsZero() {
		metaLen += binary.PutUvarint(meta[metaLen:], uint64(min(max(expiry.UnixMilli(), 0), maxExpiryMillis)))
		flags |= flagExpiry
	}
	wrap := func(header byte, body []byte) []byte {
		header |= flags
		out := make([]byte, 1+metaLen+len(body))
		out[0] = header
		copy(out[1:], meta[:metaLen])
		copy(out[1+metaLen:], body)
		return out
	}

	st := c.getEncodeState()
	defer c.putEncodeState(st)
	st.body.reset(headerV1, maxSize)

	enc := msgpack.GetEncoder()
	enc.Reset(&st.body)
	err := enc.Encode(v)
	msgpack.PutEncoder(enc)
	if err != nil {
		return nil, fmt.Errorf("codec: encode %T: %w", v, err)
	}
	if st.body.n > maxSize {
		return nil, fmt.Errorf("%w: %T encodes to %d bytes, max %d", ErrTooLarge, v, st.body.n, maxSize)
	}

	body := st.body.b[1:]
	if compressAbove >= 0 && len(body) > compressAbove {
		if n := s2.MaxEncodedLen(len(body)); n > 0 {
			st.z = grow(st.z, n)
			z := s2.Encode(st.z, body)
			if len(z) < len(body) {
				return wrap(headerV1|flagCompressed, z), nil
			}
		}
	}
	return wrap(headerV1, body), nil
}

// decodeState is the scratch space of one Unmarshal.
type decodeState struct {
	body   []byte // decompressed body
	guards []int  // see validate
	dict   []span // see walker
	r      guardReader
}

// Unmarshal decodes the envelope data into the value that v points to. v
// must be a non-nil pointer. Unmarshal returns:
//
//   - ErrTombstone if data is a tombstone;
//   - ErrLease if data is a lease;
//   - an error wrapping ErrVersion if data has an unknown format version;
//   - an error wrapping ErrTooLarge if the msgpack body is, or decompresses
//     to, more than Options.MaxSize bytes (checked before decompressing);
//   - an error wrapping ErrCorrupt if data is malformed (see Validate) or
//     msgpack cannot decode it into v, for example because the stored type
//     does not match;
//   - an error wrapping ErrTooComplex if decoding the body into v could
//     make v hold more than Options.MaxHeap bytes of heap (checked before
//     decoding: see UnmarshalCost).
//
// Unmarshal does not panic on any input: it validates the body before
// decoding and turns a panic inside msgpack into an ErrCorrupt error.
// Nothing decoded into v shares memory with data.
func (c *Codec) Unmarshal(data []byte, v any) error {
	_, err := c.UnmarshalCost(data, v)
	return err
}

// UnmarshalCost is Unmarshal, also returning heap: an upper bound, in
// bytes, of the heap that the value v points to holds once decoded, not
// counting the envelope. Unmarshal computes it before decoding, from the
// msgpack body and the Go type of v, and refuses with ErrTooComplex a body
// whose bound exceeds Options.MaxHeap; it is what an in-process cache
// should charge for keeping the decoded value.
//
// The bound counts what decoding makes v reach that v does not already
// own: backing arrays of slices (length times element size), maps with
// their entries (Go's swiss tables: keys, values and control bytes at the
// lowest load factor they keep), the bytes of strings and []byte,
// pointees, values boxed in interfaces (msgpack's generic types), and
// structs allocated through embedded pointers. It does not count the value
// *v itself, nor what msgpack allocates and drops while decoding: about as
// much again as the bound, plus buffers of up to the body's size. Sizes are
// rounded up as the Go allocator rounds them, by up to a quarter. For
// ordinary values the bound is 1.1 to 2 times the heap they actually hold,
// and at most twice what decoding allocates in all.
//
// Where msgpack's work cannot be seen from the type, the bound charges a
// copy of the encoding plus what msgpack's generic decoding would build
// from it: for a type with its own decoder (msgpack.CustomDecoder or
// Unmarshaler, encoding.BinaryUnmarshaler or TextUnmarshaler) and for an
// extension type registered with msgpack, which holds for decoders that
// build what they read. Decoders registered with msgpack.Register are not
// seen at all. An interface that v already holds a value in is charged as
// an empty one (msgpack decodes into what it holds), except *v itself:
// decode into zero values, as a cache does.
//
// heap is 0 when err is not nil, and for a msgpack nil.
func (c *Codec) UnmarshalCost(data []byte, v any) (heap int, err error) {
	return c.unmarshal(data, v, true)
}

// Cost returns what UnmarshalCost(data, v) would return, without decoding:
// the same bound and the same errors, except those msgpack reports while
// decoding. It does not modify v, which only tells the destination's type
// (and, if v points to an interface holding a pointer, that pointer's). It
// costs a pass over the body and, if the body is compressed, a
// decompressed copy of it.
func (c *Codec) Cost(data []byte, v any) (heap int, err error) {
	return c.unmarshal(data, v, false)
}

// unmarshal implements UnmarshalCost, and Cost when decode is false.
func (c *Codec) unmarshal(data []byte, v any, decode bool) (heap int, err error) {
	rv := reflect.ValueOf(v)
	if rv.Kind() != reflect.Pointer || rv.IsNil() {
		return 0, fmt.Errorf("codec: decode into %T: want a non-nil pointer", v)
	}
	if len(data) == 0 {
		return 0, fmt.Errorf("%w: empty envelope", ErrCorrupt)
	}
	h := data[0]
	if version := h >> versionShift; version != Version {
		return 0, fmt.Errorf("%w: %d", ErrVersion, version)
	}
	body := data[1:]
	if h&flagTombstone != 0 {
		if h&^(versionMask|flagTombstone) != 0 || len(body) != 0 {
			return 0, fmt.Errorf("%w: tombstone with header %#02x and %d body bytes", ErrCorrupt, h, len(body))
		}
		return 0, ErrTombstone
	}
	if h&flagLease != 0 {
		if h&^(versionMask|flagLease) != 0 || len(body) == 0 || len(body) > MaxLeaseToken {
			return 0, fmt.Errorf("%w: lease with header %#02x and %d body bytes", ErrCorrupt, h, len(body))
		}
		return 0, ErrLease
	}
	if h&flagDelta != 0 {
		us, n := binary.Uvarint(body)
		if n <= 0 || us > maxDeltaMicros {
			return 0, fmt.Errorf("%w: bad load duration field", ErrCorrupt)
		}
		body = body[n:]
	}
	if h&flagExpiry != 0 {
		ms, n := binary.Uvarint(body)
		if n <= 0 || ms > maxExpiryMillis {
			return 0, fmt.Errorf("%w: bad expiry field", ErrCorrupt)
		}
		body = body[n:]
	}

	_, maxSize, maxDepth, maxHeap := c.options()
	st := c.getDecodeState()
	defer c.putDecodeState(st)

	if h&flagCompressed != 0 {
		n, err := s2.DecodedLen(body)
		if err != nil {
			return 0, fmt.Errorf("%w: s2 block header: %w", ErrCorrupt, err)
		}
		if n > maxSize {
			return 0, fmt.Errorf("%w: compressed body decodes to %d bytes, max %d", ErrTooLarge, n, maxSize)
		}
		st.body = grow(st.body, n)
		if body, err = s2.Decode(st.body, body); err != nil {
			return 0, fmt.Errorf("%w: s2 block: %w", ErrCorrupt, err)
		}
	} else if len(body) > maxSize {
		return 0, fmt.Errorf("%w: body is %d bytes, max %d", ErrTooLarge, len(body), maxSize)
	}

	if err := validate(body, maxDepth, &st.guards); err != nil {
		return 0, err
	}
	if heap, err = c.heapBound(st, body, rv, maxHeap); err != nil || !decode {
		return heap, err
	}
	if err := decodeBody(st, body, v); err != nil {
		return 0, err
	}
	return heap, nil
}

// decodeBody decodes the validated body into v.
func decodeBody(st *decodeState, body []byte, v any) (err error) {
	st.r.reset(body, st.guards)
	dec := msgpack.GetDecoder()
	dec.Reset(&st.r)
	defer func() {
		if p := recover(); p != nil {
			// The decoder's state is unknown: leave it to the collector.
			err = fmt.Errorf("%w: decode %T: panic: %v", ErrCorrupt, v, p)
			return
		}
		msgpack.PutDecoder(dec)
	}()

	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("%w: decode %T: %w", ErrCorrupt, v, err)
	}
	if st.r.i != len(body) {
		return fmt.Errorf("%w: decode %T: msgpack stopped at offset %d of %d", ErrCorrupt, v, st.r.i, len(body))
	}
	return nil
}

func (c *Codec) getEncodeState() *encodeState {
	if c != nil {
		if st, ok := c.encoders.Get().(*encodeState); ok {
			return st
		}
	}
	return new(encodeState)
}

func (c *Codec) putEncodeState(st *encodeState) {
	if c == nil {
		return
	}
	if cap(st.body.b) > maxPooledBuffer {
		st.body.b = nil
	}
	if cap(st.z) > maxPooledBuffer {
		st.z = nil
	}
	c.encoders.Put(st)
}

func (c *Codec) getDecodeState() *decodeState {
	if c != nil {
		if st, ok := c.decoders.Get().(*decodeState); ok {
			st.guards = st.guards[:0]
			st.dict = st.dict[:0]
			return st
		}
	}
	return new(decodeState)
}

func (c *Codec) putDecodeState(st *decodeState) {
	st.r.reset(nil, nil)
	if c == nil {
		return
	}
	if cap(st.body) > maxPooledBuffer {
		st.body = nil
	}
	if cap(st.guards) > maxPooledBuffer/8 {
		st.guards = nil
	}
	if cap(st.dict) > maxPooledBuffer/16 {
		st.dict = nil
	}
	c.decoders.Put(st)
}

// grow returns b resliced or reallocated to length n.
func grow(b []byte, n int) []byte {
	if cap(b) >= n {
		return b[:n]
	}
	return make([]byte, n)
}

// limitBuffer is the msgpack encoder's writer. After the header byte it
// keeps up to max bytes of body and then only counts, so that Marshal can
// report the size of an oversized body without holding it.
type limitBuffer struct {
	b   []byte // header byte, then the body while it fits
	n   int    // body bytes written, including the ones not kept
	max int    // most body bytes kept
}

func (w *limitBuffer) reset(header byte, max int) {
	w.b = append(w.b[:0], header)
	w.n = 0
	w.max = max
}

// Write implements io.Writer.
func (w *limitBuffer) Write(p []byte) (int, error) {
	w.n += len(p)
	if w.n <= w.max {
		w.b = append(w.b, p...)
	}
	return len(p), nil
}

// WriteByte implements io.ByteWriter.
func (w *limitBuffer) WriteByte(c byte) error {
	w.n++
	if w.n <= w.max {
		w.b = append(w.b, c)
	}
	return nil
}

// Copy makes dst, which must be a non-nil pointer, a deep copy of src by a
// msgpack round trip, without an envelope or compression: what a value
// written to Redis and read back holds. Exported fields are copied (as
// msgpack's struct tags say), unexported ones are left zero, and values
// that msgpack cannot encode (channels, funcs) are an error. Nothing in dst
// shares memory with src.
func (c *Codec) Copy(dst, src any) error {
	rv := reflect.ValueOf(dst)
	if rv.Kind() != reflect.Pointer || rv.IsNil() {
		return fmt.Errorf("codec: copy into %T: want a non-nil pointer", dst)
	}
	st := c.getEncodeState()
	defer c.putEncodeState(st)
	st.body.reset(0, maxBound)
	enc := msgpack.GetEncoder()
	enc.Reset(&st.body)
	err := enc.Encode(src)
	msgpack.PutEncoder(enc)
	if err != nil {
		return fmt.Errorf("codec: encode %T: %w", src, err)
	}
	if err := msgpack.Unmarshal(st.body.b[1:], dst); err != nil {
		return fmt.Errorf("codec: decode %T into %T: %w", src, dst, err)
	}
	return nil
}
