package codec

import (
	"encoding/binary"
	"fmt"
)

// msgpack format codes used by the validator.
const (
	codeNil      = 0xc0
	codeNever    = 0xc1
	codeFixMap   = 0x80 // 0x80..0x8f
	codeFixArray = 0x90 // 0x90..0x9f
	codeFixStr   = 0xa0 // 0xa0..0xbf
	codeNegFix   = 0xe0 // 0xe0..0xff
	codeMap16    = 0xde
	codeMap32    = 0xdf
)

// Validate checks that b is exactly one well-formed msgpack object whose
// decoding needs a bounded amount of memory and stack. It walks the encoding
// once, iteratively, and rejects (with an error wrapping ErrCorrupt that names
// the offset in b):
//
//   - input that is empty, truncated, or followed by trailing bytes;
//   - the never-used code 0xc1;
//   - a str, bin or ext whose length runs past the end of b;
//   - an array claiming more elements than bytes remain, or a map claiming
//     more entries than half the bytes that remain;
//   - arrays and maps nested more than maxDepth deep (an empty container
//     counts as a level); a maxDepth of zero or less means DefaultMaxDepth;
//   - an ext with an empty payload followed by a map or nil, which msgpack
//     decodes as a single map when the destination is a Go map.
//
// Ext payloads are opaque: Validate checks their length, not their content.
// Validate does not allocate.
func Validate(b []byte, maxDepth int) error {
	return validate(b, maxDepth, nil)
}

// validate implements Validate. If guards is not nil, validate appends to it,
// in increasing order, the offset of every non-empty ext payload that starts
// with a byte msgpack's DecodeMapLen would accept after skipping the ext
// header (a map header or nil); see guardReader.
func validate(b []byte, maxDepth int, guards *[]int) error {
	if maxDepth <= 0 {
		maxDepth = DefaultMaxDepth
	}
	if len(b) == 0 {
		return fmt.Errorf("%w: empty msgpack body", ErrCorrupt)
	}

	// stack holds, for each open array or map, innermost last, how many
	// objects it still expects (two per map entry). The fixed array keeps
	// Validate allocation-free at the default depth.
	var fixed [DefaultMaxDepth]int
	stack := fixed[:0]

	i := 0
	for {
		if i >= len(b) {
			return fmt.Errorf("%w: truncated: object expected at offset %d", ErrCorrupt, i)
		}
		start := i
		c := b[i]
		i++

		var (
			container bool
			elems     int // objects a container holds (two per map entry)
		)
		switch {
		case c < codeFixMap || c >= codeNegFix: // positive or negative fixint
		case c < codeFixArray: // fixmap
			container, elems = true, 2*int(c&0x0f)
			if elems > len(b)-i {
				return fmt.Errorf("%w: map at offset %d claims %d entries, %d bytes remain", ErrCorrupt, start, c&0x0f, len(b)-i)
			}
		case c < codeFixStr: // fixarray
			container, elems = true, int(c&0x0f)
			if elems > len(b)-i {
				return fmt.Errorf("%w: array at offset %d claims %d elements, %d bytes remain", ErrCorrupt, start, elems, len(b)-i)
			}
		case c < codeNil: // fixstr
			n := int(c & 0x1f)
			if n > len(b)-i {
				return fmt.Errorf("%w: str at offset %d claims %d bytes, %d remain", ErrCorrupt, start, n, len(b)-i)
			}
			i += n
		default:
			switch c {
			case codeNil, 0xc2, 0xc3: // nil, false, true
			case codeNever:
				return fmt.Errorf("%w: never-used code 0xc1 at offset %d", ErrCorrupt, start)
			case 0xcc, 0xd0: // uint8, int8
				i += 1
			case 0xcd, 0xd1: // uint16, int16
				i += 2
			case 0xca, 0xce, 0xd2: // float32, uint32, int32
				i += 4
			case 0xcb, 0xcf, 0xd3: // float64, uint64, int64
				i += 8
			case 0xc4, 0xc5, 0xc6, 0xd9, 0xda, 0xdb: // bin8/16/32, str8/16/32
				n, w, ok := length(b[i:], c)
				if !ok {
					return fmt.Errorf("%w: truncated length of %s at offset %d", ErrCorrupt, kindName(c), start)
				}
				i += w
				if n > uint64(len(b)-i) {
					return fmt.Errorf("%w: %s at offset %d claims %d bytes, %d remain", ErrCorrupt, kindName(c), start, n, len(b)-i)
				}
				i += int(n)
			case 0xd4, 0xd5, 0xd6, 0xd7, 0xd8, 0xc7, 0xc8, 0xc9: // fixext1/2/4/8/16, ext8/16/32
				var n uint64
				if c >= 0xd4 {
					n = 1 << (c - 0xd4)
				} else {
					var w int
					var ok bool
					n, w, ok = length(b[i:], c)
					if !ok {
						return fmt.Errorf("%w: truncated length of ext at offset %d", ErrCorrupt, start)
					}
					i += w
				}
				// The ext type byte, then the payload.
				if n+1 > uint64(len(b)-i) {
					return fmt.Errorf("%w: ext at offset %d claims %d bytes, %d remain", ErrCorrupt, start, n, max(len(b)-i-1, 0))
				}
				i++
				if n == 0 && i < len(b) && mapOrNil(b[i]) {
					return fmt.Errorf("%w: empty ext at offset %d is followed by a map or nil", ErrCorrupt, start)
				}
				if n > 0 && guards != nil && mapOrNil(b[i]) {
					*guards = append(*guards, i)
				}
				i += int(n)
			case 0xdc, 0xdd, codeMap16, codeMap32: // array16/32, map16/32
				n, w, ok := length(b[i:], c)
				if !ok {
					return fmt.Errorf("%w: truncated length of %s at offset %d", ErrCorrupt, kindName(c), start)
				}
				i += w
				rest := uint64(len(b) - i)
				if c == codeMap16 || c == codeMap32 {
					if n > rest/2 {
						return fmt.Errorf("%w: map at offset %d claims %d entries, %d bytes remain", ErrCorrupt, start, n, rest)
					}
					n *= 2
				} else if n > rest {
					return fmt.Errorf("%w: array at offset %d claims %d elements, %d bytes remain", ErrCorrupt, start, n, rest)
				}
				container, elems = true, int(n)
			}
		}
		if i > len(b) {
			return fmt.Errorf("%w: truncated %s at offset %d", ErrCorrupt, kindName(c), start)
		}

		if container {
			if len(stack) >= maxDepth {
				return fmt.Errorf("%w: %s at offset %d nests deeper than %d", ErrCorrupt, kindName(c), start, maxDepth)
			}
			if elems > 0 {
				stack = append(stack, elems)
				continue
			}
		}

		// An object is complete: count it against its container, and close
		// every container that this completes.
		for len(stack) > 0 {
			top := len(stack) - 1
			stack[top]--
			if stack[top] > 0 {
				break
			}
			stack = stack[:top]
		}
		if len(stack) == 0 {
			if i != len(b) {
				return fmt.Errorf("%w: %d trailing bytes at offset %d", ErrCorrupt, len(b)-i, i)
			}
			return nil
		}
	}
}

