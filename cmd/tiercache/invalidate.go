package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/vmihailenco/msgpack/v5"

	"github.com/tiercache/tiercache"
	"github.com/tiercache/tiercache/bus"
	"github.com/tiercache/tiercache/internal/slots"
	"github.com/tiercache/tiercache/l2"
)

// maxScannedKey is the MaxKeyLength of the CLI's Cache, above the default
// so that --all can delete the keys of replicas that raised theirs; keys
// given as arguments are held to tiercache.DefaultMaxKeyLength.
const maxScannedKey = 1 << 16

// stopTimeout bounds the Stop of the CLI's Cache.
const stopTimeout = 5 * time.Second

// invalidation is what invalidate was asked to do.
type invalidation struct {
	keyspace string
	keys     []string // KEY... mode
	tags     []string // --tag mode
	all      bool     // --all mode
	l1Only   bool
}

func runInvalidate(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newCommandFlags("invalidate", []string{
		"invalidate [flags] KEYSPACE KEY...",
		"invalidate [flags] KEYSPACE --tag TAG [--tag TAG]...",
		"invalidate [flags] KEYSPACE --all",
	}, `
Deletes values from Redis and evicts them from every replica's L1, through
the library's own scripts: each deletion and its invalidation message reach
Redis in one atomic step, as Keyspace.Delete does. KEY... deletes those keys
(an integer key in decimal: "42" is the key 42 of an int64 keyspace). --tag
deletes every value carrying the tag, as Keyspace.InvalidateTags does. --all
clears the keyspace, as Keyspace.Clear does: one step, whatever the number
of keys, without scanning them.
--l1-only leaves Redis alone and only publishes the invalidation: the keys,
the tags (replicas then flush the keyspace: they keep no tag index) or a
flush of the keyspace.
A keyspace that none of the live replicas uses is refused unless --force.`, true)
	var tags stringList
	fs.Var(&tags, "tag", "invalidate the values carrying this `tag`; may be repeated")
	all := fs.Bool("all", false, "invalidate every key of the keyspace")
	l1Only := fs.Bool("l1-only", false, "only publish the invalidation: evict from the replicas' L1, leave Redis as it is")
	force := fs.Bool("force", false, "go on even if no live replica uses the keyspace")
	rest, err := fs.parse(args, stdout)
	if err != nil {
		return err
	}
	inv, err := invalidationOf(rest, tags, *all, *l1Only)
	if err != nil {
		return err
	}
	ns := fs.conn.namespace
	for _, k := range inv.keys {
		if _, err := redisKey(ns, inv.keyspace, k); err != nil {
			return err
		}
	}
	client, err := fs.conn.connect(ctx)
	if err != nil {
		return err
	}
	defer client.Close()
	if !*force {
		if err := checkKnownKeyspace(ctx, client, ns, inv.keyspace); err != nil {
			return err
		}
	}
	origin := cliOrigin()
	if inv.l1Only {
		return publishOnly(ctx, client, fs.conn, origin, inv, stdout)
	}
	return inv.apply(ctx, client, fs.conn, origin, stdout)
}

// invalidationOf checks the arguments: a keyspace and exactly one of keys,
// --tag and --all.
func invalidationOf(rest, tags []string, all, l1Only bool) (invalidation, error) {
	if len(rest) == 0 {
		return invalidation{}, usageErrorf("want KEYSPACE and KEY..., --tag TAG or --all")
	}
	inv := invalidation{keyspace: rest[0], keys: rest[1:], tags: tags, all: all, l1Only: l1Only}
	if err := checkKeyspaceName(inv.keyspace); err != nil {
		return inv, err
	}
	modes := 0
	for _, on := range []bool{len(inv.keys) > 0, len(inv.tags) > 0, inv.all} {
		if on {
			modes++
		}
	}
	switch {
	case modes == 0:
		return inv, usageErrorf("nothing to invalidate in keyspace %q: give keys, --tag TAG or --all", inv.keyspace)
	case modes > 1:
		return inv, usageErrorf("give keys, --tag or --all, only one of them")
	}
	for _, t := range inv.tags {
		if err := checkTag(t); err != nil {
			return inv, err
		}
	}
	return inv, nil
}

// cliOrigin is the instance id the CLI puts in what it publishes, so that
// watch and the replicas' logs tell who invalidated.
func cliOrigin() string {
	host, _ := os.Hostname()
	return "tiercache-cli@" + host + ":" + strconv.Itoa(os.Getpid())
}

