package bus

import "errors"

// ErrMalformed reports a message that is not a valid invalidation: not a
// msgpack map, a field of the wrong type, truncated, trailing bytes, or a
// message that would evict nothing. Unmarshal wraps it with the reason.
var ErrMalformed = errors.New("bus: malformed message")

// ErrVersion reports a message whose format version ("v") is not
// WireVersion. A subscriber counts such a message as malformed and ignores it.
var ErrVersion = errors.New("bus: unknown message version")

// ErrTooLarge reports a message longer than Limits.MaxBytes or with more keys
// or tags than Limits.MaxKeys. Marshal returns it for a message that a
// subscriber with default Limits would refuse.
var ErrTooLarge = errors.New("bus: message too large")

// ErrStarted is returned by Start when the Subscriber was already started.
var ErrStarted = errors.New("bus: subscriber already started")

// ErrStopped is returned by Start when Stop was called before it.
var ErrStopped = errors.New("bus: subscriber stopped")
