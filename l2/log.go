package l2

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tiercache/tiercache/internal/slots"
)

// Defaults of LogOptions.
const (
	// DefaultLogMaxCount is the most messages a log keeps when
	// LogOptions.MaxCount is zero.
	DefaultLogMaxCount = 1000
	// DefaultLogMaxAge is how long a log keeps a message when
	// LogOptions.MaxAge is zero.
	DefaultLogMaxAge = 10 * time.Second
)

// LogOptions makes every script that publishes an invalidation number it
// and keep it in a log in Redis, in the same atomic step as its write: the
// script increments the log's counter, adds "sq" (the new number) and, on a
// Cluster, "lg" (the log's slot tag) to the message (a msgpack map of at
// most 13 fields, as bus.Message.Marshal writes), appends the message to the
// log (a stream), trims the log to about MaxCount messages and, every 16th
// message, of those older than MaxAge (Redis's approximate trimming, which
// drops whole nodes of the stream, 100 messages each by default: a log
// holds at least MaxCount messages once it has had them, and a few more),
// makes it expire MaxAge later, and publishes the message. A subscriber that sees a number jump, or that reconnects,
// reads what it missed back from the log (ReadLogs) instead of forgetting
// everything it holds.
//
// A server that is not a Cluster has one log, Prefix+"log" with its counter
// Prefix+"seq"; a Cluster one per hash slot, Prefix+"log{t}" and
// Prefix+"seq{t}" where t is the slot's tag (slots.Tags), so that a script
// writes the log of its own keys' slot.
type LogOptions struct {
	// Prefix prefixes the logs' keys, e.g. "tiercache::". Empty means no
	// logs: messages are published as they are. It must not contain '{'.
	Prefix string
	// MaxCount is about the most messages a log keeps (XADD MAXLEN ~).
	// Zero means DefaultLogMaxCount.
	MaxCount int
	// MaxAge is about how long a log keeps a message: older ones are
	// trimmed every 16th write (XTRIM MINID ~), and a log written to no
	// more expires whole MaxAge after its last write. It is counted in milliseconds, rounded up. Zero means
	// DefaultLogMaxAge.
	MaxAge time.Duration
}

func (o LogOptions) withDefaults() (LogOptions, error) {
	if o.Prefix == "" {
		return o, nil
	}
	if strings.Contains(o.Prefix, "{") {
		return o, fmt.Errorf("log prefix %q has a '{': its logs would leave their slots: %w", o.Prefix, ErrInvalid)
	}
	if o.MaxCount < 0 || o.MaxAge < 0 {
		return o, fmt.Errorf("log of %d messages for %v: negative: %w", o.MaxCount, o.MaxAge, ErrInvalid)
	}
	if o.MaxCount == 0 {
		o.MaxCount = DefaultLogMaxCount
	}
	if o.MaxAge == 0 {
		o.MaxAge = DefaultLogMaxAge
	}
	return o, nil
}

// logLua is put before a publishing script when logs are on, with its
// calls to PUBLISH replaced by calls to pub: it takes the log's counter and
// the log (the last two keys, which Go appends: see withLog) off KEYS, then
// pub numbers a message, logs it and publishes it. A counter that Redis
// lost (or that holds something else) starts again from Redis's clock in
// microseconds, above every number it gave before, so that a subscriber
// sees a jump, never a number again; the counter's first message is logged
// with the field "f" (see LogEntry.First). A message that is not a msgpack map
// with room for two more fields is published as it is, unnumbered.
// %d and %d are MaxCount and MaxAge in milliseconds.
const logLua = `local LOGK = table.remove(KEYS)
local SEQK = table.remove(KEYS)
local function pub(ch, msg)
  local h = string.byte(msg, 1)
  if not h or h < 0x80 or h > 0x8d then return redis.call('PUBLISH', ch, msg) end
  local n, first = redis.pcall('INCR', SEQK), {}
  if type(n) == 'table' or n == 1 then
    local t = redis.call('TIME')
    n = tonumber(t[1]) * 1000000 + tonumber(t[2])
    redis.call('SET', SEQK, string.format('%%.0f', n))
    first = {'f', '1'}
  end
  local tail, more = '\162sq' .. cmsgpack.pack(n), 1
  local tag = string.match(LOGK, '{(.*)}$')
  if tag then tail, more = tail .. '\162lg' .. cmsgpack.pack(tag), 2 end
  msg = string.char(h + more) .. string.sub(msg, 2) .. tail
  local id = redis.call('XADD', LOGK, 'MAXLEN', '~', %d, '*', 'm', msg, unpack(first))
  if n %% 16 == 0 then
    local ms = tonumber(string.match(id, '^%%d+'))
    redis.call('XTRIM', LOGK, 'MINID', '~', string.format('%%.0f', ms - %d))
  end
  redis.call('PEXPIRE', LOGK, %d)
  return redis.call('PUBLISH', ch, msg)
end
`

