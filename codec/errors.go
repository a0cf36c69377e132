package codec

import "errors"

var (
	// ErrCorrupt is returned (wrapped) by Unmarshal and Validate when data is
	// not a well-formed envelope or msgpack body, or cannot be decoded into the
	// destination value. Callers should treat it as a cache miss.
	ErrCorrupt = errors.New("codec: corrupt value")

	// ErrVersion is returned (wrapped) by Unmarshal when the header names a
	// format version this package does not know. It is distinct from
	// ErrCorrupt so that callers can treat values written by a newer release
	// as misses without reporting them as corruption.
	ErrVersion = errors.New("codec: unknown format version")

	// ErrTooLarge is returned (wrapped) by Marshal when the msgpack body is
	// larger than Options.MaxSize, and by Unmarshal when the decoded body
	// would be.
	ErrTooLarge = errors.New("codec: value too large")

	// ErrTooComplex is returned (wrapped) by Unmarshal and UnmarshalCost
	// when decoding the value could build more heap than Options.MaxHeap:
	// a body within MaxSize whose objects would become far larger Go values,
	// such as millions of one-byte nils decoding to string headers or to
	// zero structs. Unlike ErrTooLarge, which marks a legitimately written
	// value bigger than this replica accepts, ErrTooComplex marks a value
	// that is hostile or corrupt (or so big once decoded that no replica
	// configured like this one can use it): callers should treat it as they
	// treat ErrCorrupt and delete it. A keyspace whose honest values build
	// that much needs a larger MaxHeap. The check comes before decoding, so
	// a refused value costs a walk over its body, not the heap it asks for.
	ErrTooComplex = errors.New("codec: value too complex")

	// ErrTombstone is returned by Unmarshal when data is a tombstone, the
	// negative-cache marker made by Tombstone.
	ErrTombstone = errors.New("codec: tombstone")

	// ErrLease is returned by Unmarshal when data is a lease, the marker a
	// loader stores while it loads the key (see Lease).
	ErrLease = errors.New("codec: lease")
)
