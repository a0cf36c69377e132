package main

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/redis/go-redis/v9"

	"github.com/tiercache/tiercache"
)

// checkKeyspaceName refuses a keyspace name that tiercache.NewKeyspace
// would refuse.
func checkKeyspaceName(name string) error {
	if err := tiercache.ValidKeyspaceName(name); err != nil {
		return usageErrorf("%w", err)
	}
	return nil
}

// redisKey returns the Redis key of key in keyspace, refusing a key that
// is empty, makes the Redis key longer than tiercache.DefaultMaxKeyLength,
// or is not UTF-8 or holds a control character (which no shell user means).
func redisKey(namespace, keyspace, key string) (string, error) {
	rk := namespace + ":" + keyspace + ":" + key
	switch {
	case key == "":
		return "", usageErrorf("empty key")
	case len(rk) > tiercache.DefaultMaxKeyLength:
		return "", usageErrorf("key of %d bytes: its Redis key %.40q... of %d bytes is longer than %d", len(key), rk, len(rk), tiercache.DefaultMaxKeyLength)
	case !utf8.ValidString(key):
		return "", usageErrorf("key %q is not valid UTF-8", key)
	case strings.IndexFunc(key, unicode.IsControl) >= 0:
		return "", usageErrorf("key %q contains a control character", key)
	}
	return rk, nil
}

// checkTag refuses a tag that tiercache refuses (the rules of
// tiercache.ErrInvalidTag).
func checkTag(tag string) error {
	if err := tiercache.ValidTag(tag); err != nil {
		return usageErrorf("%w", err)
	}
	return nil
}

// checkKnownKeyspace refuses a keyspace that no live replica uses, when
// there are live replicas: a typo would otherwise read or delete nothing
// and say so only in passing. With no presence record at all (replicas
// with heartbeats off, or none running), any keyspace goes.
func checkKnownKeyspace(ctx context.Context, client redis.UniversalClient, namespace, keyspace string) error {
	reps, err := tiercache.ListReplicas(ctx, client, namespace)
	err = firstErrors(err, shownErrors)
	if len(reps) == 0 {
		if err != nil {
			return fmt.Errorf("check keyspace %q against the replicas (--force skips this): %w", keyspace, err)
		}
		return nil
	}
	known := knownKeyspaces(reps)
	if slices.Contains(known, keyspace) {
		return nil
	}
	return usageErrorf("unknown keyspace %q: the %s in namespace %q use %s; pass --force to go on anyway",
		keyspace, plural(len(reps), "live replica"), namespace, listOrNone(known))
}

// knownKeyspaces returns the keyspaces that reps use, sorted.
func knownKeyspaces(reps []tiercache.Replica) []string {
	var out []string
	for _, r := range reps {
		for name := range r.Stats.Keyspaces {
			out = append(out, name)
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// shownKnown is how many keyspaces listOrNone names.
const shownKnown = 50

// listOrNone names the first shownKnown keyspaces, or says there is none.
func listOrNone(names []string) string {
	switch {
	case len(names) == 0:
		return "no keyspace"
	case len(names) > shownKnown:
		return strings.Join(names[:shownKnown], ", ") + fmt.Sprintf(" and %d more", len(names)-shownKnown)
	}
	return strings.Join(names, ", ")
}
