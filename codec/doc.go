// Package codec turns Go values into the byte envelopes that tiercache stores
// in Redis, and back.
//
// An envelope is one header byte followed by a body. The body is the
// msgpack encoding of the value (github.com/vmihailenco/msgpack/v5, with its
// default `msgpack:"..."` struct tags), compressed with the S2 block format
// (github.com/klauspost/compress/s2) when it is larger than a threshold.
//
// # Wire format
//
// The header byte is a stable wire format:
//
//	bit:   7  6  5   4       3      2      1           0
//	field: version   expiry  delta  lease  tombstone   compressed
//
// The fields mean:
//
//   - Bits 7..5 hold the format version, currently 1, so the header of a
//     plain version 1 value is 0x20 and that of a compressed one is 0x21.
//   - Bit 0 (compressed): the body is an S2 block (s2.Encode, not the S2
//     stream format) that decodes to the msgpack body.
//   - Bit 1 (tombstone): the envelope is a negative-cache marker; its body
//     is empty and the compressed bit is clear, so a tombstone is exactly
//     the single byte 0x22.
//   - Bit 2 (lease): the envelope marks a load in progress; its body is the
//     owner's token (1 to MaxLeaseToken bytes) and no other flag is set.
//   - Bit 3 (delta): the body is preceded by an unsigned varint (as
//     encoding/binary writes it) holding the time the value took to load, in
//     microseconds, at most 2^40; it feeds early refresh. It combines with
//     compressed, never with tombstone or lease.
//   - Bit 4 (expiry): an unsigned varint holding the value's logical
//     expiry, in Unix milliseconds, at most 2^48, precedes the body (after
//     the load duration, when bit 3 is set too). A store keeps such a
//     value past it, for fail-safe reads, and knows it expired. It
//     combines with compressed and delta, never with tombstone or lease.
//     Values without it (all those of earlier releases) have no logical
//     expiry. A release that predates this bit reads a value with it as
//     corrupt.
//
// Unmarshal reports an unknown version with ErrVersion before looking at any
// other bit, since a later version may give them a new meaning; everything
// else that is wrong with an envelope is ErrCorrupt.
//
// # Bounded decoding
//
// Values read from Redis are untrusted. msgpack v5 trusts the lengths it
// reads (a five byte array header can make it allocate gigabytes) and
// recurses once per nesting level, so Unmarshal never hands it bytes that
// Validate has not accepted: exactly one object, every length present in
// the input, every element count no larger than the bytes left, nesting no
// deeper than Options.MaxDepth. A compressed body is refused before it is
// decompressed if its declared length exceeds Options.MaxSize.
//
// Bytes do not bound the heap, though: a one-byte nil becomes a 16-byte
// string header in a []string, a whole zero struct in a slice of structs,
// an entry in a map. So Unmarshal then computes, in one more pass over the
// body guided by the Go type of the destination, an upper bound of the
// heap that the decoded value will hold (UnmarshalCost returns it), and
// refuses the body with ErrTooComplex if the bound exceeds Options.MaxHeap,
// before msgpack allocates any of it. A refused body costs the walk and,
// if it was compressed, its decompressed copy. Decoding an accepted one
// allocates at most about twice the bound, plus msgpack's buffers.
//
// msgpack also decodes an ext header followed by a map as that map when the
// destination is a Go map, which would let it read an ext's opaque payload
// as msgpack. Validate therefore rejects an empty ext followed by a map or
// nil, and Unmarshal fails any attempt to read a non-empty ext payload as a
// map header.
package codec
