package l2

import "errors"

// ErrMiss reports that a key is not in Redis. Get returns it unwrapped (a
// miss is a normal, frequent outcome and costs no allocation); compare with
// errors.Is.
var ErrMiss = errors.New("l2: miss")

// ErrInvalid reports a call that can never succeed: an empty key or channel,
// a TTL that is not positive, no keys, a nil client or store, or keys that
// the client's topology cannot run in one script. It is always wrapped with
// the operation and the offending argument.
var ErrInvalid = errors.New("l2: invalid argument")