// publishOnly publishes inv's invalidation without touching Redis data,
// as a replica's write script does: numbered in the namespace's log (the
// log of slot 0 on a Cluster), so that replicas that miss it read it back
// (replay), on channel, or, sharded, on the sharded channel of slot 0 (a
// sharded subscriber listens to the channels of every slot).
func publishOnly(ctx context.Context, client redis.UniversalClient, conn *connFlags, origin string, inv invalidation, stdout io.Writer) error {
	m := bus.Message{Origin: origin, Keyspace: inv.keyspace, Keys: inv.keys, Tags: inv.tags, Flush: inv.all}
	b, err := m.Marshal()
	if err != nil {
		return err
	}
	sharded := conn.sharded(client)
	store, err := l2.New(client, l2.Options{
		ReadTimeout:  conn.timeout,
		WriteTimeout: conn.timeout,
		Sharded:      sharded,
		Log:          l2.LogOptions{Prefix: conn.namespace + "::"},
		Breaker:      l2.BreakerOptions{Failures: -1},
	})
	if err != nil {
		return err
	}
	slot0 := "{" + slots.Tags()[0] + "}"
	if err := store.Publish(ctx, slot0, conn.channel, b); err != nil {
		return err
	}
	channel := conn.channel
	if sharded {
		channel = slots.Channel(channel, 0)
	}
	what := plural(len(inv.keys), "key")
	switch {
	case inv.all:
		what = "a flush"
	case len(inv.tags) > 0:
		what = plural(len(inv.tags), "tag") + " (replicas flush the keyspace)"
	}
	fmt.Fprintf(stdout, "published 1 invalidation of keyspace %q on %s: %s; Redis data unchanged\n", inv.keyspace, channel, what)
	return nil
}

// apply deletes what inv names through a Cache of the CLI's own, which
// never starts: Delete and InvalidateTags need no subscription, and a Cache
// with heartbeats off writes no presence record.
func (inv invalidation) apply(ctx context.Context, client redis.UniversalClient, conn *connFlags, origin string, stdout io.Writer) (err error) {
	c, err := tiercache.New(client, tiercache.Config{
		Namespace:         conn.namespace,
		Channel:           conn.channel,
		PubSubMode:        conn.pubsubMode,
		InstanceID:        origin,
		ReadTimeout:       conn.timeout,
		WriteTimeout:      conn.timeout,
		MaxKeyLength:      maxScannedKey,
		HeartbeatInterval: -1, // the CLI is no replica
		Breaker:           tiercache.BreakerConfig{Failures: -1},
	})
	if err != nil {
		return err
	}
	defer func() {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), stopTimeout)
		defer cancel()
		err = errors.Join(err, c.Stop(sctx))
	}()
	ks, err := tiercache.NewKeyspace[string, msgpack.RawMessage](c, inv.keyspace, tiercache.KeyspaceConfig{DisableL1: true})
	if err != nil {
		return err
	}
	switch {
	case len(inv.keys) > 0:
		return inv.deleteKeys(ctx, client, ks, stdout)
	case len(inv.tags) > 0:
		if err := ks.InvalidateTags(ctx, inv.tags...); err != nil {
			return err
		}
		s := ks.Stats()
		fmt.Fprintf(stdout, "deleted %s tagged %s, published %s\n",
			plural(int(s.TagDeletes), "key"), strings.Join(inv.tags, " or "), plural(int(s.Published), "invalidation"))
		return nil
	default:
		return inv.clearAll(ctx, ks, stdout)
	}
}

// deleteKeys deletes inv.keys, saying how many were in Redis.
func (inv invalidation) deleteKeys(ctx context.Context, client redis.UniversalClient, ks *tiercache.Keyspace[string, msgpack.RawMessage], stdout io.Writer) error {
	exists := make([]*redis.IntCmd, len(inv.keys))
	if _, err := client.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, k := range inv.keys {
			exists[i] = p.Exists(ctx, ks.RedisKey(k))
		}
		return nil
	}); err != nil {
		return fmt.Errorf("exists: %w", err)
	}
	var found int64
	for _, e := range exists {
		found += e.Val()
	}
	if err := ks.Delete(ctx, inv.keys...); err != nil {
		return err
	}
	published := plural(int(ks.Stats().Published), "invalidation")
	if int(found) == len(inv.keys) {
		fmt.Fprintf(stdout, "deleted %s, published %s\n", plural(int(found), "key"), published)
	} else {
		fmt.Fprintf(stdout, "deleted %s of the %d named (the others were not in Redis), published %s\n",
			plural(int(found), "key"), len(inv.keys), published)
	}
	return nil
}

// clearAll clears the keyspace with Keyspace.Clear: one script moves it
// to a new generation and publishes the flush that names it, whatever the
// number of keys; Redis frees the old values as their TTLs run out.
func (inv invalidation) clearAll(ctx context.Context, ks *tiercache.Keyspace[string, msgpack.RawMessage], stdout io.Writer) error {
	if err := ks.Clear(ctx); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "cleared keyspace %q: its values are gone for every replica (a new generation; Redis frees the old ones as their TTLs run out), published 1 invalidation\n", inv.keyspace)
	return nil
}
