package l2

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// Write-behind streams.
//
// A write-behind write is recorded as an entry of a Redis Stream, with the
// fields "key" (the record's key) and "value" (opaque bytes), read by the
// consumers of one consumer group. Beside the stream, under keys derived
// from its name (see NewStream), live:
//
//   - the last hash, mapping each record key to the id of its latest
//     record, set by the script that adds the record. A record that is no
//     longer its key's latest need not be written: the later one carries
//     the value.
//   - one marker per record key being written, holding the consumer that
//     writes it, with a time to live (the lease). A consumer writes a key
//     only while it holds the key's marker, so no two consumers write one
//     key at the same time, and an older value never lands after a newer.
//   - the dead-letter stream, for records that kept failing.
//
// Acknowledging a record (Ack, DeadLetter) removes it from the stream, so
// the stream holds only what is still to be written. Every method here
// runs one script or command, under the write budget (Options.WriteTimeout):
// reads are not blocking (no BLOCK), since a blocking read would hold a
// pooled connection, could not be interrupted by its context, and would
// need a budget of its own; callers wait between reads instead.

// Stream names the Redis keys of one write-behind stream. Create it with
// NewStream; it is immutable and safe for concurrent use.
type Stream struct {
	key, group, last, dead, marker string

	record, read, autoClaim, hold, prepare, ack, releaseMarkers, deadLetter, lastID *redis.Script
}

// NewStream returns the Stream of key read by consumer group group. key must
// hold a non-empty {hash tag}: the keys derived from it share it, so that a
// Cluster keeps them in one slot. They are key+":last" (the last hash),
// key+":dead" (the dead-letter stream) and key+":flight:"+k (the marker of
// record key k).
func NewStream(key, group string) (*Stream, error) {
	if group == "" {
		return nil, fmt.Errorf("l2 stream %q: empty group: %w", key, ErrInvalid)
	}
	if hashTag(key) == "" {
		return nil, fmt.Errorf("l2 stream %q: no {hash tag} to keep the stream and its keys in one slot: %w", key, ErrInvalid)
	}
	return &Stream{
		key:    key,
		group:  group,
		last:   key + ":last",
		dead:   key + ":dead",
		marker: key + ":flight:",

		record:         redis.NewScript(recordSrc),
		read:           redis.NewScript(readSrc),
		autoClaim:      redis.NewScript(autoClaimSrc),
		hold:           redis.NewScript(holdSrc),
		prepare:        redis.NewScript(prepareSrc),
		ack:            redis.NewScript(ackSrc),
		releaseMarkers: redis.NewScript(releaseMarkersSrc),
		deadLetter:     redis.NewScript(deadLetterSrc),
		lastID:         redis.NewScript(lastIDSrc),
	}, nil
}

// hashTag returns the hash tag of key: what lies between its first '{' and
// the next '}', or "" when there is none.
func hashTag(key string) string {
	i := strings.IndexByte(key, '{')
	if i < 0 {
		return ""
	}
	j := strings.IndexByte(key[i+1:], '}')
	if j <= 0 {
		return ""
	}
	return key[i+1 : i+1+j]
}

// Key returns the stream's key.
func (st *Stream) Key() string { return st.key }

// Group returns the consumer group's name.
func (st *Stream) Group() string { return st.group }

// Last returns the key of the last hash.
func (st *Stream) Last() string { return st.last }

// Dead returns the key of the dead-letter stream.
func (st *Stream) Dead() string { return st.dead }

// Marker returns the key of the marker of record key k.
func (st *Stream) Marker(k string) string { return st.marker + k }

// Record is one entry of a Stream.
type Record struct {
	// ID is the entry's id, "<milliseconds>-<sequence>".
	ID string
	// Key and Value are the entry's fields.
	Key   string
	Value []byte
	// Deliveries counts the deliveries of the entry to a consumer of the
	// group, the one that returned it included; 0 when unknown.
	Deliveries int64
	// Gone reports an entry deleted from the stream while still pending:
	// it has no fields, and only needs acknowledging.
	Gone bool
}

