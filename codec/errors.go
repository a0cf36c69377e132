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

	// ErrTombstone is returned by Unmarshal when data is a tombstone, the
	// negative-cache marker made by Tombstone.
	ErrTombstone = errors.New("codec: tombstone")

	// ErrLease is returned by Unmarshal when data is a lease, the marker a
	// loader stores while it loads the key (see Lease).
	ErrLease = errors.New("codec: lease")
)
