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

// decodeEnvelope reads data, a value from Redis, through the codec's
// bounded decoding (validated before msgpack sees it, decompression capped
// at codec.DefaultMaxSize) and returns its header and its body as generic
// JSON values: nil for a tombstone or a lease. A value the codec refuses is
// returned as an error, with what the header says.
func decodeEnvelope(data []byte) (envelope, any, error) {
	env := envelope{Size: len(data)}
	if len(data) == 0 {
		return env, nil, fmt.Errorf("%w: empty value", codec.ErrCorrupt)
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
	var raw msgpack.RawMessage
	err := (*codec.Codec)(nil).Unmarshal(data, &raw)
	switch {
	case errors.Is(err, codec.ErrTombstone):
		return env, nil, nil
	case errors.Is(err, codec.ErrLease):
		env.LeaseOwner = string(data[1:])
		return env, nil, nil
	case err != nil:
		return env, nil, err
	}
	if len(raw) == 0 { // msgpack leaves a RawMessage empty for a nil body
		env.BodySize = 1
		return env, nil, nil
	}
	env.BodySize = len(raw)
	v, err := msgpackJSON(raw)
	return env, v, err
}

// msgpackJSON decodes one msgpack object into values that
// encoding/json prints faithfully: maps keyed by strings (other keys are
// formatted), int64 or uint64, float64 (NaN and infinities as strings),
// strings, and notes for what JSON has no type for: {"$bin": base64},
// {"$ext": type, "data": base64}, {"$invalid_utf8": base64}. Timestamps
// (ext -1) are RFC 3339 strings. It validates b first (codec.Validate:
// every length within b, nesting bounded), so that what it allocates is a
// small multiple of len(b) whatever the bytes.
func msgpackJSON(b []byte) (any, error) {
	if err := codec.Validate(b, codec.DefaultMaxDepth); err != nil {
		return nil, err
	}
	d := msgpack.NewDecoder(bytes.NewReader(b))
	v, err := decodeGeneric(d, 0)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", codec.ErrCorrupt, err)
	}
	return v, nil
}

func decodeGeneric(d *msgpack.Decoder, depth int) (any, error) {
	if depth > codec.DefaultMaxDepth {
		return nil, fmt.Errorf("nested deeper than %d", codec.DefaultMaxDepth)
	}
	c, err := d.PeekCode()
	if err != nil {
		return nil, err
	}
	switch {
	case c == msgpcode.Nil:
		return nil, d.DecodeNil()
	case c == msgpcode.False || c == msgpcode.True:
		return d.DecodeBool()
	case c == msgpcode.Uint8 || c == msgpcode.Uint16 || c == msgpcode.Uint32 || c == msgpcode.Uint64:
		return d.DecodeUint64()
	case msgpcode.IsFixedNum(c) || c == msgpcode.Int8 || c == msgpcode.Int16 || c == msgpcode.Int32 || c == msgpcode.Int64:
		return d.DecodeInt64()
	case c == msgpcode.Float || c == msgpcode.Double:
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
			return map[string]any{"$invalid_utf8": base64.StdEncoding.EncodeToString([]byte(s))}, nil
		}
		return s, nil
	case msgpcode.IsBin(c):
		p, err := d.DecodeBytes()
		if err != nil {
			return nil, err
		}
		return map[string]any{"$bin": base64.StdEncoding.EncodeToString(p)}, nil
	case msgpcode.IsFixedArray(c) || c == msgpcode.Array16 || c == msgpcode.Array32:
		n, err := d.DecodeArrayLen()
		if err != nil {
			return nil, err
		}
		out := make([]any, 0, min(max(n, 0), 1024)) // grown by what is there
		for range n {
			v, err := decodeGeneric(d, depth+1)
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
			k, err := decodeGeneric(d, depth+1)
			if err != nil {
				return nil, err
			}
			v, err := decodeGeneric(d, depth+1)
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
			return t.UTC().Format(time.RFC3339Nano), nil
		}
		return map[string]any{"$ext": id, "data": base64.StdEncoding.EncodeToString(p)}, nil
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
