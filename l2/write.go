package l2

import (
	"context"
	"fmt"
)

// Op is one write of WriteAndPublish: a SET of Item, or a DEL of Item.Key
// when Delete is true (Value and TTL are then ignored).
type Op struct {
	Item
	Delete bool
}

// writeAndPublishSrc applies one op per key, in order: ARGV[2i-1] is the
// value and ARGV[2i] the TTL in milliseconds of KEYS[i], or "" and "" for a
// DEL, after the PUBLISH of ARGV[#ARGV] on channel ARGV[#ARGV-1] (see
// setAndPublishSrc for why first). Each op runs under pcall, so that one
// refused op does not stop the others. It returns, per op, 1 or the error
// message.
const writeAndPublishSrc = `redis.call('PUBLISH', ARGV[#ARGV-1], ARGV[#ARGV])
local res = {}
for i = 1, #KEYS do
  local r
  if ARGV[2*i] == '' then
    r = redis.pcall('DEL', KEYS[i])
  else
    r = redis.pcall('SET', KEYS[i], ARGV[2*i-1], 'PX', ARGV[2*i])
  end
  if type(r) == 'table' and r.err then res[i] = r.err else res[i] = 1 end
end
return res`

// OpError is the error of one op of WriteAndPublish that Redis refused
// while the others, and the PUBLISH, went through.
type OpError struct {
	Key string
	Msg string // Redis's error message
}

func (e *OpError) Error() string { return fmt.Sprintf("l2 write %q: %s", e.Key, e.Msg) }

// WriteAndPublish publishes msg on channel and applies ops in order,
// atomically and in one round trip (two when the server does not have the
// script yet). It returns one error per op: nil, or an *OpError for an op
// Redis refused (out of memory, a wrong type); the PUBLISH runs in any case.
// A transport error, or invalid arguments, fail every op: err is then set and
// errs nil. On a *redis.ClusterClient every key must be in one hash slot.
func (s *Store) WriteAndPublish(ctx context.Context, ops []Op, channel string, msg []byte) (errs []error, err error) {
	if !s.usable() {
		return nil, fmt.Errorf("l2 write and publish: %w", errNoStore)
	}
	if len(ops) == 0 {
		return nil, fmt.Errorf("l2 write and publish: no ops: %w", ErrInvalid)
	}
	keys := make([]string, len(ops))
	args := make([]any, 0, 2*len(ops)+2)
	for i := range ops {
		op := &ops[i]
		if op.Delete {
			if op.Key == "" {
				return nil, fmt.Errorf("l2 write and publish: op %d of %d: empty key: %w", i, len(ops), ErrInvalid)
			}
			args = append(args, "", "")
		} else {
			if err := op.validate(); err != nil {
				return nil, fmt.Errorf("l2 write and publish: op %d of %d: %w", i, len(ops), err)
			}
			args = append(args, op.Value, pxMillis(op.TTL))
		}
		keys[i] = op.Key
	}
	what := describe("l2 write and publish", keys[0], len(keys))
	if channel == "" {
		return nil, fmt.Errorf("%s: empty channel: %w", what, ErrInvalid)
	}
	if err := scriptable(s.c, keys); err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	args = append(args, channel, msg)
	var res []any
	err = s.call(ctx, s.writeTimeout, "l2 write and publish", keys[0], len(keys), func(ctx context.Context) (err error) {
		res, err = s.writeScript.Run(ctx, s.c, keys, args...).Slice()
		return err
	})
	if err != nil {
		return nil, err
	}
	if len(res) != len(ops) {
		return nil, fmt.Errorf("%s: %d results for %d ops", what, len(res), len(ops))
	}
	errs = make([]error, len(ops))
	for i, r := range res {
		switch r := r.(type) {
		case int64:
		case string:
			errs[i] = &OpError{Key: keys[i], Msg: r}
		case error:
			errs[i] = &OpError{Key: keys[i], Msg: r.Error()}
		default:
			errs[i] = &OpError{Key: keys[i], Msg: fmt.Sprintf("unexpected result %v", r)}
		}
	}
	return errs, nil
}
