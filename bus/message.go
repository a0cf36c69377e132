package bus

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/redis/go-redis/v9"
	"github.com/vmihailenco/msgpack/v5"
	"github.com/vmihailenco/msgpack/v5/msgpcode"
)

// WireVersion is the format version this package writes in the "v" field and
// the only one it accepts. It changes only when an old subscriber could no
// longer evict correctly from a new message; adding a field does not change it.
const WireVersion = 1

const (
	// DefaultMaxBytes is the default Limits.MaxBytes: 1 MiB.
	DefaultMaxBytes = 1 << 20
	// DefaultMaxKeys is the default Limits.MaxKeys: 100,000 keys (and as
	// many tags).
	DefaultMaxKeys = 100_000
)

// Message is one invalidation. On the wire it is one msgpack map with the
// short field names given in the struct tags; any language can publish one.
// A message can only evict, never insert: it carries no value.
//
// Fields that a reader does not know are ignored, so fields may be added
// without changing WireVersion.
type Message struct {
	// Version is the format version, WireVersion. Marshal sets it when zero.
	Version int `msgpack:"v"`
	// Origin is the instance ID of the publisher, or "" for publishers that
	// are not a tiercache instance (another service, the CLI).
	Origin string `msgpack:"o"`
	// Keyspace names the keyspace the keys belong to. It may be "" only when
	// Flush is set, meaning every keyspace.
	Keyspace string `msgpack:"ks"`
	// Keys are the keys to evict, as stored in Redis without the
	// "<namespace>:<keyspace>:" prefix.
	Keys []string `msgpack:"k,omitempty"`
	// Tags names tags whose values were invalidated. A subscriber that keeps
	// no index of the tags of what it holds evicts the whole keyspace for
	// them, unless KeysFollow is set. A message with tags and no keys is
	// valid.
	Tags []string `msgpack:"t,omitempty"`
	// Flush evicts the whole keyspace, or every keyspace when Keyspace is "".
	Flush bool `msgpack:"f,omitempty"`
	// Filled says the keys were filled where Redis held nothing for them (a
	// lease holder stored its loaded value): nothing was replaced, so nothing
	// needs evicting; replicas only wake the loads waiting on those keys. A
	// filled message names a keyspace and keys, and neither tags nor Flush.
	// A subscriber that does not know the field evicts the keys, which is
	// harmless. Absent on the wire means false.
	Filled bool `msgpack:"fl,omitempty"`
	// KeysFollow says that the publisher of Tags deletes every value that
	// carries them and publishes those keys in messages of their own (as a
	// tiercache replica's InvalidateTags does): a subscriber need not evict
	// the keyspace for the tags; it only stops sharing the loads of the
	// keyspace that began before. It needs Tags. A subscriber that does not
	// know the field evicts the keyspace, which is harmless. Absent on the
	// wire means false.
	KeysFollow bool `msgpack:"kf,omitempty"`
	// Gen, with Flush, is the keyspace's new generation after a Clear (of
	// every keyspace when Keyspace is ""): from then on its values live
	// under keys of that generation, and the old ones are gone. Zero means
	// none. A subscriber that does not know the field flushes, which is
	// what it must do anyway.
	Gen uint64 `msgpack:"g,omitempty"`
	// Canary, when not empty, makes the message a canary and nothing else:
	// it names no keyspace, keys, tags or flush, evicts nothing, and each
	// replica records in its presence record that it applied it, and when
	// (`tiercache check`). A subscriber that does not know the field counts
	// the message as malformed and ignores it.
	Canary string `msgpack:"cn,omitempty"`
	// Seq numbers the message in its log: the write scripts of a tiercache
	// replica number every invalidation they publish, inside Redis and in
	// the same atomic step as the write, and keep it in a log in Redis for a
	// while (see Log). Numbers of one log grow by one per message, so a
	// subscriber that sees a number jump knows it missed messages, and can
	// read them back from the log. Zero means not numbered (another
	// publisher's message, or a write script's whose log was off).
	Seq uint64 `msgpack:"sq,omitempty"`
	// Log names the log that numbered the message when it is not the
	// namespace's only one: on a Cluster, the {hash tag} of the slot whose
	// log it is (see internal/slots), without the braces. Empty otherwise.
	Log string `msgpack:"lg,omitempty"`
}

