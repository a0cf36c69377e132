package l2

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/vmihailenco/msgpack/v5"

	"github.com/tiercache/tiercache/internal/redistest"
	"github.com/tiercache/tiercache/internal/slots"
)

// shardBase is the base channel of the sharded store tests.
const shardBase = "ns:inv"

// shardedStore starts a 3-master Cluster and returns it, a client of it and
// a Store with Options.Sharded on that client.
func shardedStore(t *testing.T) (*redistest.Cluster, *redis.ClusterClient, *Store) {
	t.Helper()
	cl := redistest.StartCluster(t)
	cc := cl.Client(t)
	s, err := New(cc, Options{Sharded: true, FencePrefix: "ns::fence"})
	if err != nil {
		t.Fatal(err)
	}
	return cl, cc, s
}

// TestShardedPubSubScripts checks, on a real 3-master Cluster, that a Store
// with Options.Sharded publishes every invalidation of its scripts with
// SPUBLISH on the channel of the script's slot, on the master that owns it:
// a sharded subscriber of that channel receives it, a classic subscriber of
// the base channel receives nothing.
func TestShardedPubSubScripts(t *testing.T) {
	t.Parallel()
	cl, cc, s := shardedStore(t)
	ctx := context.Background()

	// One key on each master.
	keys := []string{}
	for _, k := range []string{"a", "b", "c", "d", "e", "f", "g", "h"} {
		n := cl.NodeFor(k)
		dup := false
		for _, have := range keys {
			if cl.NodeFor(have) == n {
				dup = true
			}
		}
		if !dup {
			keys = append(keys, k)
		}
	}
	if len(keys) != len(cl.Nodes) {
		t.Fatalf("keys %v do not cover the %d masters", keys, len(cl.Nodes))
	}
	chans := make([]string, len(keys))
	for i, k := range keys {
		chans[i] = slots.Channel(shardBase, slots.Of(k))
	}
	// go-redis sends SSUBSCRIBE to the master of the channel's slot; one
	// subscription per channel, since SSUBSCRIBE takes channels of one slot.
	subs := make([]*redis.PubSub, len(chans))
	for i, ch := range chans {
		subs[i] = cc.SSubscribe(ctx, ch)
		t.Cleanup(func() { subs[i].Close() })
		if _, err := subs[i].ReceiveTimeout(ctx, 5*time.Second); err != nil {
			t.Fatalf("ssubscribe %s: %v", ch, err)
		}
	}
	classic := cc.Subscribe(ctx, shardBase)
	t.Cleanup(func() { classic.Close() })
	if _, err := classic.ReceiveTimeout(ctx, 5*time.Second); err != nil {
		t.Fatal(err)
	}

	expect := func(t *testing.T, i int, what string) {
		t.Helper()
		m, err := subs[i].ReceiveTimeout(ctx, 5*time.Second)
		if err != nil {
			t.Fatalf("%s of %q: no message on %s: %v", what, keys[i], chans[i], err)
		}
		msg, ok := m.(*redis.Message)
		if !ok || msg.Channel != chans[i] || msg.Payload != what+keys[i] {
			t.Fatalf("%s of %q: got %#v on %s", what, keys[i], m, chans[i])
		}
	}
	for i, k := range keys {
		if err := s.SetAndPublish(ctx, Item{Key: k, Value: []byte("v"), TTL: time.Minute}, shardBase, []byte("set"+k)); err != nil {
			t.Fatal(err)
		}
		expect(t, i, "set")
		if _, err := s.DeleteAndPublish(ctx, []string{k}, shardBase, []byte("del"+k)); err != nil {
			t.Fatal(err)
		}
		expect(t, i, "del")
		if _, err := s.WriteAndPublish(ctx, []Op{{Item: Item{Key: k, Value: []byte("w"), TTL: time.Minute}}}, shardBase, []byte("write"+k)); err != nil {
			t.Fatal(err)
		}
		expect(t, i, "write")
		e, err := s.Read(ctx, k+"{"+k+"}missing", 1<<20, "")
		if err != nil {
			t.Fatal(err)
		}
		res, err := s.Fill(ctx, []Fill{{Item: Item{Key: k + "{" + k + "}missing", Value: []byte("f"), TTL: time.Minute}, Fence: e.Fence, Msg: []byte("fill" + k)}}, shardBase)
		if err != nil || res[0] != Stored {
			t.Fatalf("fill: %v %v", res, err)
		}
		expect(t, i, "fill")
		if _, err := s.NewGeneration(ctx, "{"+k+"}gens", "ks", shardBase, "me", "ks"); err != nil {
			t.Fatal(err)
		}
		m, err := subs[i].ReceiveTimeout(ctx, 5*time.Second)
		if msg, ok := m.(*redis.Message); err != nil || !ok || msg.Channel != chans[i] {
			t.Fatalf("new generation in slot of %q: got %#v, %v", k, m, err)
		}
	}
	// Nothing went out on the classic channel: PUBLISH was not used.
	if err := cc.Publish(ctx, shardBase, "marker").Err(); err != nil {
		t.Fatal(err)
	}
	m, err := classic.ReceiveTimeout(ctx, 5*time.Second)
	if msg, ok := m.(*redis.Message); err != nil || !ok || msg.Payload != "marker" {
		t.Fatalf("classic channel: first message %#v (%v), want only the marker", m, err)
	}
}

