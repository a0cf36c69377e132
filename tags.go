package tiercache

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/tiercache/tiercache/bus"
	"github.com/tiercache/tiercache/l2"
)

// Tags.
//
// Each tag of a keyspace is a sorted set in Redis,
// "<namespace>::tag:{<keyspace>:<tag>}" (no keyspace is empty, so no value
// key can take that name), naming the Redis keys of the values that carry
// the tag, each until its value expires (see l2.Store.Tag): the bookkeeping
// of expired entries is dropped at the next add to the set, and the set
// itself expires with its last member. A write adds the key to its tags'
// sets before the value is written, so that no crash leaves a tagged value
// unnamed, and again after, so that an InvalidateTags that took the set in
// between does not leave the new value unnamed. InvalidateTags takes the set
// whole (members added afterwards belong to values written afterwards) and
// deletes its keys page by page, each page one script per hash slot with its
// invalidation, as Delete does.

// MaxTagLength bounds a tag, in bytes.
const MaxTagLength = 256

// tagSlack is added to a tag member's expiry, covering the time between the
// add and the value's write.
const tagSlack = 5 * time.Second

// tagPage is the number of keys InvalidateTags deletes per round.
const tagPage = 1000

// ValidTag reports, as an error wrapping ErrInvalidTag, why SetTagged and
// InvalidateTags would refuse tag, or nil.
func ValidTag(tag string) error {
	switch {
	case tag == "":
		return fmt.Errorf("%w: empty tag", ErrInvalidTag)
	case len(tag) > MaxTagLength:
		return fmt.Errorf("%w: tag of %d bytes, more than %d", ErrInvalidTag, len(tag), MaxTagLength)
	case !utf8.ValidString(tag):
		return fmt.Errorf("%w: tag %q is not valid UTF-8", ErrInvalidTag, tag)
	case strings.ContainsAny(tag, ":{}"):
		return fmt.Errorf("%w: tag %q contains ':', '{' or '}'", ErrInvalidTag, tag)
	case strings.IndexFunc(tag, func(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) }) >= 0:
		return fmt.Errorf("%w: tag %q contains whitespace or a control character", ErrInvalidTag, tag)
	}
	return nil
}

// tagVersionsKept is how long a tag's version outlives its invalidation in
// the keyspace's tag version set: a load that takes longer than this is
// not stored in Redis if any tag of its keyspace was invalidated meanwhile.
const tagVersionsKept = 10 * time.Minute

// tagList is the tags of one value: their names and their entries in the
// tag sets, one per name.
type tagList struct {
	names   []string
	entries []l2.TagEntry
}

// tagVersions returns the Redis key of the keyspace's tag version set
// (see l2.Store.BumpTags), for a read to fetch its epoch, or "" when the
// keyspace has no tagger and no loader adapted tags yet: only loaded values
// with tags need the tag fence. (A fill with tags after a read without the
// epoch is refused if one of its tags was invalidated in the last
// tagVersionsKept: safe, and only until adaptedTags is set.)
func (ks *Keyspace[K, V]) tagVersions() string {
	if ks.opts.tags == nil && !ks.adaptedTags.Load() {
		return ""
	}
	return ks.tagVersionsKey()
}

// tagVersionsKey returns the Redis key of the keyspace's tag version set,
// "<namespace>::tagv:{<keyspace>}".
func (ks *Keyspace[K, V]) tagVersionsKey() string {
	return ks.c.cfg.Namespace + "::tagv:{" + ks.name + "}"
}

// tagFill returns the tag fence of a fill of a value carrying tags, or nil.
func (ks *Keyspace[K, V]) tagFill(tags tagList) *l2.TagFill {
	if len(tags.names) == 0 {
		return nil
	}
	return &l2.TagFill{Versions: ks.tagVersionsKey(), Names: tags.names, Entries: tags.entries, Slack: tagSlack}
}

// tagSet returns the Redis key of tag's set; the pending set of an
// invalidation shares its hash tag, and so its slot.
func (ks *Keyspace[K, V]) tagSet(tag string) string {
	return ks.c.cfg.Namespace + "::tag:{" + ks.name + ":" + tag + "}"
}