// publishing returns src, a script that publishes with PUBLISH, as the
// Store runs it: with logs on (Options.Log), numbering and logging each
// message (logLua), and, with Options.Sharded, publishing with SPUBLISH.
func (s *Store) publishing(src string) string {
	if s.log.Prefix != "" {
		age := millisUp(s.log.MaxAge)
		src = fmt.Sprintf(logLua, s.log.MaxCount, age, age) +
			strings.ReplaceAll(src, "redis.call('PUBLISH',", "pub(")
	}
	return publishing(src, s.sharded)
}

// logKeys returns the counter and the log of the messages of a script
// whose first key is first.
func (s *Store) logKeys(first string) (seq, log string) {
	if !isCluster(s.c) {
		return s.logSeq, s.logLog
	}
	return s.logKeysAt(slot(first))
}

// withLog returns the keys of a call of a publishing script: keys, then,
// with logs on, the counter and the log of keys[0]'s slot, which logLua
// takes off again.
func (s *Store) withLog(keys []string) []string {
	if s.log.Prefix == "" || len(keys) == 0 {
		return keys
	}
	seq, log := s.logKeys(keys[0])
	return append(slices.Clip(keys), seq, log)
}

// Logs returns the number of logs: 0 when they are off, 1 on a server that
// is not a Cluster, slots.Count on a Cluster (log i is slot i's).
func (s *Store) Logs() int {
	switch {
	case !s.usable() || s.log.Prefix == "":
		return 0
	case isCluster(s.c):
		return slotCount
	}
	return 1
}

// LogIndex returns the index of the log a message's "lg" field names (see
// Logs): 0 for "" on a server that is not a Cluster, the slot of a slot tag
// on a Cluster; false for anything else.
func (s *Store) LogIndex(tag string) (int, bool) {
	if s.Logs() == 0 {
		return 0, false
	}
	if !isCluster(s.c) {
		return 0, tag == ""
	}
	if tag == "" || strings.ContainsAny(tag, "{}") {
		return 0, false
	}
	i := slots.Of("{" + tag + "}")
	return i, slots.Tags()[i] == tag
}

// logKeysAt returns the counter and the log of log i.
func (s *Store) logKeysAt(i int) (seq, log string) {
	if !isCluster(s.c) {
		return s.logSeq, s.logLog
	}
	tag := "{" + slots.Tags()[i] + "}"
	return s.log.Prefix + "seq" + tag, s.log.Prefix + "log" + tag
}

// startLogSrc starts the counter KEYS[1] from Redis's clock in
// microseconds when it does not exist, as logLua would, and returns it.
const startLogSrc = `local t = redis.call('TIME')
redis.call('SET', KEYS[1], string.format('%.0f', tonumber(t[1]) * 1000000 + tonumber(t[2])), 'NX')
return redis.call('GET', KEYS[1])`

var startLogScript = redis.NewScript(startLogSrc)

// LogHeads returns the latest number of each log in logs (indexes, see
// Logs), in one round trip per node: 0 for a log without a counter (that
// never numbered a message, or whose counter Redis lost). With start, it
// starts the counters that do not exist first, so that the next message of
// every log is numbered one above the head returned.
func (s *Store) LogHeads(ctx context.Context, logs []int, start bool) ([]uint64, error) {
	if s.Logs() == 0 {
		return nil, fmt.Errorf("l2 log heads: %w", errNoLog)
	}
	heads := make([]uint64, len(logs))
	if len(logs) == 0 {
		return heads, nil
	}
	first, _ := s.logKeysAt(logs[0])
	err := s.call(ctx, s.logTimeout(len(logs)), "l2 log heads", first, len(logs), func(ctx context.Context) error {
		cmds := make([]*redis.Cmd, len(logs))
		send := func(p redis.Pipeliner) error {
			for j, i := range logs {
				seq, _ := s.logKeysAt(i)
				if start {
					cmds[j] = startLogScript.Eval(ctx, p, []string{seq})
				} else {
					cmds[j] = p.Do(ctx, "get", seq)
				}
			}
			return nil
		}
		_, err := s.c.Pipelined(ctx, send)
		if err != nil && !errors.Is(err, redis.Nil) {
			return err
		}
		for j, c := range cmds {
			v, err := c.Text()
			if errors.Is(err, redis.Nil) {
				continue
			}
			if err != nil {
				return err
			}
			if heads[j], err = strconv.ParseUint(v, 10, 64); err != nil {
				return fmt.Errorf("counter of log %d holds %.40q: %w", logs[j], v, err)
			}
		}
		return nil
	})
	return heads, err
}

