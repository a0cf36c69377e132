package l2_test

import (
	"bytes"
	"context"
	"fmt"
	"reflect"
	"testing"
	"time"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/tiercache/tiercache/internal/redistest"
	"github.com/tiercache/tiercache/internal/slots"
	"github.com/tiercache/tiercache/l2"
)

// invalidation returns a message as bus.Message.Marshal writes it (a
// msgpack map), for keyspace ks and keys.
func invalidation(t testing.TB, ks string, keys ...string) []byte {
	t.Helper()
	b, err := msgpack.Marshal(map[string]any{"v": 1, "o": "test", "ks": ks, "k": keys})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// numbered decodes a published message and checks that it is want with "sq"
// (and "lg" when tag is not empty) added; it returns the number.
func numbered(t testing.TB, got, want []byte, tag string) uint64 {
	t.Helper()
	var m, w map[string]any
	if err := msgpack.Unmarshal(got, &m); err != nil {
		t.Fatalf("published %q: %v", got, err)
	}
	if err := msgpack.Unmarshal(want, &w); err != nil {
		t.Fatal(err)
	}
	sq, err := toUint(m["sq"])
	if err != nil || sq == 0 {
		t.Fatalf("published %v: no sequence number (%v)", m, err)
	}
	delete(m, "sq")
	if tag != "" {
		if m["lg"] != tag {
			t.Fatalf("published %v: log %v, want %q", m, m["lg"], tag)
		}
		delete(m, "lg")
	}
	if !reflect.DeepEqual(m, w) {
		t.Fatalf("published %v; want %v plus a number", m, w)
	}
	return sq
}

func toUint(v any) (uint64, error) {
	var n uint64
	b, err := msgpack.Marshal(v)
	if err == nil {
		err = msgpack.Unmarshal(b, &n)
	}
	return n, err
}

// TestLog checks, on a real server, that with Options.Log every publishing
// script numbers its message one above the one before, keeps it in the
// namespace's log (at most MaxCount of them, none older than MaxAge, the
// log expiring MaxAge after its last write), and that a counter Redis lost
// starts again above every number it gave.
func TestLog(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	c, _ := newClient(t, srv)
	opts := roomy()
	opts.Log = l2.LogOptions{Prefix: "ns::", MaxCount: 3, MaxAge: time.Minute}
	s := newStore(t, c, opts)
	ctx := t.Context()
	ps := subscribe(t, srv, "ns:inv")
	if s.Logs() != 1 {
		t.Fatalf("Logs = %d; want 1", s.Logs())
	}

	// Starting the counter: the first message is numbered one above.
	if h, err := s.LogHeads(ctx, []int{0}, false); err != nil || h[0] != 0 {
		t.Fatalf("LogHeads of a new log = %v, %v; want [0]", h, err)
	}
	started, err := s.LogHeads(ctx, []int{0}, true)
	if err != nil || started[0] < uint64(time.Now().Add(-time.Hour).UnixMicro()) {
		t.Fatalf("LogHeads(start) = %v, %v; want a counter from Redis's clock", started, err)
	}
	if again, err := s.LogHeads(ctx, []int{0}, true); err != nil || again[0] != started[0] {
		t.Fatalf("LogHeads(start) again = %v, %v; want %v: a counter starts once", again, err, started)
	}
	last := started[0]
	var sent [][]byte
	step := func(what string, msg []byte, run func() error) {
		t.Helper()
		if err := run(); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		got := receive(t, ps)
		sq := numbered(t, got, msg, "")
		if last != 0 && sq != last+1 {
			t.Fatalf("%s: number %d after %d", what, sq, last)
		}
		last = sq
		sent = append(sent, got)
	}
	m1 := invalidation(t, "u", "1")
	step("set", m1, func() error {
		return s.SetAndPublish(ctx, l2.Item{Key: "ns:u:1", Value: []byte("a"), TTL: time.Minute}, "ns:inv", m1)
	})
	m2 := invalidation(t, "u", "1", "2")
	step("delete", m2, func() error {
		_, err := s.DeleteAndPublish(ctx, []string{"ns:u:1", "ns:u:2"}, "ns:inv", m2)
		return err
	})
	m3 := invalidation(t, "u", "3")
	step("write", m3, func() error {
		_, err := s.WriteAndPublish(ctx, []l2.Op{{Item: l2.Item{Key: "ns:u:3", Value: []byte("c"), TTL: time.Minute}}}, "ns:inv", m3)
		return err
	})
	m4 := invalidation(t, "u", "4")
	step("fill", m4, func() error {
		e, err := s.Read(ctx, "ns:u:4", 1<<20, "")
		if err != nil {
			return err
		}
		_, err = s.Fill(ctx, []l2.Fill{{Item: l2.Item{Key: "ns:u:4", Value: []byte("d"), TTL: time.Minute}, Mode: l2.FillReplace, Fence: e.Fence, Msg: m4}}, "ns:inv")
		return err
	})
	// Clear builds its message in Lua: numbered all the same.
	if _, err := s.NewGeneration(ctx, "ns::gens", "u", "ns:inv", "test", "u"); err != nil {
		t.Fatal(err)
	}
	var clear map[string]any
	got := receive(t, ps)
	if err := msgpack.Unmarshal(got, &clear); err != nil {
		t.Fatal(err)
	}
	if sq, _ := toUint(clear["sq"]); sq != last+1 || clear["f"] != true {
		t.Fatalf("clear published %v; want a flush numbered %d", clear, last+1)
	}
	last++
	sent = append(sent, got)

	heads, err := s.LogHeads(ctx, []int{0}, false)
	if err != nil || heads[0] != last {
		t.Fatalf("LogHeads = %v, %v; want [%d]", heads, err, last)
	}
	entries, err := s.LogEntries(ctx, []int{0})
	if err != nil {
		t.Fatal(err)
	}
	// Trimming is approximate (whole stream nodes): the log keeps at
	// least MaxCount messages, here every one, in order.
	if len(entries[0]) != len(sent) {
		t.Fatalf("the log keeps %d messages; want the %d sent", len(entries[0]), len(sent))
	}
	for i, e := range entries[0] {
		if want := sent[i]; e.Msg != string(want) || e.First {
			t.Fatalf("log entry %d = %+v; want %q, not first", i, e, want)
		}
	}
	if pttl := c.PTTL(ctx, "ns::log").Val(); pttl <= 0 || pttl > time.Minute {
		t.Fatalf("the log's TTL is %v; want at most MaxAge", pttl)
	}

	// A message that is not a map of bus.Message's is published as it is.
	if err := s.SetAndPublish(ctx, l2.Item{Key: "ns:u:5", Value: []byte("e"), TTL: time.Minute}, "ns:inv", []byte("raw")); err != nil {
		t.Fatal(err)
	}
	if got := receive(t, ps); string(got) != "raw" {
		t.Fatalf("raw message published as %q", got)
	}
	if h, _ := s.LogHeads(ctx, []int{0}, false); h[0] != last {
		t.Fatalf("a raw message moved the counter to %d from %d", h[0], last)
	}

	// A full stream node (100 messages) beyond MaxCount is trimmed.
	for i := range 250 {
		if err := s.Publish(ctx, "ns:u:x", "ns:inv", invalidation(t, "u", fmt.Sprint(i))); err != nil {
			t.Fatal(err)
		}
		receive(t, ps)
	}
	if n := c.XLen(ctx, "ns::log").Val(); n < 3 || n > 3+100 {
		t.Fatalf("after 250 more messages the log holds %d; want MaxCount (3) and at most a stream node more", n)
	}
	last += 250
	if err := c.Del(ctx, "ns::log").Err(); err != nil {
		t.Fatal(err)
	}
	// The counter lost: the next number is still above every other.
	if err := c.Del(ctx, "ns::seq").Err(); err != nil {
		t.Fatal(err)
	}
	m6 := invalidation(t, "u", "6")
	if err := s.SetAndPublish(ctx, l2.Item{Key: "ns:u:6", Value: []byte("f"), TTL: time.Minute}, "ns:inv", m6); err != nil {
		t.Fatal(err)
	}
	got6 := receive(t, ps)
	if sq := numbered(t, got6, m6, ""); sq <= last {
		t.Fatalf("a lost counter numbered %d, not above %d", sq, last)
	}
	if entries, err := s.LogEntries(ctx, []int{0}); err != nil || len(entries[0]) != 1 || entries[0][0] != (l2.LogEntry{Msg: string(got6), First: true}) {
		t.Fatalf("after a write, the log holds %+v (%v); want only the new message, first of its counter", entries, err)
	}
}

// TestLogOff checks that without Options.Log messages are published as
// they are and no key is written for them.
func TestLogOff(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	c, _ := newClient(t, srv)
	s := newStore(t, c, roomy())
	ps := subscribe(t, srv, "ns:inv")
	m := invalidation(t, "u", "1")
	if err := s.SetAndPublish(t.Context(), l2.Item{Key: "ns:u:1", Value: []byte("a"), TTL: time.Minute}, "ns:inv", m); err != nil {
		t.Fatal(err)
	}
	if got := receive(t, ps); !bytes.Equal(got, m) {
		t.Fatalf("published %q; want %q", got, m)
	}
	if s.Logs() != 0 {
		t.Fatalf("Logs = %d; want 0", s.Logs())
	}
	if n := c.DBSize(t.Context()).Val(); n != 2 { // the value and its fence
		t.Fatalf("%d keys: %v", n, c.Keys(t.Context(), "*").Val())
	}
}

// TestLogCluster checks that on a Cluster each slot has its log: a script
// numbers its message in its keys' slot's log and names that log (its slot
// tag, "lg"), which LogIndex maps back to the slot.
func TestLogCluster(t *testing.T) {
	t.Parallel()
	cl := redistest.StartCluster(t)
	cc := cl.Client(t)
	s, err := l2.New(cc, l2.Options{ReadTimeout: time.Minute, WriteTimeout: time.Minute, Log: l2.LogOptions{Prefix: "ns::"}})
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	ps := cc.Subscribe(ctx, "ns:inv")
	t.Cleanup(func() { ps.Close() })
	if _, err := ps.Receive(ctx); err != nil {
		t.Fatal(err)
	}
	if s.Logs() != slots.Count {
		t.Fatalf("Logs = %d; want %d", s.Logs(), slots.Count)
	}
	for _, k := range []string{"ns:u:a", "ns:u:b", "ns:u:a"} {
		m := invalidation(t, "u", k)
		if err := s.SetAndPublish(ctx, l2.Item{Key: k, Value: []byte("v"), TTL: time.Minute}, "ns:inv", m); err != nil {
			t.Fatal(err)
		}
		rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		got, err := ps.ReceiveMessage(rctx)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		slot := slots.Of(k)
		tag := slots.Tags()[slot]
		sq := numbered(t, []byte(got.Payload), m, tag)
		if i, ok := s.LogIndex(tag); !ok || i != slot {
			t.Fatalf("LogIndex(%q) = %d, %v; want %d", tag, i, ok, slot)
		}
		heads, err := s.LogHeads(ctx, []int{slot, (slot + 1) % slots.Count}, false)
		if err != nil || heads[0] != sq || heads[1] != 0 {
			t.Fatalf("LogHeads = %v, %v; want [%d 0]", heads, err, sq)
		}
		entries, err := s.LogEntries(ctx, []int{slot})
		if err != nil || entries[0][len(entries[0])-1].Msg != got.Payload {
			t.Fatalf("LogEntries = %+v, %v; want the message last", entries, err)
		}
	}
	for _, bad := range []string{"", "{x}", "nope-not-a-tag"} {
		if _, ok := s.LogIndex(bad); ok {
			t.Errorf("LogIndex(%q) accepted", bad)
		}
	}
}