// tagEntries returns the tags of v, stored under rkey for ttl: the
// keyspace tagger's tags and extra, validated, each once. A panicking
// tagger is an error wrapping ErrTaggerPanic.
func (ks *Keyspace[K, V]) tagEntries(key K, v V, rkey string, ttl time.Duration, extra []string) (tagList, error) {
	tags := extra
	if ks.opts.tags != nil {
		mine, err := ks.callTagger(key, v)
		if err != nil {
			return tagList{}, err
		}
		tags = append(mine, extra...)
	}
	if len(tags) == 0 {
		return tagList{}, nil
	}
	out := tagList{names: make([]string, 0, len(tags)), entries: make([]l2.TagEntry, 0, len(tags))}
	for _, t := range tags {
		if err := ValidTag(t); err != nil {
			return tagList{}, fmt.Errorf("keyspace %q key %q: %w", ks.name, rkey, err)
		}
		if slices.Contains(out.names, t) {
			continue
		}
		out.names = append(out.names, t)
		out.entries = append(out.entries, l2.TagEntry{Set: ks.tagSet(t), Member: rkey, TTL: ttl})
	}
	return out, nil
}

// callTagger calls the keyspace's tagger, turning a panic into an error
// wrapping ErrTaggerPanic: a tagger runs inside shared load flights,
// refreshes and lease releases, where a panic would end the process.
func (ks *Keyspace[K, V]) callTagger(key K, v V) (tags []string, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%w: keyspace %q: %v", ErrTaggerPanic, ks.name, r)
		}
	}()
	return ks.opts.tags(key, v), nil
}

// tagWrite runs write between two adds of entries to their tag sets; with
// no entries it only runs write. A failed first add fails the write before
// it runs.
func (ks *Keyspace[K, V]) tagWrite(ctx context.Context, entries []l2.TagEntry, write func() error) error {
	if len(entries) == 0 {
		return write()
	}
	if err := ks.c.store.Tag(ctx, entries, tagSlack); err != nil {
		return fmt.Errorf("tag: %w", err)
	}
	if err := write(); err != nil {
		return err
	}
	if err := ks.c.store.Tag(ctx, entries, tagSlack); err != nil {
		return fmt.Errorf("tag after write: %w", err)
	}
	return nil
}

// InvalidateTags deletes every value of the keyspace that carries one of
// tags, in Redis and in every replica's L1, each deletion with its
// invalidation as Delete does, and voids the loads in flight of values
// carrying them on every replica (their fills are refused). Values written
// after the call began keep their tags. On a server that is not a Cluster
// it takes one round trip to give the tags new versions and take their
// sets, then one per 10,000 keys to delete them: two for a tag of up to
// 10,000 keys, whatever the number of tags. On a Cluster, per tag: one
// round trip for the versions, one to take its set, then per page of 1000
// keys one read, one delete script per hash slot and one cleanup. Tags are
// validated first; a failure stops the call, and the keys not yet deleted
// stay pending, so calling it again finishes the job.
func (ks *Keyspace[K, V]) InvalidateTags(ctx context.Context, tags ...string) error {
	if ks.c.closed.Load() {
		return ErrClosed
	}
	for _, t := range tags {
		if err := ValidTag(t); err != nil {
			return fmt.Errorf("tiercache: keyspace %q: %w", ks.name, err)
		}
	}
	if len(tags) == 0 {
		return nil
	}
	if !isCluster(ks.c.client) {
		if err := ks.invalidateTagsServer(ctx, tags); err != nil {
			ks.flush() // as below
			return notSent(fmt.Sprintf("keyspace %q: invalidate tags %q", ks.name, tags), err)
		}
		return nil
	}
	for _, t := range tags {
		if err := ks.invalidateTag(ctx, t); err != nil {
			// This replica keeps no index of its tagged entries: flush
			// them all, so that it does not serve what it failed to
			// invalidate.
			ks.flush()
			return notSent(fmt.Sprintf("keyspace %q: invalidate tag %q", ks.name, t), err)
		}
	}
	return nil
}

// tagDropPage is the number of tagged keys one round trip of
// InvalidateTags deletes on a server that is not a Cluster.
const tagDropPage = 10_000

// tagMessageKeys bounds the keys one message of InvalidateTags names, and
// tagMessageBytes their bytes, well under the subscriber's default limits.
const (
	tagMessageKeys  = 10_000
	tagMessageBytes = 256 << 10
)

