package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tiercache/tiercache"
	"github.com/tiercache/tiercache/codec"
)

// defaultMaxTagSets is how many tag sets of a keyspace get looks at by
// default to find a key's tags.
const defaultMaxTagSets = 10_000

// defaultMaxOutput is how many bytes of JSON get prints of a value by
// default: 1 MiB.
const defaultMaxOutput = 1 << 20

// getResult is what get prints.
type getResult struct {
	Key            string   `json:"key"`
	RedisKey       string   `json:"redis_key"`
	TTLMillis      int64    `json:"ttl_ms"` // PTTL: -1 without expiry
	Envelope       envelope `json:"envelope"`
	Value          any      `json:"value"`                     // nil for a tombstone or a lease
	ValueTruncated bool     `json:"value_truncated,omitempty"` // parts of the value left out: over --max-output
	Error          string   `json:"error,omitempty"`           // why the value could not be decoded
	Tags           []string `json:"tags"`
	TagsTruncated  bool     `json:"tags_truncated,omitempty"` // more tag sets than --max-tag-sets: tags may be missing
}

func runGet(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newCommandFlags("get", []string{"get [--force] [--key-type int|string|auto] [--max-tag-sets N] [--max-output N] [connection flags] KEYSPACE KEY"}, fmt.Sprintf(`
Reads the value of KEY in KEYSPACE straight from Redis, the key
"<namespace>:<keyspace>:<key>" (an integer key in decimal), and prints it as
JSON: its TTL in milliseconds (ttl_ms, -1 without expiry), what its envelope
header says (format version, compressed, tombstone, lease, the recorded load
duration, sizes), the msgpack body decoded generically (structs as maps by
field name; {"$bin": base64} for bytes, {"$ext": type, "data": base64} for
extensions) and its tags: the tag sets of the keyspace that name the key,
found by SCAN (at most --max-tag-sets of them) and ZSCORE.

Decoding is bounded as the library's is, with its default limits: a body
over 16 MiB, a corrupt value, and a value too complex to decode (one whose
msgpack would build more than 64 MiB of heap, which the library refuses as
hostile or corrupt) are reported, never trusted, and exit 1. Of a value
whose JSON is longer than --max-output bytes, get prints about that much,
leaving out the rest of its lists, maps and strings; it then says so on
stderr and sets value_truncated.

A key not in Redis exits 3, unless it cannot be a key of the keyspace,
which exits 2 (usage) and says why. With --key-type int (for a keyspace of
integer keys), KEY must be an integer in plain decimal, as tiercache writes
integer keys (42, -7; not 042, +42 or 4.2), checked before Redis is read.
With --key-type auto, the default, get samples the keyspace's keys when KEY
is not in Redis (at most %d, by a bounded SCAN): unless one of them is not
an integer (the keys are strings, and KEY is merely missing), a KEY that
reads as an integer written otherwise (042, +42, 1_000, 0x2a, or beyond 64
bits) exits 2, and so does a KEY that is not an integer when the sample
found integers. With --key-type string, KEY is taken as it is. A keyspace
that none of the live replicas uses is refused unless --force.`, sampleKeys), true)
	force := fs.Bool("force", false, "go on even if no live replica uses the keyspace")
	keyType := fs.String("key-type", keyTypeAuto, "`type` of KEY: int, string or auto (see above)")
	maxSets := fs.Int("max-tag-sets", defaultMaxTagSets, "look at no more than `N` tag sets of the keyspace for the key's tags")
	maxOutput := fs.Int("max-output", defaultMaxOutput, "print about `N` bytes of the value's JSON at most, leaving out the rest")
	rest, err := fs.parse(args, stdout)
	if err != nil {
		return err
	}
	if len(rest) != 2 {
		return usageErrorf("want KEYSPACE KEY, got %s", plural(len(rest), "argument"))
	}
	if *maxSets < 1 {
		return usageErrorf("--max-tag-sets %d: want at least 1", *maxSets)
	}
	if *maxOutput < 1 {
		return usageErrorf("--max-output %d: want at least 1", *maxOutput)
	}
	keyspace, key := rest[0], rest[1]
	if err := checkKeyspaceName(keyspace); err != nil {
		return err
	}
	ns := fs.conn.namespace
	rk, err := redisKey(ns, keyspace, key)
	if err != nil {
		return err
	}
	if err := checkKeyType(*keyType, keyspace, key); err != nil {
		return err
	}
	client, err := fs.conn.connect(ctx)
	if err != nil {
		return err
	}
	defer client.Close()
	if !*force {
		if err := checkKnownKeyspace(ctx, client, ns, keyspace); err != nil {
			return err
		}
	}

	// After a Clear the keyspace's values live under a new generation.
	pre, err := tiercache.GenerationPrefix(ctx, client, ns, keyspace)
	if err != nil {
		return err
	}
	rk = pre + key
	var (
		get  *redis.StringCmd
		pttl *redis.DurationCmd
	)
	if _, err := client.TxPipelined(ctx, func(p redis.Pipeliner) error {
		// Never more than the library reads: a longer value is not sent.
		get = p.GetRange(ctx, rk, 0, codec.DefaultMaxSize)
		pttl = p.PTTL(ctx, rk)
		return nil
	}); err != nil && !errors.Is(err, redis.Nil) {
		return fmt.Errorf("read %q: %w", rk, err)
	}
	data, err := get.Bytes()
	if err == nil && len(data) == 0 && pttl.Val() == -2*time.Nanosecond {
		err = redis.Nil // GETRANGE says "" for a missing key; PTTL tells
	}
	if errors.Is(err, redis.Nil) {
		return missingKey(ctx, client, ns, keyspace, key, rk, *keyType)
	}
	if err != nil {
		return fmt.Errorf("read %q: %w", rk, err)
	}
	if len(data) > codec.DefaultMaxSize {
		return fmt.Errorf("%q holds a value longer than %d bytes, more than the library reads: not shown", rk, codec.DefaultMaxSize)
	}
	res := getResult{Key: key, RedisKey: rk, TTLMillis: ttlMillis(pttl.Val()), Tags: []string{}}
	cd, err := codec.New(codec.Options{}) // the library's default limits
	if err != nil {
		return err
	}
	var decodeErr error
	res.Envelope, res.Value, res.ValueTruncated, decodeErr = decodeEnvelope(cd, data, *maxOutput)
	if decodeErr != nil {
		res.Error = decodeErr.Error()
	}
	tags, truncated, err := findTags(ctx, client, ns, keyspace, rk, *maxSets)
	if err != nil {
		return err
	}
	res.Tags, res.TagsTruncated = tags, truncated
	if truncated {
		fmt.Fprintf(stderr, "tiercache get: looked at %d tag sets of keyspace %q only: tags may be missing (raise --max-tag-sets)\n", *maxSets, keyspace)
	}
	if err := writeJSON(stdout, res); err != nil {
		return err
	}
	if res.ValueTruncated {
		fmt.Fprintf(stderr, "tiercache get: value truncated: its JSON is longer than --max-output %d bytes, so parts of it are left out (raise --max-output to see more)\n", *maxOutput)
	}
	switch {
	case errors.Is(decodeErr, codec.ErrTooComplex):
		return fmt.Errorf("value of %q is too complex to decode: the library refuses such a value as hostile or corrupt, and deletes it when it reads it: %w", rk, decodeErr)
	case decodeErr != nil:
		return fmt.Errorf("value of %q cannot be decoded: %w", rk, decodeErr)
	}
	return nil
}