// Limits bounds what Unmarshal accepts, and so what a hostile or broken
// publisher can make a subscriber allocate: at most about 16 bytes of string
// headers per input byte, never more than the input for the strings.
type Limits struct {
	// MaxBytes is the largest message accepted, in bytes. Zero means
	// DefaultMaxBytes (1 MiB).
	MaxBytes int `yaml:"maxBytes" json:"maxBytes"`
	// MaxKeys is the largest number of keys, and separately of tags, in one
	// message. Zero means DefaultMaxKeys (100,000).
	MaxKeys int `yaml:"maxKeys" json:"maxKeys"`
}

func (l Limits) withDefaults() Limits {
	if l.MaxBytes <= 0 {
		l.MaxBytes = DefaultMaxBytes
	}
	if l.MaxKeys <= 0 {
		l.MaxKeys = DefaultMaxKeys
	}
	return l
}

func (l Limits) validate() error {
	if l.MaxBytes < 0 {
		return fmt.Errorf("bus: Limits.MaxBytes %d is negative", l.MaxBytes)
	}
	if l.MaxKeys < 0 {
		return fmt.Errorf("bus: Limits.MaxKeys %d is negative", l.MaxKeys)
	}
	return nil
}

// check reports whether m, whose Version is set, can be published: the same
// rule Unmarshal applies, so that everything Unmarshal accepts re-encodes.
func (m *Message) check() error {
	if m.Version != WireVersion {
		return fmt.Errorf("%w %d", ErrVersion, m.Version)
	}
	if m.Canary != "" {
		if m.Keyspace != "" || len(m.Keys) > 0 || len(m.Tags) > 0 || m.Flush || m.Filled || m.KeysFollow || m.Gen != 0 {
			return fmt.Errorf("%w: a canary with keyspace, keys, tags or flags", ErrMalformed)
		}
		return nil
	}
	if m.Filled {
		switch {
		case m.Flush || len(m.Tags) > 0:
			return fmt.Errorf("%w: filled with flush or tags", ErrMalformed)
		case m.Keyspace == "" || len(m.Keys) == 0:
			return fmt.Errorf("%w: filled without keyspace or keys", ErrMalformed)
		}
		return nil
	}
	if m.KeysFollow && len(m.Tags) == 0 {
		return fmt.Errorf("%w: keys follow without tags", ErrMalformed)
	}
	if m.Gen != 0 && !m.Flush {
		return fmt.Errorf("%w: a generation without flush", ErrMalformed)
	}
	if m.Flush {
		return nil
	}
	if m.Keyspace == "" {
		return fmt.Errorf("%w: empty keyspace without flush", ErrMalformed)
	}
	if len(m.Keys) == 0 && len(m.Tags) == 0 {
		return fmt.Errorf("%w: no keys, tags or flush", ErrMalformed)
	}
	return nil
}

// Marshal validates m and returns its wire form. A zero Version is taken as
// WireVersion; any other Version than WireVersion is ErrVersion. The keyspace
// must be non-empty unless Flush is set, and the message must carry at least
// one key, a tag or Flush (ErrMalformed); a Filled message must name a
// keyspace and keys, and carry neither tags nor Flush. A message that a subscriber with
// default Limits would refuse is ErrTooLarge, so that a writer learns it
// instead of every replica silently dropping its invalidation.
func (m Message) Marshal() ([]byte, error) {
	if m.Version == 0 {
		m.Version = WireVersion
	}
	if err := m.check(); err != nil {
		return nil, err
	}
	if len(m.Keys) > DefaultMaxKeys || len(m.Tags) > DefaultMaxKeys {
		return nil, fmt.Errorf("%w: %d keys and %d tags, more than %d", ErrTooLarge, len(m.Keys), len(m.Tags), DefaultMaxKeys)
	}
	// Each string costs at most 5 header bytes; the map header, field
	// names and a sequence number fit in 48. Checking first bounds what we allocate.
	size := 48 + 5*(4+len(m.Keys)+len(m.Tags)) + len(m.Origin) + len(m.Keyspace) + len(m.Canary) + len(m.Log)
	for _, k := range m.Keys {
		size += len(k)
	}
	for _, t := range m.Tags {
		size += len(t)
	}
	if size > DefaultMaxBytes+48 {
		return nil, fmt.Errorf("%w: about %d bytes, more than %d", ErrTooLarge, size, DefaultMaxBytes)
	}

	fields := 3
	if len(m.Keys) > 0 {
		fields++
	}
	if len(m.Tags) > 0 {
		fields++
	}
	if m.Flush {
		fields++
	}
	if m.Filled {
		fields++
	}
	if m.KeysFollow {
		fields++
	}
	if m.Gen != 0 {
		fields++
	}
	if m.Canary != "" {
		fields++
	}
	if m.Seq != 0 {
		fields++
	}
	if m.Log != "" {
		fields++
	}
	b := make([]byte, 0, size)
	b = append(b, msgpcode.FixedMapLow|byte(fields))
	b = appendString(b, "v")
	b = append(b, byte(m.Version)) // positive fixint: check made it WireVersion
	b = appendString(b, "o")
	b = appendString(b, m.Origin)
	b = appendString(b, "ks")
	b = appendString(b, m.Keyspace)
	if len(m.Keys) > 0 {
		b = appendString(b, "k")
		b = appendStrings(b, m.Keys)
	}
	if len(m.Tags) > 0 {
		b = appendString(b, "t")
		b = appendStrings(b, m.Tags)
	}
	if m.Flush {
		b = appendString(b, "f")
		b = append(b, msgpcode.True)
	}
	if m.Filled {
		b = appendString(b, "fl")
		b = append(b, msgpcode.True)
	}
	if m.KeysFollow {
		b = appendString(b, "kf")
		b = append(b, msgpcode.True)
	}
	if m.Gen != 0 {
		b = appendString(b, "g")
		b = append(b, msgpcode.Uint64)
		b = binary.BigEndian.AppendUint64(b, m.Gen)
	}
	if m.Canary != "" {
		b = appendString(b, "cn")
		b = appendString(b, m.Canary)
	}
	if m.Seq != 0 {
		b = appendString(b, "sq")
		b = append(b, msgpcode.Uint64)
		b = binary.BigEndian.AppendUint64(b, m.Seq)
	}
	if m.Log != "" {
		b = appendString(b, "lg")
		b = appendString(b, m.Log)
	}
	if len(b) > DefaultMaxBytes {
		return nil, fmt.Errorf("%w: %d bytes, more than %d", ErrTooLarge, len(b), DefaultMaxBytes)
	}
	return b, nil
}

