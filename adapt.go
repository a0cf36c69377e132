package tiercache

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"
)

// Adaptive caching: a loader tells, per value it returns, how to cache it.

// Adaptation is how a loader wants one value it returns cached (see Adapt).
// The zero Adaptation changes nothing.
type Adaptation struct {
	// TTL replaces the keyspace's TTL (and its ExpireAt period) for this
	// value: how long Redis keeps it. KeyspaceConfig.Jitter still shortens
	// it and L1TTL still caps L1. 0 keeps the keyspace's.
	TTL time.Duration

	// Tags are added to the value's tags (those of WithTags, if any), as
	// SetTagged's are: InvalidateTags of any of them deletes the value.
	Tags []string

	// NoCache returns the value to the callers without storing it in
	// either tier; for a loader that returns ErrNotFound, no tombstone is
	// stored (KeyspaceConfig.NegativeTTL).
	NoCache bool
}

// Adapt sets, from inside a loader, how the value the loader returns is
// cached: ctx must be the context the loader was called with. In a
// BatchLoader it applies to every key the loader returns, except those
// given their own with AdaptKey. A later call replaces an earlier one. It
// returns an error wrapping ErrInvalidConfig for a negative TTL, or
// ErrInvalidTag for a bad tag, and then changes nothing. Outside a call of
// a loader by a Keyspace (a loader called directly, say), it does nothing
// and returns nil.
func Adapt(ctx context.Context, a Adaptation) error {
	return adapt(ctx, "", false, a)
}

// AdaptKey is Adapt for the value of key only, in a BatchLoader (or in a
// Loader, for its key).
func AdaptKey[K Key](ctx context.Context, key K, a Adaptation) error {
	return adapt(ctx, formatKey(key), true, a)
}

func adapt(ctx context.Context, key string, one bool, a Adaptation) error {
	if a.TTL < 0 {
		return fmt.Errorf("%w: adapt: negative ttl %v", ErrInvalidConfig, a.TTL)
	}
	for _, t := range a.Tags {
		if err := ValidTag(t); err != nil {
			return fmt.Errorf("adapt: %w", err)
		}
	}
	ad, _ := ctx.Value(adaptKey{}).(*adaptations)
	if ad == nil {
		return nil
	}
	a.Tags = slices.Clone(a.Tags)
	ad.mu.Lock()
	defer ad.mu.Unlock()
	if !one {
		ad.all = a
		return nil
	}
	if ad.keys == nil {
		ad.keys = make(map[string]Adaptation)
	}
	ad.keys[key] = a
	return nil
}

// adaptKey is the context key of a loader call's adaptations.
type adaptKey struct{}

// adaptations are what one loader call asked with Adapt and AdaptKey.
type adaptations struct {
	mu   sync.Mutex            // protects all and keys: a loader may adapt from goroutines of its own
	all  Adaptation            // Adapt's
	keys map[string]Adaptation // AdaptKey's, by formatted key; lazily made
}

// withAdaptations returns ctx carrying a new adaptations, and it.
func withAdaptations(ctx context.Context) (context.Context, *adaptations) {
	ad := new(adaptations)
	return context.WithValue(ctx, adaptKey{}, ad), ad
}

// of returns the adaptation of key; nil-safe.
func (ad *adaptations) of(key string) Adaptation {
	if ad == nil {
		return Adaptation{}
	}
	ad.mu.Lock()
	defer ad.mu.Unlock()
	if a, ok := ad.keys[key]; ok {
		return a
	}
	return ad.all
}
