package codec

import (
	"fmt"
	"io"
	"runtime"
)

// decodeMapLen is the function msgpack uses to read a map header. When it
// finds an ext header where it expects a map, it skips the ext header and
// reads the ext's payload as the map header and entries.
const decodeMapLen = "github.com/vmihailenco/msgpack/v5.(*Decoder).DecodeMapLen"

// guardReader is the io.Reader and io.ByteScanner that msgpack decodes a
// validated body from. Reading never aliases b: msgpack copies what it reads.
//
// It refuses to let msgpack's DecodeMapLen read the first byte of a non-empty
// ext payload as a map header or nil. That is the one way msgpack reads an
// ext's opaque payload as msgpack, which would bypass Validate; legitimate
// readers of a payload (the time and interned-string decoders, RegisterExt)
// come through Read or through other functions.
type guardReader struct {
	b      []byte
	i      int   // offset of the next byte to read
	guards []int // increasing offsets of ext payloads that start with a map header or nil
	g      int   // guards[:g] are all below i
}

func (r *guardReader) reset(b []byte, guards []int) {
	*r = guardReader{b: b, guards: guards}
}

// Read implements io.Reader.
func (r *guardReader) Read(p []byte) (int, error) {
	if r.i >= len(r.b) {
		if len(p) == 0 {
			return 0, nil
		}
		return 0, io.EOF
	}
	n := copy(p, r.b[r.i:])
	r.i += n
	return n, nil
}

// ReadByte implements io.ByteReader.
func (r *guardReader) ReadByte() (byte, error) {
	if r.i >= len(r.b) {
		return 0, io.EOF
	}
	for r.g < len(r.guards) && r.guards[r.g] < r.i {
		r.g++
	}
	if r.g < len(r.guards) && r.guards[r.g] == r.i && calledFrom(decodeMapLen) {
		// decode wraps this with ErrCorrupt.
		return 0, fmt.Errorf("ext payload at offset %d decoded as a map", r.i)
	}
	c := r.b[r.i]
	r.i++
	return c, nil
}

// UnreadByte implements io.ByteScanner.
func (r *guardReader) UnreadByte() error {
	if r.i == 0 {
		return fmt.Errorf("codec: UnreadByte at offset 0")
	}
	r.i--
	return nil
}

// calledFrom reports whether fn is among the closest callers of the function
// that calls calledFrom. It is slow (a stack walk), so ReadByte only calls it
// for the rare byte that starts a guarded ext payload.
func calledFrom(fn string) bool {
	var pcs [8]uintptr
	frames := runtime.CallersFrames(pcs[:runtime.Callers(3, pcs[:])])
	for {
		f, more := frames.Next()
		if f.Function == fn {
			return true
		}
		if !more {
			return false
		}
	}
}
