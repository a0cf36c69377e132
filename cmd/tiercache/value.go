package main

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"time"
	"unicode/utf8"

	"github.com/vmihailenco/msgpack/v5"
	"github.com/vmihailenco/msgpack/v5/msgpcode"

	"github.com/tiercache/tiercache/codec"
)

// envelope describes the header of a codec envelope (see package codec):
// what the header byte says, and the sizes.
type envelope struct {
	Version        int    `json:"version"`
	Compressed     bool   `json:"compressed"`
	Tombstone      bool   `json:"tombstone"`
	Lease          bool   `json:"lease"`
	LeaseOwner     string `json:"lease_owner,omitempty"`      // the token of the replica loading the key
	LoadDurationUS *int64 `json:"load_duration_us,omitempty"` // the load time recorded for early refresh
	Expires        string `json:"expires,omitempty"`          // the logical expiry recorded for fail-safe, RFC 3339
	Size           int    `json:"size"`                       // bytes in Redis
	BodySize       int    `json:"body_size"`                  // bytes of msgpack, decompressed
}

// Header bits of a codec envelope, from its documented wire format.
const (
	headerCompressed   = 1 << 0
	headerTombstone    = 1 << 1
	headerLease        = 1 << 2
	headerVersionShift = 5
)

// decodeEnvelope reads data, a value from Redis, with cd, as the library
// reads it: validated before msgpack sees it, decompressed within
// Options.MaxSize, and refused, before decoding, if decoding it generically
// could build more heap than Options.MaxHeap (codec.ErrTooComplex). It
// returns the header and the body as generic JSON values (nil for a
// tombstone or a lease), leaving out what would take the JSON past about
// maxOutput bytes and reporting whether it did. A value the codec refuses
// is returned as an error, with what the header says.
func decodeEnvelope(cd *codec.Codec, data []byte, maxOutput int) (env envelope, v any, truncated bool, err error) {
	env = envelope{Size: len(data)}
	if len(data) == 0 {
		return env, nil, false, fmt.Errorf("%w: empty value", codec.ErrCorrupt)
	}
	h := data[0]
	env.Version = int(h >> headerVersionShift)
	env.Compressed = h&headerCompressed != 0
	env.Tombstone = h&headerTombstone != 0
	env.Lease = h&headerLease != 0
	if d, ok := codec.Delta(data); ok {
		us := d.Microseconds()
		env.LoadDurationUS = &us
	}
	if t, ok := codec.Expiry(data); ok {
		env.Expires = t.UTC().Format(time.RFC3339Nano)
	}
	// The codec's verdict on decoding the value generically, which is
	// what the library gives a keyspace of any; then a copy of the body.
	if _, err := cd.Cost(data, new(any)); err != nil {
		switch {
		case errors.Is(err, codec.ErrTombstone):
			return env, nil, false, nil
		case errors.Is(err, codec.ErrLease):
			env.LeaseOwner = string(data[1:])
			return env, nil, false, nil
		}
		return env, nil, false, err
	}
	var raw msgpack.RawMessage
	if err := cd.Unmarshal(data, &raw); err != nil {
		return env, nil, false, err
	}
	if len(raw) == 0 { // msgpack leaves a RawMessage empty for a nil body
		env.BodySize = 1
		return env, nil, false, nil
	}
	env.BodySize = len(raw)
	v, truncated, err = msgpackJSON(raw, maxOutput)
	return env, v, truncated, err
}

// msgpackJSON decodes one msgpack object into values that
// encoding/json prints faithfully: maps keyed by strings (other keys are
// formatted), int64 or uint64, float64 (NaN and infinities as strings),
// strings, and notes for what JSON has no type for: {"$bin": base64},
// {"$ext": type, "data": base64}, {"$invalid_utf8": base64}. Timestamps
// (ext -1) are RFC 3339 strings. It validates b first (codec.Validate:
// every length within b, nesting bounded), and builds no more than about
// maxOutput bytes of JSON: once they are spent, it skips the elements and
// entries left and cuts the string or bytes that passed the mark, and
// reports that it did. So what it allocates is bounded by maxOutput and
// len(b), whatever the bytes.
func msgpackJSON(b []byte, maxOutput int) (v any, truncated bool, err error) {
	if err := codec.Validate(b, codec.DefaultMaxDepth); err != nil {
		return nil, false, err
	}
	g := generic{d: msgpack.NewDecoder(bytes.NewReader(b)), left: maxOutput}
	v, err = g.decode(0)
	if err != nil {
		return nil, false, fmt.Errorf("%w: %w", codec.ErrCorrupt, err)
	}
	return v, g.truncated, nil
}

// generic decodes msgpack into JSON values within a budget of output.
type generic struct {
	d         *msgpack.Decoder
	left      int  // bytes of JSON still allowed; none left once negative
	truncated bool // something was left out or cut
}

// spend takes n bytes of JSON from the budget and reports whether there
// were any left.
func (g *generic) spend(n int) bool {
	if g.left <= 0 {
		g.truncated = true
		return false
	}
	g.left -= n
	return true
}