// length reads the big-endian length that follows code c at the start of b,
// returning it, its width in bytes, and false if b is too short.
func length(b []byte, c byte) (n uint64, width int, ok bool) {
	switch c {
	case 0xc4, 0xc7, 0xd9: // bin8, ext8, str8
		width = 1
	case 0xc5, 0xc8, 0xda, 0xdc, codeMap16: // bin16, ext16, str16, array16, map16
		width = 2
	default: // bin32, ext32, str32, array32, map32
		width = 4
	}
	if len(b) < width {
		return 0, 0, false
	}
	switch width {
	case 1:
		n = uint64(b[0])
	case 2:
		n = uint64(binary.BigEndian.Uint16(b))
	default:
		n = uint64(binary.BigEndian.Uint32(b))
	}
	return n, width, true
}

// mapOrNil reports whether c is a map header or nil: the codes msgpack's
// DecodeMapLen accepts right after skipping an ext header.
func mapOrNil(c byte) bool {
	return c == codeNil || c == codeMap16 || c == codeMap32 || c&0xf0 == codeFixMap
}

// kindName names the kind of object that code c starts, for error messages.
func kindName(c byte) string {
	switch {
	case c < codeFixMap || c >= codeNegFix:
		return "int"
	case c < codeFixArray || c == codeMap16 || c == codeMap32:
		return "map"
	case c < codeFixStr || c == 0xdc || c == 0xdd:
		return "array"
	case c < codeNil || c == 0xd9 || c == 0xda || c == 0xdb:
		return "str"
	case c == 0xc4 || c == 0xc5 || c == 0xc6:
		return "bin"
	case c == 0xc7 || c == 0xc8 || c == 0xc9 || (c >= 0xd4 && c <= 0xd8):
		return "ext"
	case c == 0xca || c == 0xcb:
		return "float"
	case c == codeNil:
		return "nil"
	case c == 0xc2 || c == 0xc3:
		return "bool"
	default:
		return "int"
	}
}
