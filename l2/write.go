package l2

import (
	"context"
	"fmt"
	"slices"
)

// Op is one write of WriteAndPublish: a SET of Item, or a DEL of Item.Key
// when Delete is true (Value and TTL are then ignored).
type Op struct {
	Item
	Delete bool
}

// writeAndPublishSrc applies one op per key, in order, after the PUBLISH
// of ARGV[2] on channel ARGV[1] (see setAndPublishSrc for why first) and
// after moving the fences: ARGV[3] is the number of ops, the keys after
// them in KEYS are their fences, and ARGV[2+2i] and ARGV[3+2i] are the
// value and the TTL in milliseconds of KEYS[i], or "" and "" for a DEL.
// Each op runs under pcall, so that one refused op does not stop the
// others. It returns, per op, 1 or the error message.
const writeAndPublishSrc = fenceLua + `redis.call('PUBLISH', ARGV[1], ARGV[2])
local k = tonumber(ARGV[3])
for i = k + 1, #KEYS do bump(KEYS[i]) end
local res = {}
for i = 1, k do
  local r
  if ARGV[3 + 2*i] == '' then
    r = redis.pcall('DEL', KEYS[i])
  else
    r = redis.pcall('SET', KEYS[i], ARGV[2 + 2*i], 'PX', ARGV[3 + 2*i])
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
	args := make([]any, 3, 2*len(ops)+3)
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
	args[0], args[1], args[2] = s.pubChannel(channel, keys[0]), msg, len(ops)
	all := append(slices.Clip(keys), s.fenceKeys(keys)...)
	var res []any
	err = s.call(ctx, s.writeTimeout, "l2 write and publish", keys[0], len(keys), func(ctx context.Context) (err error) {
		cmd, _ := s.runPub(ctx, s.writeScript, args[0].(string), msg, all, args...)
		res, err = cmd.Slice()
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