func appendString(b []byte, s string) []byte {
	switch n := len(s); {
	case n <= int(msgpcode.FixedStrMask):
		b = append(b, msgpcode.FixedStrLow|byte(n))
	case n <= 0xff:
		b = append(b, msgpcode.Str8, byte(n))
	case n <= 0xffff:
		b = append(b, msgpcode.Str16)
		b = binary.BigEndian.AppendUint16(b, uint16(n))
	default: // Marshal's size check keeps n far below 4 GiB
		b = append(b, msgpcode.Str32)
		b = binary.BigEndian.AppendUint32(b, uint32(n))
	}
	return append(b, s...)
}

func appendStrings(b []byte, ss []string) []byte {
	switch n := len(ss); {
	case n <= int(msgpcode.FixedArrayMask):
		b = append(b, msgpcode.FixedArrayLow|byte(n))
	case n <= 0xffff:
		b = append(b, msgpcode.Array16)
		b = binary.BigEndian.AppendUint16(b, uint16(n))
	default: // at most DefaultMaxKeys
		b = append(b, msgpcode.Array32)
		b = binary.BigEndian.AppendUint32(b, uint32(n))
	}
	for _, s := range ss {
		b = appendString(b, s)
	}
	return b
}

// Unmarshal decodes one message. It never panics and its work and memory are
// bounded by len(b) and lim, whatever the bytes: a message longer than
// lim.MaxBytes, or with more keys or tags than lim.MaxKeys, is ErrTooLarge; a
// version other than WireVersion is ErrVersion (also for a message whose
// other fields it cannot read); anything else that is not a valid message is
// ErrMalformed. Fields it does not know are skipped, whatever they hold.
//
// Strings may be msgpack str or bin; nil reads as "" (or no keys); "v" may be
// a signed or unsigned integer. An empty key or tag array reads as nil.
func Unmarshal(b []byte, lim Limits) (Message, error) {
	lim = lim.withDefaults()
	if len(b) > lim.MaxBytes {
		return Message{}, fmt.Errorf("%w: %d bytes, more than %d", ErrTooLarge, len(b), lim.MaxBytes)
	}
	dec := newDecoder()
	defer dec.release()
	return dec.decode(string(b), lim)
}

// Publisher is the part of go-redis that Publish needs;
// redis.UniversalClient satisfies it.
type Publisher interface {
	Publish(ctx context.Context, channel string, message interface{}) *redis.IntCmd
}

var _ Publisher = redis.UniversalClient(nil)