// ttlMillis turns a PTTL reply into milliseconds; go-redis leaves -1 (no
// expiry) and -2 (no key) as they are.
func ttlMillis(d time.Duration) int64 {
	if d < 0 {
		return int64(d)
	}
	return d.Milliseconds()
}

// findTags returns the tags of the value under rk, sorted: the tags whose
// set, "<namespace>::tag:{<keyspace>:<tag>}", names rk with a score (the
// time the member expires, in Unix milliseconds on Redis's clock) still
// ahead. It looks at no more than limit sets, reporting whether there were
// more.
func findTags(ctx context.Context, client redis.UniversalClient, ns, keyspace, rk string, limit int) ([]string, bool, error) {
	prefix := ns + "::tag:{" + keyspace + ":"
	all, truncated, err := collect(ctx, client, globEscape(prefix)+"*", limit)
	if err != nil {
		return nil, false, fmt.Errorf("find tags: %w", err)
	}
	// Pending sets ("...}:pending") hold keys being invalidated, not tags.
	var sets []string
	for _, s := range all {
		if tag := s[len(prefix):]; strings.HasSuffix(tag, "}") && !strings.ContainsAny(tag[:len(tag)-1], "{}") {
			sets = append(sets, s)
		}
	}
	tags := []string{}
	if len(sets) == 0 {
		return tags, truncated, nil
	}
	now, err := client.Time(ctx).Result()
	if err != nil {
		return nil, false, fmt.Errorf("find tags: time: %w", err)
	}
	scores := make([]*redis.FloatCmd, len(sets))
	if _, err := client.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, s := range sets {
			scores[i] = p.ZScore(ctx, s, rk)
		}
		return nil
	}); err != nil && !errors.Is(err, redis.Nil) {
		return nil, false, fmt.Errorf("find tags: zscore: %w", err)
	}
	for i, cmd := range scores {
		score, err := cmd.Result()
		if errors.Is(err, redis.Nil) {
			continue
		}
		if err != nil {
			return nil, false, fmt.Errorf("find tags: zscore %q: %w", sets[i], err)
		}
		if int64(score) > now.UnixMilli() {
			tags = append(tags, strings.TrimSuffix(sets[i][len(prefix):], "}"))
		}
	}
	slices.Sort(tags)
	return tags, truncated, nil
}