// cut returns s cut to what is left of the budget, at a rune boundary.
func (g *generic) cut(s string) string {
	g.left -= 2 // the quotes
	if len(s) <= max(g.left, 0) {
		g.left -= len(s)
		return s
	}
	g.truncated = true
	n := max(g.left, 0)
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	g.left = 0
	return s[:n]
}

// cutBytes is cut for bytes printed in base64 as the one entry of a map
// nested depth deep.
func (g *generic) cutBytes(p []byte, depth int) string {
	g.left -= 2*depth + 24 // the map around, its key, quotes
	if fits := max(g.left, 0) / 4 * 3; len(p) > fits {
		g.truncated = true
		p = p[:fits]
	}
	s := base64.StdEncoding.EncodeToString(p)
	g.left -= len(s)
	return s
}

func (g *generic) decode(depth int) (any, error) {
	if depth > codec.DefaultMaxDepth {
		return nil, fmt.Errorf("nested deeper than %d", codec.DefaultMaxDepth)
	}
	d := g.d
	c, err := d.PeekCode()
	if err != nil {
		return nil, err
	}
	// Each element of a list or a map goes on a line of its own, indented
	// as get prints the value (a field of its result): this much JSON
	// besides the element itself.
	indent := 2*depth + 6
	switch {
	case c == msgpcode.Nil:
		g.left -= 4
		return nil, d.DecodeNil()
	case c == msgpcode.False || c == msgpcode.True:
		g.left -= 5
		return d.DecodeBool()
	case c == msgpcode.Uint8 || c == msgpcode.Uint16 || c == msgpcode.Uint32 || c == msgpcode.Uint64:
		g.left -= 20
		return d.DecodeUint64()
	case msgpcode.IsFixedNum(c) || c == msgpcode.Int8 || c == msgpcode.Int16 || c == msgpcode.Int32 || c == msgpcode.Int64:
		g.left -= 20
		return d.DecodeInt64()
	case c == msgpcode.Float || c == msgpcode.Double:
		g.left -= 24
		f, err := d.DecodeFloat64()
		if err != nil {
			return nil, err
		}
		if math.IsNaN(f) || math.IsInf(f, 0) {
			return fmt.Sprint(f), nil
		}
		return f, nil
	case msgpcode.IsString(c):
		s, err := d.DecodeString()
		if err != nil {
			return nil, err
		}
		if !utf8.ValidString(s) {
			return map[string]any{"$invalid_utf8": g.cutBytes([]byte(s), depth)}, nil
		}
		return g.cut(s), nil
	case msgpcode.IsBin(c):
		p, err := d.DecodeBytes()
		if err != nil {
			return nil, err
		}
		return map[string]any{"$bin": g.cutBytes(p, depth)}, nil
	case msgpcode.IsFixedArray(c) || c == msgpcode.Array16 || c == msgpcode.Array32:
		n, err := d.DecodeArrayLen()
		if err != nil {
			return nil, err
		}
		out := make([]any, 0, min(max(n, 0), 1024)) // grown by what is there
		for range n {
			if !g.spend(indent) {
				if err := d.Skip(); err != nil {
					return nil, err
				}
				continue
			}
			v, err := g.decode(depth + 1)
			if err != nil {
				return nil, err
			}
			out = append(out, v)
		}
		return out, nil
	case msgpcode.IsFixedMap(c) || c == msgpcode.Map16 || c == msgpcode.Map32:
		n, err := d.DecodeMapLen()
		if err != nil {
			return nil, err
		}
		out := make(map[string]any, min(max(n, 0), 1024))
		for range n {
			if !g.spend(indent + 2) { // and a colon and a space after the key
				if err := d.Skip(); err != nil {
					return nil, err
				}
				if err := d.Skip(); err != nil {
					return nil, err
				}
				continue
			}
			k, err := g.decode(depth + 1)
			if err != nil {
				return nil, err
			}
			v, err := g.decode(depth + 1)
			if err != nil {
				return nil, err
			}
			ks, ok := k.(string)
			if !ok {
				ks = fmt.Sprint(k)
			}
			out[ks] = v
		}
		return out, nil
	case msgpcode.IsExt(c):
		id, n, err := d.DecodeExtHeader()
		if err != nil {
			return nil, err
		}
		p := make([]byte, n) // n is within the validated body
		if err := d.ReadFull(p); err != nil {
			return nil, err
		}
		if t, ok := timestamp(id, p); ok {
			g.left -= 40
			return t.UTC().Format(time.RFC3339Nano), nil
		}
		return map[string]any{"$ext": id, "data": g.cutBytes(p, depth)}, nil
	}
	return nil, fmt.Errorf("unexpected msgpack code %#x", c)
}

// timestamp decodes the msgpack timestamp extension (type -1).
func timestamp(id int8, p []byte) (time.Time, bool) {
	if id != -1 {
		return time.Time{}, false
	}
	switch len(p) {
	case 4:
		return time.Unix(int64(binary.BigEndian.Uint32(p)), 0), true
	case 8:
		v := binary.BigEndian.Uint64(p)
		return time.Unix(int64(v&(1<<34-1)), int64(v>>34)), true
	case 12:
		return time.Unix(int64(binary.BigEndian.Uint64(p[4:])), int64(binary.BigEndian.Uint32(p))), true
	}
	return time.Time{}, false
}