// Publish marshals m and publishes it on channel. It is for the CLI, other
// tools and tests: the cache itself publishes from inside the Lua script that
// writes L2, so that the write and its invalidation are one atomic step.
func Publish(ctx context.Context, c Publisher, channel string, m Message) error {
	b, err := m.Marshal()
	if err != nil {
		return err
	}
	if err := c.Publish(ctx, channel, b).Err(); err != nil {
		return fmt.Errorf("bus: publish on %q: %w", channel, err)
	}
	return nil
}

// decoder reads messages by hand with a msgpack.Decoder over a
// strings.Reader, which the Decoder reads directly (no buffering), so that
// the reader always knows how many bytes remain. Every length is checked
// against those before anything is allocated, and strings are slices of the
// input, never copies. A decoder is not safe for concurrent use.
type decoder struct {
	src string
	r   strings.Reader
	d   *msgpack.Decoder
}

func newDecoder() *decoder {
	dec := &decoder{d: msgpack.GetDecoder()}
	dec.d.Reset(&dec.r)
	return dec
}

func (dec *decoder) release() {
	msgpack.PutDecoder(dec.d)
	dec.d = nil
}

var (
	errTruncated = errors.New("truncated")
	errNotMap    = errors.New("not a map")
	errTooMany   = errors.New("too many strings")
)