// CompareIDs compares two stream ids as Redis orders them, returning -1, 0
// or +1. An id that does not parse sorts first.
func CompareIDs(a, b string) int {
	am, as := splitID(a)
	bm, bs := splitID(b)
	switch {
	case am != bm:
		return cmp(am, bm)
	default:
		return cmp(as, bs)
	}
}

func cmp(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func splitID(id string) (ms, seq uint64) {
	m, s, _ := strings.Cut(id, "-")
	ms, _ = strconv.ParseUint(m, 10, 64)
	seq, _ = strconv.ParseUint(s, 10, 64)
	return ms, seq
}

// recordAndSetSrc records a write and stores its value, after publishing
// its invalidation: it publishes ARGV[4] on channel ARGV[3] (first: see
// setAndPublishSrc), adds the record (key ARGV[5], value ARGV[1]) to the
// stream KEYS[2], makes it its key's latest in the last hash KEYS[3], moves
// the fence KEYS[4], then
// sets KEYS[1] to ARGV[1] for ARGV[2] milliseconds, and returns the
// record's id. The record comes before the SET: a stream refused (an ACL
// without XADD, a key of another type) stops the script before the cache
// holds a value no record will bring to the source.
const recordAndSetSrc = fenceLua + `redis.call('PUBLISH', ARGV[3], ARGV[4])
bump(KEYS[4])
local id = redis.call('XADD', KEYS[2], '*', 'key', ARGV[5], 'value', ARGV[1])
redis.call('HSET', KEYS[3], ARGV[5], id)
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return id`

// recordSrc adds the record (key ARGV[1], value ARGV[2]) to the stream
// KEYS[1], makes it its key's latest in the last hash KEYS[2], and returns
// its id.
const recordSrc = `local id = redis.call('XADD', KEYS[1], '*', 'key', ARGV[1], 'value', ARGV[2])
redis.call('HSET', KEYS[2], ARGV[1], id)
return id`

// entryLua holds the helpers of the scripts that return records: put
// appends the entry e, delivered n times, to out as five values: id, n,
// 1 (0 for an entry deleted while pending), key and value; deliveries
// returns how many times the pending entry id of the stream KEYS[1] and
// group ARGV[1] was delivered (0: not pending).
const entryLua = `local function put(out, e, n)
  local key, value, ok = '', '', 0
  if e[2] then
    ok = 1
    for i = 1, #e[2], 2 do
      if e[2][i] == 'key' then key = e[2][i + 1] elseif e[2][i] == 'value' then value = e[2][i + 1] end
    end
  end
  out[#out + 1] = e[1]; out[#out + 1] = n; out[#out + 1] = ok; out[#out + 1] = key; out[#out + 1] = value
end
local function deliveries(id)
  local p = redis.call('XPENDING', KEYS[1], ARGV[1], id, id, 1)
  if p[1] then return p[1][4] end
  return 0
end
`

// readSrc reads, as consumer ARGV[2] of group ARGV[1], up to ARGV[3]
// entries of the stream KEYS[1] after ARGV[4]: new entries with '>', else
// entries already delivered to this consumer and not acknowledged (each
// such read counts as a delivery). It returns them as put does.
const readSrc = entryLua + `local r = redis.call('XREADGROUP', 'GROUP', ARGV[1], ARGV[2], 'COUNT', ARGV[3], 'STREAMS', KEYS[1], ARGV[4])
local out = {}
if not r then return out end
for _, e in ipairs(r[1][2]) do
  local n = 1
  if ARGV[4] ~= '>' then n = deliveries(e[1]) end
  put(out, e, n)
end
return out`

// autoClaimSrc claims for consumer ARGV[2] of group ARGV[1] up to ARGV[5]
// entries of the stream KEYS[1] idle for ARGV[3] milliseconds or more,
// scanning from ARGV[4] (XAUTOCLAIM), and returns the cursor of the next
// scan followed by the entries as put does. (Redis 6.2 lists an entry
// deleted while pending as nil; 7 leaves it out.) When the scan went
// round, it deletes the other consumers that have nothing pending and
// were idle as long: replicas gone, whose names would otherwise stay in
// the group for good (a live one is created again by its next read).
const autoClaimSrc = entryLua + `local r = redis.call('XAUTOCLAIM', KEYS[1], ARGV[1], ARGV[2], ARGV[3], ARGV[4], 'COUNT', ARGV[5])
local out = {r[1]}
for _, e in ipairs(r[2]) do
  if e then put(out, e, deliveries(e[1])) end
end
if r[1] == '0-0' then
  for _, c in ipairs(redis.call('XINFO', 'CONSUMERS', KEYS[1], ARGV[1])) do
    local f = {}
    for i = 1, #c, 2 do f[c[i]] = c[i + 1] end
    if f.name ~= ARGV[2] and f.pending == 0 and f.idle >= tonumber(ARGV[3]) then
      redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], f.name)
    end
  end
end
return out`

// holdSrc renews the hold of consumer ARGV[2] of group ARGV[1] on records
// of the stream KEYS[1]: for each record i, whose id is ARGV[4+i] and whose
// marker is KEYS[1+i], if the record is still pending on the consumer it is
// claimed again (XCLAIM, resetting its idle time; a delivery counted only
// when ARGV[4] is '1'), and if the consumer holds the marker, the marker's
// time to live becomes ARGV[3] milliseconds. It returns, for each record
// still pending on the consumer, its id and its deliveries.
const holdSrc = `local out = {}
for i = 1, #KEYS - 1 do
  local id = ARGV[4 + i]
  local p = redis.call('XPENDING', KEYS[1], ARGV[1], id, id, 1)
  if p[1] and p[1][2] == ARGV[2] then
    local n = p[1][4]
    if ARGV[4] == '1' then
      redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, id)
      n = n + 1
    else
      redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, id, 'JUSTID')
    end
    out[#out + 1] = id; out[#out + 1] = n
  end
  if redis.call('GET', KEYS[1 + i]) == ARGV[2] then redis.call('PEXPIRE', KEYS[1 + i], ARGV[3]) end
end
return out`

// prepareSrc decides, for consumer ARGV[1], the turn of each record i
// (key ARGV[1+2i], id ARGV[2+2i], marker KEYS[1+i]) given the last hash
// KEYS[1]: 1 (skip) when the record is not its key's latest, 2 (wait)
// when another consumer holds the key's marker, else 0 (write), taking
// the marker for ARGV[2] milliseconds.
const prepareSrc = `local res = {}
for i = 1, #KEYS - 1 do
  local key, id = ARGV[1 + 2 * i], ARGV[2 + 2 * i]
  if redis.call('HGET', KEYS[1], key) ~= id then
    res[i] = 1
  else
    local m = redis.call('GET', KEYS[1 + i])
    if m and m ~= ARGV[1] then
      res[i] = 2
    else
      redis.call('SET', KEYS[1 + i], ARGV[1], 'PX', ARGV[2])
      res[i] = 0
    end
  end
end
return res`

// ackSrc acknowledges records of the stream KEYS[1] for group ARGV[1] and
// deletes them from the stream; for each record i (key ARGV[1+2i], id
// ARGV[2+2i], marker KEYS[2+i]) it drops the key from the last hash KEYS[2]
// if the record is still its latest, and the marker if consumer ARGV[2]
// holds it. It returns how many records were pending. Ids go in chunks
// because unpack fails on a few thousand values.
const ackSrc = `local ids = {}
for i = 1, #KEYS - 2 do
  local key, id = ARGV[1 + 2 * i], ARGV[2 + 2 * i]
  ids[i] = id
  if redis.call('HGET', KEYS[2], key) == id then redis.call('HDEL', KEYS[2], key) end
  if redis.call('GET', KEYS[2 + i]) == ARGV[2] then redis.call('DEL', KEYS[2 + i]) end
end
local n = 0
for i = 1, #ids, 1000 do
  local chunk = {unpack(ids, i, math.min(i + 999, #ids))}
  n = n + redis.call('XACK', KEYS[1], ARGV[1], unpack(chunk))
  redis.call('XDEL', KEYS[1], unpack(chunk))
end
return n`

// releaseMarkersSrc deletes each marker of KEYS that consumer ARGV[1] holds.
const releaseMarkersSrc = `for i = 1, #KEYS do
  if redis.call('GET', KEYS[i]) == ARGV[1] then redis.call('DEL', KEYS[i]) end
end
return 0`

// deadLetterSrc moves the record ARGV[3] (key ARGV[4], value ARGV[5],
// delivered ARGV[6] times, failing with ARGV[7]) of the stream KEYS[1] to
// the dead-letter stream KEYS[2], if it is still pending in group ARGV[1]:
// it adds it there first (so that a refused XADD changes nothing), then
// acknowledges and deletes it, drops its key from the last hash KEYS[3] if
// it is its latest, and its marker KEYS[4] if consumer ARGV[2] holds it. It
// returns 1, or 0 when the record was no longer pending.
const deadLetterSrc = `local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[3], ARGV[3], 1)
if not p[1] then return 0 end
redis.call('XADD', KEYS[2], '*', 'key', ARGV[4], 'value', ARGV[5], 'id', ARGV[3], 'deliveries', ARGV[6], 'error', ARGV[7])
redis.call('XACK', KEYS[1], ARGV[1], ARGV[3])
redis.call('XDEL', KEYS[1], ARGV[3])
if redis.call('HGET', KEYS[3], ARGV[4]) == ARGV[3] then redis.call('HDEL', KEYS[3], ARGV[4]) end
if redis.call('GET', KEYS[4]) == ARGV[2] then redis.call('DEL', KEYS[4]) end
return 1`

// lastIDSrc returns the id of the last entry of the stream KEYS[1], or
// "0-0" when it is empty.
const lastIDSrc = `local r = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
if r[1] then return r[1][1] end
return '0-0'`

// CreateGroup creates the stream's consumer group, and the stream if it
// does not exist, reading from the stream's first entry; a group that
// exists already is not an error.
func (s *Store) CreateGroup(ctx context.Context, st *Stream) error {
	if !s.usable() {
		return fmt.Errorf("l2 create group %q: %w", st.key, errNoStore)
	}
	return s.call(ctx, s.writeTimeout, "l2 create group", st.key, 1, func(ctx context.Context) error {
		_, err := s.c.Pipelined(ctx, func(p redis.Pipeliner) error {
			p.XGroupCreateMkStream(ctx, st.key, st.group, "0")
			return nil
		})
		if redis.HasErrorPrefix(err, "BUSYGROUP") {
			return nil
		}
		return err
	})
}

// RecordAndSet records a write of record key key, whose value is it.Value,
// and stores it in the cache, after publishing msg on channel: atomically
// and in one round trip (two when the server does not have the script
// yet). It returns the record's id. it.Key and the stream must be in one
// hash slot on a Cluster (see Record for when they are not).
func (s *Store) RecordAndSet(ctx context.Context, st *Stream, key string, it Item, channel string, msg []byte) (string, error) {
	if !s.usable() {
		return "", fmt.Errorf("l2 record and set %q: %w", it.Key, errNoStore)
	}
	if err := it.validate(); err != nil {
		return "", fmt.Errorf("l2 record and set: %w", err)
	}
	if channel == "" {
		return "", fmt.Errorf("l2 record and set %q: empty channel: %w", it.Key, ErrInvalid)
	}
	keys := []string{it.Key, st.key, st.last}
	if err := scriptable(s.c, keys); err != nil {
		return "", fmt.Errorf("l2 record and set %q: %w", it.Key, err)
	}
	var id string
	err := s.call(ctx, s.writeTimeout, "l2 record and set", it.Key, 1, func(ctx context.Context) (err error) {
		ch := s.pubChannel(channel, it.Key)
		cmd, _ := s.runPub(ctx, s.recordAndSetScript, ch, msg, append(keys, s.FenceKey(it.Key)), it.Value, pxMillis(it.TTL), ch, msg, key)
		id, err = cmd.Text()
		return err
	})
	return id, err
}

// Record records a write of record key key with value, and returns the
// record's id. A Cluster, whose value keys and stream are in different
// slots, records with it and then stores the value as a Set does.
func (s *Store) Record(ctx context.Context, st *Stream, key string, value []byte) (string, error) {
	if !s.usable() {
		return "", fmt.Errorf("l2 record %q: %w", key, errNoStore)
	}
	var id string
	err := s.call(ctx, s.writeTimeout, "l2 record", st.key, 1, func(ctx context.Context) (err error) {
		id, err = s.run(ctx, st.record, []string{st.key, st.last}, key, value).Text()
		return err
	})
	return id, err
}

// ReadGroup reads, as consumer, up to count records of the stream: with
// start ">" records delivered to no consumer yet (Deliveries 1); with an
// id, records delivered to this consumer and not acknowledged, after that
// id ("0": from the first). It does not block: it returns what there is,
// maybe nothing.
func (s *Store) ReadGroup(ctx context.Context, st *Stream, consumer, start string, count int) ([]Record, error) {
	if !s.usable() {
		return nil, fmt.Errorf("l2 read group %q: %w", st.key, errNoStore)
	}
	if consumer == "" || start == "" || count <= 0 {
		return nil, fmt.Errorf("l2 read group %q: empty consumer or start, or count %d: %w", st.key, count, ErrInvalid)
	}
	var res []any
	err := s.call(ctx, s.writeTimeout, "l2 read group", st.key, 1, func(ctx context.Context) (err error) {
		res, err = st.read.Run(ctx, s.c, []string{st.key}, st.group, consumer, count, start).Slice()
		return err
	})
	if err != nil {
		return nil, err
	}
	return records(res, "l2 read group")
}

// AutoClaim claims for consumer up to count records that have been pending
// on any consumer (this one included) for minIdle or more, scanning from
// start ("0-0" at first), and returns them with the start of the next scan
// ("0-0" once the scan went round). When the scan goes round, it also
// deletes the group's other consumers that have nothing pending and have
// been idle for minIdle.
func (s *Store) AutoClaim(ctx context.Context, st *Stream, consumer string, minIdle time.Duration, start string, count int) ([]Record, string, error) {
	if !s.usable() {
		return nil, "", fmt.Errorf("l2 auto claim %q: %w", st.key, errNoStore)
	}
	if consumer == "" || start == "" || count <= 0 || minIdle < 0 {
		return nil, "", fmt.Errorf("l2 auto claim %q: empty consumer or start, count %d or idle %v: %w", st.key, count, minIdle, ErrInvalid)
	}
	var res []any
	err := s.call(ctx, s.writeTimeout, "l2 auto claim", st.key, 1, func(ctx context.Context) (err error) {
		res, err = st.autoClaim.Run(ctx, s.c, []string{st.key}, st.group, consumer, minIdle.Milliseconds(), start, count).Slice()
		return err
	})
	if err != nil {
		return nil, "", err
	}
	if len(res) == 0 {
		return nil, "", fmt.Errorf("l2 auto claim %q: empty reply", st.key)
	}
	next, ok := res[0].(string)
	if !ok {
		return nil, "", fmt.Errorf("l2 auto claim %q: cursor is a %T", st.key, res[0])
	}
	recs, err := records(res[1:], "l2 auto claim")
	return recs, next, err
}

// records parses the replies of put.
func records(res []any, op string) ([]Record, error) {
	if len(res)%5 != 0 {
		return nil, fmt.Errorf("%s: %d values, not records of 5", op, len(res))
	}
	out := make([]Record, 0, len(res)/5)
	for i := 0; i < len(res); i += 5 {
		id, ok1 := res[i].(string)
		n, ok2 := res[i+1].(int64)
		present, ok3 := res[i+2].(int64)
		key, ok4 := res[i+3].(string)
		value, ok5 := res[i+4].(string)
		if !ok1 || !ok2 || !ok3 || !ok4 || !ok5 {
			return nil, fmt.Errorf("%s: record %d: unexpected reply %v", op, i/5, res[i:i+5])
		}
		out = append(out, Record{ID: id, Key: key, Value: []byte(value), Deliveries: n, Gone: present == 0})
	}
	return out, nil
}

// Hold renews consumer's hold on recs: each record still pending on it is
// claimed again, which resets its idle time so that no other consumer's
// AutoClaim takes it (and, with count, counts as a new delivery), and each
// key marker it holds gets lease to live again. It returns the deliveries
// of the records still pending on consumer, by id; the others are gone
// (acknowledged, or claimed by another consumer).
func (s *Store) Hold(ctx context.Context, st *Stream, consumer string, lease time.Duration, recs []Record, count bool) (map[string]int64, error) {
	if !s.usable() {
		return nil, fmt.Errorf("l2 hold %q: %w", st.key, errNoStore)
	}
	if len(recs) == 0 {
		return nil, nil
	}
	if consumer == "" || lease <= 0 {
		return nil, fmt.Errorf("l2 hold %q: empty consumer or lease %v: %w", st.key, lease, ErrInvalid)
	}
	keys := make([]string, 1, 1+len(recs))
	keys[0] = st.key
	args := make([]any, 0, 4+len(recs))
	c := "0"
	if count {
		c = "1"
	}
	args = append(args, st.group, consumer, pxMillis(lease), c)
	for _, r := range recs {
		keys = append(keys, st.Marker(r.Key))
		args = append(args, r.ID)
	}
	var res []any
	err := s.call(ctx, s.writeTimeout, "l2 hold", st.key, len(recs), func(ctx context.Context) (err error) {
		res, err = st.hold.Run(ctx, s.c, keys, args...).Slice()
		return err
	})
	if err != nil {
		return nil, err
	}
	out := make(map[string]int64, len(res)/2)
	for i := 0; i+1 < len(res); i += 2 {
		id, ok1 := res[i].(string)
		n, ok2 := res[i+1].(int64)
		if !ok1 || !ok2 {
			return nil, fmt.Errorf("l2 hold %q: unexpected reply %v", st.key, res[i:i+2])
		}
		out[id] = n
	}
	return out, nil
}

// Turn is what Prepare decides for a record.
type Turn int

const (
	// TurnWrite: the record is its key's latest, and the consumer now holds
	// the key's marker: write it, then Ack it (or ReleaseMarkers of the key).
	TurnWrite Turn = iota
	// TurnSkip: a later record of the key exists, or the key's latest was
	// acknowledged already: Ack the record without writing it.
	TurnSkip
	// TurnWait: another consumer holds the key's marker (it is writing the
	// key): try again later.
	TurnWait
)

// Prepare decides, in one atomic step, the turn of each record for
// consumer (see Turn), taking the markers of the records to write for
// lease. Records of one key should be passed once, the latest.
func (s *Store) Prepare(ctx context.Context, st *Stream, consumer string, lease time.Duration, recs []Record) ([]Turn, error) {
	if !s.usable() {
		return nil, fmt.Errorf("l2 prepare %q: %w", st.key, errNoStore)
	}
	if len(recs) == 0 {
		return nil, nil
	}
	if consumer == "" || lease <= 0 {
		return nil, fmt.Errorf("l2 prepare %q: empty consumer or lease %v: %w", st.key, lease, ErrInvalid)
	}
	keys := make([]string, 1, 1+len(recs))
	keys[0] = st.last
	args := make([]any, 0, 2+2*len(recs))
	args = append(args, consumer, pxMillis(lease))
	for _, r := range recs {
		keys = append(keys, st.Marker(r.Key))
		args = append(args, r.Key, r.ID)
	}
	var res []int64
	err := s.call(ctx, s.writeTimeout, "l2 prepare", st.key, len(recs), func(ctx context.Context) (err error) {
		res, err = st.prepare.Run(ctx, s.c, keys, args...).Int64Slice()
		return err
	})
	if err != nil {
		return nil, err
	}
	if len(res) != len(recs) {
		return nil, fmt.Errorf("l2 prepare %q: %d turns for %d records", st.key, len(res), len(recs))
	}
	turns := make([]Turn, len(res))
	for i, n := range res {
		turns[i] = Turn(n)
	}
	return turns, nil
}

// Ack acknowledges recs and deletes them from the stream, atomically: each
// record's key leaves the last hash if the record is still its latest, and
// consumer's marker of the key is dropped. It returns how many of recs
// were still pending.
func (s *Store) Ack(ctx context.Context, st *Stream, consumer string, recs []Record) (int64, error) {
	if !s.usable() {
		return 0, fmt.Errorf("l2 ack %q: %w", st.key, errNoStore)
	}
	if len(recs) == 0 {
		return 0, nil
	}
	keys := make([]string, 2, 2+len(recs))
	keys[0], keys[1] = st.key, st.last
	args := make([]any, 0, 2+2*len(recs))
	args = append(args, st.group, consumer)
	for _, r := range recs {
		keys = append(keys, st.Marker(r.Key))
		args = append(args, r.Key, r.ID)
	}
	var n int64
	err := s.call(ctx, s.writeTimeout, "l2 ack", st.key, len(recs), func(ctx context.Context) (err error) {
		n, err = st.ack.Run(ctx, s.c, keys, args...).Int64()
		return err
	})
	return n, err
}

// ReleaseMarkers drops the markers of keys that consumer holds, after a failed
// write, so that the keys' later records need not wait for the lease.
func (s *Store) ReleaseMarkers(ctx context.Context, st *Stream, consumer string, keys []string) error {
	if !s.usable() {
		return fmt.Errorf("l2 release markers %q: %w", st.key, errNoStore)
	}
	if len(keys) == 0 {
		return nil
	}
	markers := make([]string, len(keys))
	for i, k := range keys {
		markers[i] = st.Marker(k)
	}
	return s.call(ctx, s.writeTimeout, "l2 release markers", st.key, len(keys), func(ctx context.Context) error {
		return st.releaseMarkers.Run(ctx, s.c, markers, consumer).Err()
	})
}

// DeadLetter moves r to the dead-letter stream with reason (its last
// error) and its deliveries, then acknowledges it as Ack does, atomically.
// It reports false, and changes nothing, when r was no longer pending
// (another consumer acknowledged it).
func (s *Store) DeadLetter(ctx context.Context, st *Stream, consumer string, r Record, reason string) (bool, error) {
	if !s.usable() {
		return false, fmt.Errorf("l2 dead letter %q: %w", st.key, errNoStore)
	}
	keys := []string{st.key, st.dead, st.last, st.Marker(r.Key)}
	var n int64
	err := s.call(ctx, s.writeTimeout, "l2 dead letter", st.key, 1, func(ctx context.Context) (err error) {
		n, err = st.deadLetter.Run(ctx, s.c, keys, st.group, consumer, r.ID, r.Key, r.Value, r.Deliveries, reason).Int64()
		return err
	})
	return n == 1, err
}

// LastID returns the id of the stream's last entry, "0-0" when it has none.
func (s *Store) LastID(ctx context.Context, st *Stream) (string, error) {
	if !s.usable() {
		return "", fmt.Errorf("l2 last id %q: %w", st.key, errNoStore)
	}
	var id string
	err := s.call(ctx, s.writeTimeout, "l2 last id", st.key, 1, func(ctx context.Context) (err error) {
		id, err = st.lastID.Run(ctx, s.c, []string{st.key}).Text()
		return err
	})
	return id, err
}
