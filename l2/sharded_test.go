package l2

import (
	"context"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tiercache/tiercache/internal/redistest"
	"github.com/tiercache/tiercache/internal/slots"
)

// TestShardedPubSubScripts checks, on a real 3-master Cluster, that a Store
// with Options.Sharded publishes every invalidation of its scripts with
// SPUBLISH on the channel of the script's slot, on the master that owns it:
// a sharded subscriber of that channel receives it, a classic subscriber of
// the base channel receives nothing.
func TestShardedPubSubScripts(t *testing.T) {
	t.Parallel()
	cl := redistest.StartCluster(t)
	cc := cl.Client(t)
	ctx := context.Background()
	const base = "ns:inv"
	s, err := New(cc, Options{Sharded: true, FencePrefix: "ns::fence"})
	if err != nil {
		t.Fatal(err)
	}

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
		chans[i] = slots.Channel(base, slots.Of(k))
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
	classic := cc.Subscribe(ctx, base)
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
		if err := s.SetAndPublish(ctx, Item{Key: k, Value: []byte("v"), TTL: time.Minute}, base, []byte("set"+k)); err != nil {
			t.Fatal(err)
		}
		expect(t, i, "set")
		if _, err := s.DeleteAndPublish(ctx, []string{k}, base, []byte("del"+k)); err != nil {
			t.Fatal(err)
		}
		expect(t, i, "del")
		if _, err := s.WriteAndPublish(ctx, []Op{{Item: Item{Key: k, Value: []byte("w"), TTL: time.Minute}}}, base, []byte("write"+k)); err != nil {
			t.Fatal(err)
		}
		expect(t, i, "write")
		e, err := s.Read(ctx, k+"{"+k+"}missing", 1<<20, "")
		if err != nil {
			t.Fatal(err)
		}
		res, err := s.Fill(ctx, []Fill{{Item: Item{Key: k + "{" + k + "}missing", Value: []byte("f"), TTL: time.Minute}, Fence: e.Fence, Msg: []byte("fill" + k)}}, base)
		if err != nil || res[0] != Stored {
			t.Fatalf("fill: %v %v", res, err)
		}
		expect(t, i, "fill")
		if _, err := s.NewGeneration(ctx, "{"+k+"}gens", "ks", base, "me", "ks"); err != nil {
			t.Fatal(err)
		}
		m, err := subs[i].ReceiveTimeout(ctx, 5*time.Second)
		if msg, ok := m.(*redis.Message); err != nil || !ok || msg.Channel != chans[i] {
			t.Fatalf("new generation in slot of %q: got %#v, %v", k, m, err)
		}
	}
	// Nothing went out on the classic channel: PUBLISH was not used.
	if err := cc.Publish(ctx, base, "marker").Err(); err != nil {
		t.Fatal(err)
	}
	m, err := classic.ReceiveTimeout(ctx, 5*time.Second)
	if msg, ok := m.(*redis.Message); err != nil || !ok || msg.Payload != "marker" {
		t.Fatalf("classic channel: first message %#v (%v), want only the marker", m, err)
	}
}