// TestShardedPubSubMigratingSlot checks that a write redirected by ASK to
// the master importing a migrating slot, whose SPUBLISH there reaches no
// subscriber (they listen for the slot on its owner), is published again
// on the owner: a sharded subscriber of the slot's channel receives the
// invalidation of every kind of write while the slot migrates.
func TestShardedPubSubMigratingSlot(t *testing.T) {
	t.Parallel()
	cl, cc, s := shardedStore(t)
	ctx := context.Background()
	// Keys of one slot, by hash tag, on Nodes[0]; it migrates to Nodes[1].
	const tag = "{mig}"
	sl := slots.Of(tag)
	src, dst := cl.NodeFor(tag), cl.Nodes[1]
	if src == dst {
		dst = cl.Nodes[2]
	}
	srcC, dstC := src.Client(t), dst.Client(t)
	srcID, err := srcC.Do(ctx, "CLUSTER", "MYID").Text()
	if err != nil {
		t.Fatal(err)
	}
	dstID, err := dstC.Do(ctx, "CLUSTER", "MYID").Text()
	if err != nil {
		t.Fatal(err)
	}
	ch := slots.Channel(shardBase, sl)
	sub := cc.SSubscribe(ctx, ch) // on the owner, src
	t.Cleanup(func() { sub.Close() })
	if _, err := sub.ReceiveTimeout(ctx, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	// The keys and their fence exist before the migration, and move
	// first: a script of several keys runs on the importing master only
	// when it holds them all (TRYAGAIN otherwise), so these are the writes
	// that Redis redirects there.
	keys := []string{tag + "a", tag + "b", tag + "c", tag + "filled", tag + "gens"}
	for _, k := range keys[:4] {
		if err := s.SetAndPublish(ctx, Item{Key: k, Value: []byte("old"), TTL: time.Minute}, shardBase, []byte("before")); err != nil {
			t.Fatal(err)
		}
		expect0(t, sub, "before")
	}
	if err := dstC.Do(ctx, "CLUSTER", "SETSLOT", sl, "IMPORTING", srcID).Err(); err != nil {
		t.Fatal(err)
	}
	if err := srcC.Do(ctx, "CLUSTER", "SETSLOT", sl, "MIGRATING", dstID).Err(); err != nil {
		t.Fatal(err)
	}
	args := []any{"MIGRATE", "127.0.0.1", dst.Port, "", 0, 5000, "KEYS", s.FenceKey(tag + "a")}
	for _, k := range keys[:4] {
		args = append(args, k)
	}
	if err := srcC.Do(ctx, args...).Err(); err != nil {
		t.Fatalf("migrate: %v", err)
	}
	expect := func(t *testing.T, what string) {
		t.Helper()
		m, err := sub.ReceiveTimeout(ctx, 5*time.Second)
		msg, ok := m.(*redis.Message)
		if err != nil || !ok || msg.Payload != what {
			t.Fatalf("%s while the slot migrates: got %#v, %v; want its message on the owner", what, m, err)
		}
	}
	// The keys are gone from the owner: every write is redirected (ASK).
	if err := s.SetAndPublish(ctx, Item{Key: tag + "a", Value: []byte("v"), TTL: time.Minute}, shardBase, []byte("set")); err != nil {
		t.Fatal(err)
	}
	expect(t, "set")
	if n, err := s.DeleteAndPublish(ctx, []string{tag + "b"}, shardBase, []byte("del")); err != nil || n != 1 {
		t.Fatalf("delete: %d, %v", n, err)
	}
	expect(t, "del")
	if _, err := s.WriteAndPublish(ctx, []Op{{Item: Item{Key: tag + "c", Value: []byte("w"), TTL: time.Minute}}}, shardBase, []byte("write")); err != nil {
		t.Fatal(err)
	}
	expect(t, "write")
	e, err := s.Read(ctx, tag+"filled", 1<<20, "") // the fill's fence, after the writes
	if err != nil || e.Value == nil {
		t.Fatalf("read while the slot migrates: %+v, %v", e, err)
	}
	res, err := s.Fill(ctx, []Fill{{Item: Item{Key: tag + "filled", Value: []byte("f"), TTL: time.Minute}, Mode: FillReplace, Fence: e.Fence, Msg: []byte("fill")}}, shardBase)
	if err != nil || res[0] != Stored {
		t.Fatalf("fill: %v, %v", res, err)
	}
	expect(t, "fill")
	if _, err := s.NewGeneration(ctx, tag+"gens", "ks", shardBase, "me", "ks"); err != nil {
		t.Fatal(err)
	}
	m, err := sub.ReceiveTimeout(ctx, 5*time.Second)
	if msg, ok := m.(*redis.Message); err != nil || !ok || msg.Channel != ch {
		t.Fatalf("new generation while the slot migrates: got %#v, %v", m, err)
	}
	// The writes landed on the importing master.
	var exists *redis.IntCmd
	if _, err := dstC.Pipelined(ctx, func(p redis.Pipeliner) error {
		p.Do(ctx, "ASKING")
		exists = p.Exists(ctx, tag+"a", tag+"c", tag+"filled")
		return nil
	}); err != nil || exists.Val() != 3 {
		t.Fatalf("keys on the importing master: %d, %v; want 3", exists.Val(), err)
	}
}

// expect0 waits for the next message on sub and checks its payload.
func expect0(t *testing.T, sub *redis.PubSub, want string) {
	t.Helper()
	m, err := sub.ReceiveTimeout(context.Background(), 5*time.Second)
	if msg, ok := m.(*redis.Message); err != nil || !ok || msg.Payload != want {
		t.Fatalf("got %#v, %v; want the message %q", m, err, want)
	}
}

// TestRepublishedNamesItsLog checks the message that runPub publishes again
// after an ASK redirection, with logs on: the same map with "lg", its slot's
// tag, and no number (the script numbered it on the importing master), so
// that a subscriber reads that slot's log back.
func TestRepublishedNamesItsLog(t *testing.T) {
	t.Parallel()
	cl := redistest.StartCluster(t)
	s, err := New(cl.Client(t), Options{Sharded: true, Log: LogOptions{Prefix: "ns::"}})
	if err != nil {
		t.Fatal(err)
	}
	msg, err := msgpack.Marshal(map[string]any{"v": 1, "ks": "u", "k": []string{"1"}})
	if err != nil {
		t.Fatal(err)
	}
	var got map[string]any
	if err := msgpack.Unmarshal(s.republished("ns:u:1", msg), &got); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{"v": int8(1), "ks": "u", "k": []any{"1"}, "lg": slots.Tags()[slots.Of("ns:u:1")]}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("republished %v; want %v", got, want)
	}
	if raw := []byte("raw"); string(s.republished("ns:u:1", raw)) != "raw" {
		t.Fatal("a message that is not a map was changed")
	}
	off, err := New(cl.Client(t), Options{Sharded: true})
	if err != nil {
		t.Fatal(err)
	}
	if string(off.republished("ns:u:1", msg)) != string(msg) {
		t.Fatal("without logs, the message was changed")
	}
}