// decode decodes src, whose length the caller has checked against lim.
func (dec *decoder) decode(src string, lim Limits) (Message, error) {
	dec.src = src
	dec.r.Reset(src)
	defer dec.r.Reset("") // do not keep src alive
	var (
		m          Message
		hasVersion bool
		version    int64
		fieldErr   error // the first field of the wrong type, reported unless the version is unknown
	)
	n, err := dec.d.DecodeMapLen()
	if err != nil {
		return Message{}, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	if n < 0 {
		return Message{}, fmt.Errorf("%w: %v", ErrMalformed, errNotMap)
	}
	if 2*n > dec.r.Len() { // each entry takes at least two bytes
		return Message{}, fmt.Errorf("%w: map of %d entries: %v", ErrMalformed, n, errTruncated)
	}
	for range n {
		name, err := dec.str()
		if err != nil {
			return Message{}, fmt.Errorf("%w: field name: %v", ErrMalformed, err)
		}
		start := dec.pos()
		switch name {
		case "v":
			version, err = dec.d.DecodeInt64()
			hasVersion = err == nil
		case "o":
			m.Origin, err = dec.str()
		case "ks":
			m.Keyspace, err = dec.str()
		case "k":
			m.Keys, err = dec.strs(lim.MaxKeys)
		case "t":
			m.Tags, err = dec.strs(lim.MaxKeys)
		case "f":
			m.Flush, err = dec.d.DecodeBool()
		case "fl":
			m.Filled, err = dec.d.DecodeBool()
		case "kf":
			m.KeysFollow, err = dec.d.DecodeBool()
		case "g":
			m.Gen, err = dec.d.DecodeUint64()
		case "cn":
			m.Canary, err = dec.str()
		case "sq":
			m.Seq, err = dec.d.DecodeUint64()
		case "lg":
			m.Log, err = dec.str()
		default:
			if err := dec.skip(); err != nil {
				return Message{}, fmt.Errorf("%w: field %q: %v", ErrMalformed, name, err)
			}
			continue
		}
		if errors.Is(err, errTooMany) {
			return Message{}, fmt.Errorf("%w: field %q: %v", ErrTooLarge, name, err)
		}
		if err != nil {
			// A field of an unexpected type: remember it, and skip the
			// value so that a newer version can still be recognised.
			if fieldErr == nil {
				fieldErr = fmt.Errorf("%w: field %q: %v", ErrMalformed, name, err)
			}
			if _, serr := dec.r.Seek(int64(start), io.SeekStart); serr != nil {
				return Message{}, fieldErr
			}
			if serr := dec.skip(); serr != nil {
				return Message{}, fieldErr
			}
		}
	}
	if dec.r.Len() != 0 {
		return Message{}, fmt.Errorf("%w: %d trailing bytes", ErrMalformed, dec.r.Len())
	}
	if hasVersion && version != WireVersion {
		return Message{}, fmt.Errorf("%w %d", ErrVersion, version)
	}
	if fieldErr != nil {
		return Message{}, fieldErr
	}
	if !hasVersion {
		return Message{}, fmt.Errorf("%w: no version", ErrMalformed)
	}
	m.Version = WireVersion
	if err := m.check(); err != nil {
		return Message{}, err
	}
	return m, nil
}

// pos is the offset of the next unread byte.
func (dec *decoder) pos() int { return len(dec.src) - dec.r.Len() }

// str reads a str, bin or nil ("") without copying.
func (dec *decoder) str() (string, error) {
	n, err := dec.d.DecodeBytesLen()
	if err != nil {
		return "", err
	}
	if n < 0 {
		return "", nil
	}
	if n > dec.r.Len() {
		return "", fmt.Errorf("string of %d bytes: %w", n, errTruncated)
	}
	p := dec.pos()
	s := dec.src[p : p+n]
	if _, err := dec.r.Seek(int64(n), io.SeekCurrent); err != nil {
		return "", err
	}
	return s, nil
}

// strs reads an array of strings, or nil, as nil when empty.
func (dec *decoder) strs(max int) ([]string, error) {
	n, err := dec.d.DecodeArrayLen()
	if err != nil {
		return nil, err
	}
	if n <= 0 {
		return nil, nil
	}
	if n > max {
		return nil, fmt.Errorf("%w: %d, more than %d", errTooMany, n, max)
	}
	if n > dec.r.Len() { // each string takes at least one byte
		return nil, fmt.Errorf("array of %d: %w", n, errTruncated)
	}
	out := make([]string, n)
	for i := range out {
		if out[i], err = dec.str(); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// skip passes over one value of any type without recursion or allocation:
// it counts the values still to skip, which can never exceed the bytes left
// since each value takes at least one byte.
func (dec *decoder) skip() error {
	r := &dec.r
	for pending := 1; pending > 0; pending-- {
		c, err := r.ReadByte()
		if err != nil {
			return errTruncated
		}
		var n uint64 // payload bytes to skip
		switch {
		case msgpcode.IsFixedNum(c), c == msgpcode.Nil, c == msgpcode.False, c == msgpcode.True:
		case msgpcode.IsFixedString(c):
			n = uint64(c & msgpcode.FixedStrMask)
		case msgpcode.IsFixedArray(c):
			pending += int(c & msgpcode.FixedArrayMask)
		case msgpcode.IsFixedMap(c):
			pending += 2 * int(c&msgpcode.FixedMapMask)
		default:
			width, size := codeSize(c)
			if width < 0 {
				return fmt.Errorf("invalid code %#x", c)
			}
			if width == 0 {
				n = size
				break
			}
			l, err := dec.uint(width)
			if err != nil {
				return err
			}
			switch c {
			case msgpcode.Array16, msgpcode.Array32:
				pending += int(l)
			case msgpcode.Map16, msgpcode.Map32:
				pending += 2 * int(l)
			default: // str, bin, ext (size counts the ext type byte)
				n = l + size
			}
		}
		if n > uint64(r.Len()) {
			return errTruncated
		}
		if _, err := r.Seek(int64(n), io.SeekCurrent); err != nil {
			return err
		}
		if pending-1 > r.Len() {
			return errTruncated
		}
	}
	return nil
}

// codeSize describes what follows code c (other than the fixed formats):
// width is the byte width of a big-endian length (0 when the payload has a
// fixed size, -1 for an invalid code) and size the payload bytes besides it.
func codeSize(c byte) (width int, size uint64) {
	switch c {
	case msgpcode.Str8, msgpcode.Bin8:
		return 1, 0
	case msgpcode.Str16, msgpcode.Bin16, msgpcode.Array16, msgpcode.Map16:
		return 2, 0
	case msgpcode.Str32, msgpcode.Bin32, msgpcode.Array32, msgpcode.Map32:
		return 4, 0
	case msgpcode.Ext8:
		return 1, 1
	case msgpcode.Ext16:
		return 2, 1
	case msgpcode.Ext32:
		return 4, 1
	case msgpcode.Uint8, msgpcode.Int8:
		return 0, 1
	case msgpcode.Uint16, msgpcode.Int16:
		return 0, 2
	case msgpcode.Float, msgpcode.Uint32, msgpcode.Int32:
		return 0, 4
	case msgpcode.Double, msgpcode.Uint64, msgpcode.Int64:
		return 0, 8
	case msgpcode.FixExt1:
		return 0, 2
	case msgpcode.FixExt2:
		return 0, 3
	case msgpcode.FixExt4:
		return 0, 5
	case msgpcode.FixExt8:
		return 0, 9
	case msgpcode.FixExt16:
		return 0, 17
	}
	return -1, 0
}

// uint reads a big-endian unsigned integer of width bytes.
func (dec *decoder) uint(width int) (uint64, error) {
	if width > dec.r.Len() {
		return 0, errTruncated
	}
	var v uint64
	for range width {
		c, _ := dec.r.ReadByte()
		v = v<<8 | uint64(c)
	}
	return v, nil
}