// LogEntry is one message a log keeps.
type LogEntry struct {
	// Msg is the message, numbered. A log entry that is not a message
	// reads as "", which no decoder accepts.
	Msg string
	// First says that Msg's number is the first its counter gave: numbers
	// before it, if any, came from a counter Redis lost since.
	First bool
}

// LogEntries returns the messages each log in logs keeps, oldest first, in
// one round trip per node.
func (s *Store) LogEntries(ctx context.Context, logs []int) ([][]LogEntry, error) {
	if s.Logs() == 0 {
		return nil, fmt.Errorf("l2 log entries: %w", errNoLog)
	}
	out := make([][]LogEntry, len(logs))
	if len(logs) == 0 {
		return out, nil
	}
	_, first := s.logKeysAt(logs[0])
	err := s.call(ctx, s.logTimeout(len(logs)), "l2 log entries", first, len(logs), func(ctx context.Context) error {
		cmds := make([]*redis.XMessageSliceCmd, len(logs))
		_, err := s.c.Pipelined(ctx, func(p redis.Pipeliner) error {
			for j, i := range logs {
				_, log := s.logKeysAt(i)
				cmds[j] = p.XRange(ctx, log, "-", "+")
			}
			return nil
		})
		if err != nil {
			return err
		}
		for j, c := range cmds {
			for _, e := range c.Val() {
				m, _ := e.Values["m"].(string)
				_, first := e.Values["f"]
				out[j] = append(out[j], LogEntry{Msg: m, First: first})
			}
		}
		return nil
	})
	return out, err
}

// logTimeout is the budget of a read of n logs: the read budget, and 50µs
// more per log. A Cluster's 16384 heads, one GET each in one pipeline per
// master, took 100 to 170ms on a busy 2-core machine, up to 760ms with the
// race detector: their budget is the read budget and 819ms.
func (s *Store) logTimeout(n int) time.Duration {
	if s.readTimeout < 0 {
		return s.readTimeout
	}
	d := s.readTimeout
	if d == 0 {
		d = DefaultReadTimeout
	}
	return d + time.Duration(n)*50*time.Microsecond
}

var errNoLog = errors.New("logs are off (Options.Log)")

// publishSrc publishes ARGV[2] on channel ARGV[1], and nothing else: with
// logs on, numbered and logged as every write script's message.
const publishSrc = `return redis.call('PUBLISH', ARGV[1], ARGV[2])`

// Publish publishes msg on channel as a write script does, with nothing
// written: numbered and kept in the log of key's slot with Options.Log,
// and, with Options.Sharded, on the sharded channel of that slot. key is
// only the slot's name; it is neither read nor written.
func (s *Store) Publish(ctx context.Context, key, channel string, msg []byte) error {
	if !s.usable() {
		return fmt.Errorf("l2 publish: %w", errNoStore)
	}
	if key == "" || channel == "" {
		return fmt.Errorf("l2 publish: empty key or channel: %w", ErrInvalid)
	}
	return s.call(ctx, s.writeTimeout, "l2 publish", key, 1, func(ctx context.Context) error {
		ch := s.pubChannel(channel, key)
		cmd, _ := s.runPub(ctx, s.publishScript, ch, msg, []string{key}, ch, msg)
		return cmd.Err()
	})
}

// republished returns msg, a message a script whose first key was first
// published, ready to be published again after an ASK redirection (see
// runPub): the script numbered and logged it on the importing master, and
// the number cannot be had back, so with logs on the message names its log
// ("lg", the slot's tag) without a number, which tells a subscriber to read
// that log back rather than take the message for an unnumbered
// publisher's. A message that is not a msgpack map with room for one more
// field is returned as it is.
func (s *Store) republished(first string, msg []byte) []byte {
	if s.log.Prefix == "" || !isCluster(s.c) || len(msg) == 0 || msg[0] < 0x80 || msg[0] > 0x8e {
		return msg
	}
	tag := slots.Tags()[slot(first)]
	out := make([]byte, 0, len(msg)+4+len(tag))
	out = append(out, msg[0]+1)
	out = append(out, msg[1:]...)
	out = append(out, 0xa2, 'l', 'g', 0xa0|byte(len(tag)))
	return append(out, tag...)
}