// invalidateTagsServer is InvalidateTags on a server that is not a
// Cluster: one round trip gives the tags new versions (with the message
// that names them) and takes their sets, then one per page of tagDropPage
// keys deletes them with their invalidations and returns the next page. A
// tag of up to tagDropPage keys takes two round trips, whatever the
// number of tags.
func (ks *Keyspace[K, V]) invalidateTagsServer(ctx context.Context, tags []string) error {
	announce, err := (bus.Message{Version: bus.WireVersion, Origin: ks.c.cfg.InstanceID, Keyspace: ks.name, Tags: tags, KeysFollow: true}).Marshal()
	if err != nil {
		return fmt.Errorf("tiercache: encode invalidation: %w", err)
	}
	inv := l2.TagInvalidation{
		Versions: ks.tagVersionsKey(),
		Gens:     ks.c.gensKey(),
		Field:    ks.name,
		Tags:     tags,
		Keep:     max(tagVersionsKept, 2*ks.cfg.LoadTimeout),
		Channel:  ks.c.cfg.Channel,
		Msg:      announce,
	}
	pending := make([]string, len(tags))
	for i, t := range tags {
		set := ks.tagSet(t)
		pending[i] = set + ":pending"
		inv.Sets = append(inv.Sets, [2]string{set, pending[i]})
	}
	// The generation comes from the same script: members of older
	// generations are gone already (see Clear).
	gen, members, err := ks.c.store.TakeTags(ctx, inv, tagDropPage)
	if err != nil {
		return err
	}
	pre := ks.prefixAt(gen)
	ks.st.published.Add(1)
	// Each round removes what it was given from the pending sets, so the
	// pages shrink; bounded all the same, since another replica's call
	// may be merging more into them.
	for round := 0; len(members) > 0; round++ {
		if round == 100_000 {
			return errors.New("keys still pending after 100,000 pages: call again")
		}
		var mine, others []string
		for _, rk := range members {
			if strings.HasPrefix(rk, pre) {
				mine = append(mine, rk)
			} else {
				others = append(others, rk)
			}
		}
		var msgs [][]byte
		for start := 0; start < len(mine); {
			end, size := start, 0
			for end < len(mine) && end-start < tagMessageKeys && size+len(mine[end]) <= tagMessageBytes {
				size += len(mine[end])
				end++
			}
			end = max(end, start+1)
			msg, err := ks.message(mine[start:end])
			if err != nil {
				return err
			}
			msgs = append(msgs, msg)
			start = end
		}
		next, err := ks.c.store.DropTagged(ctx, pending, mine, others, ks.c.cfg.Channel, msgs, tagDropPage)
		if err != nil {
			return err
		}
		for _, rk := range mine {
			if k, ok := parseKey[K](rk[len(pre):]); ok {
				ks.evict(k)
			}
		}
		ks.st.tagDeletes.Add(uint64(len(mine)))
		ks.st.published.Add(uint64(len(msgs)))
		members = next
	}
	return nil
}

func (ks *Keyspace[K, V]) invalidateTag(ctx context.Context, tag string) error {
	pre, err := ks.prefix(ctx) // members of older generations are gone already
	if err != nil {
		return err
	}
	// New versions first, with a message naming the tag: every load of a
	// value with the tag that read Redis before this is refused when it
	// fills (see l2.Fill), every one that filled before is in the set
	// taken below, and every replica starts new loads for its keyspace
	// rather than share one that began before (see flightEpochs).
	msg, err := (bus.Message{Version: bus.WireVersion, Origin: ks.c.cfg.InstanceID, Keyspace: ks.name, Tags: []string{tag}, KeysFollow: true}).Marshal()
	if err != nil {
		return fmt.Errorf("tiercache: encode invalidation: %w", err)
	}
	if err := ks.c.store.BumpTags(ctx, ks.tagVersionsKey(), []string{tag}, max(tagVersionsKept, 2*ks.cfg.LoadTimeout), ks.c.cfg.Channel, msg); err != nil {
		return err
	}
	ks.st.published.Add(1)
	set := ks.tagSet(tag)
	pending := set + ":pending"
	n, err := ks.c.store.TakeTag(ctx, set, pending)
	if err != nil {
		return err
	}
	// Pages remove what they deleted; bounded all the same, since another
	// replica's call may be working through the same pending set.
	for range n/tagPage + 2 {
		page, err := ks.c.store.TagPage(ctx, pending, tagPage)
		if err != nil {
			return err
		}
		if len(page) == 0 {
			return nil
		}
		mine := page[:0:0]
		for _, rk := range page {
			if strings.HasPrefix(rk, pre) {
				mine = append(mine, rk)
			}
		}
		if len(mine) > 0 {
			if err := ks.deleteRedisKeys(ctx, mine); err != nil {
				return err
			}
		}
		for _, rk := range mine {
			if k, ok := parseKey[K](rk[len(pre):]); ok {
				ks.evict(k)
			}
		}
		ks.st.tagDeletes.Add(uint64(len(mine)))
		if err := ks.c.store.Untag(ctx, pending, page); err != nil {
			return err
		}
	}
	if rest, err := ks.c.store.TagPage(ctx, pending, 1); err != nil || len(rest) > 0 {
		return errors.Join(err, errors.New("keys still pending after every page: call again"))
	}
	return nil
}
