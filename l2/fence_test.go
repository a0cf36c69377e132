package l2_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tiercache/tiercache/internal/redistest"
	"github.com/tiercache/tiercache/l2"
)

// topology is a deployment the fence tests run on: one standalone server,
// or a Cluster of three masters.
type topology struct {
	name string
	srv  *redistest.Server  // standalone; nil on a Cluster
	cl   *redistest.Cluster // nil on standalone
}

// client returns a new client of the deployment, with ContextTimeoutEnabled,
// a recorder hooked into it and warm connections to every node.
func (tp topology) client(t *testing.T) (redis.UniversalClient, *recorder) {
	t.Helper()
	if tp.cl == nil {
		return newClient(t, tp.srv)
	}
	opts := tp.cl.Options()
	opts.ContextTimeoutEnabled = true
	cc := redis.NewClusterClient(opts)
	t.Cleanup(func() { cc.Close() })
	rec := new(recorder)
	cc.AddHook(rec)
	err := cc.ForEachMaster(t.Context(), func(ctx context.Context, c *redis.Client) error { return c.Ping(ctx).Err() })
	if err != nil {
		t.Fatalf("Ping = %v", err)
	}
	rec.reset()
	return cc, rec
}

// store returns a Store over a new client of the deployment. Its fences
// are its own (FencePrefix named after the test), so that the writes of
// tests running in parallel on the same servers do not move them.
func (tp topology) store(t *testing.T, opts l2.Options) (*l2.Store, redis.UniversalClient, *recorder) {
	t.Helper()
	c, rec := tp.client(t)
	if opts.FencePrefix == "" {
		opts.FencePrefix = "fence:" + t.Name() + ":"
	}
	return newStore(t, c, opts), c, rec
}

// node returns the server that holds key.
func (tp topology) node(key string) *redistest.Server {
	if tp.cl == nil {
		return tp.srv
	}
	return tp.cl.NodeFor(key)
}

// keys returns n keys named after base. On a Cluster they share base as
// their hash tag, so that one script may write them all; on standalone
// they have no hash tag, so that they fall in several slots.
func (tp topology) keys(base string, n int) []string {
	out := make([]string, n)
	for i := range out {
		if tp.cl != nil {
			out[i] = fmt.Sprintf("{%s}:%d", base, i)
		} else {
			out[i] = fmt.Sprintf("%s:%d", base, i)
		}
	}
	return out
}

// valueOf returns what key holds, "" when it is absent.
func valueOf(t testing.TB, c redis.Cmdable, key string) string {
	t.Helper()
	v, err := c.Get(t.Context(), key).Result()
	if err != nil && !errors.Is(err, redis.Nil) {
		t.Fatalf("GET %s = %v", key, err)
	}
	return v
}

// fenceOf returns the raw value of key's fence, "" when it has none.
func fenceOf(t testing.TB, c redis.Cmdable, s *l2.Store, key string) string {
	t.Helper()
	return valueOf(t, c, s.FenceKey(key))
}

// serverMicros returns the time of c's server in microseconds.
func serverMicros(t testing.TB, c redis.Cmdable) int64 {
	t.Helper()
	tm, err := c.Time(t.Context()).Result()
	if err != nil {
		t.Fatalf("TIME = %v", err)
	}
	return tm.UnixMicro()
}

// item returns an Item of key holding value for a minute.
func item(key, value string) l2.Item {
	return l2.Item{Key: key, Value: []byte(value), TTL: time.Minute}
}

// expectMessages publishes an end marker on channel through pub, then
// receives from ps up to that marker and checks that what came before it
// is want: a message a call did not publish is proven absent, without
// waiting for it. pub must be a client of the server ps listens to, the
// one that ran the calls, so that Redis delivers in order.
func expectMessages(t testing.TB, ps *redis.PubSub, pub *redis.Client, channel string, want ...string) {
	t.Helper()
	const end = "\x00end"
	if err := pub.Publish(t.Context(), channel, end).Err(); err != nil {
		t.Fatalf("PUBLISH = %v", err)
	}
	var got []string
	for {
		m := string(receive(t, ps))
		if m == end {
			break
		}
		got = append(got, m)
	}
	if !slices.Equal(got, want) {
		t.Errorf("messages = %q; want %q", got, want)
	}
}

// writeCase is one write method of Store, which must move the fence of
// every key it writes.
type writeCase struct {
	name string
	n    int // how many keys it writes
	// write writes keys (n of them, from topology.keys(base, n)); a
	// stream or tag version set it needs is named after base, in the
	// keys' hash slot.
	write func(ctx context.Context, s *l2.Store, base string, keys []string) error
}

// writeCases returns a case for each write script.
func writeCases() []writeCase {
	return []writeCase{
		{name: "SetAndPublish", n: 1, write: func(ctx context.Context, s *l2.Store, _ string, keys []string) error {
			return s.SetAndPublish(ctx, item(keys[0], "w"), "fw:inv", []byte("m"))
		}},
		{name: "DeleteAndPublish", n: 3, write: func(ctx context.Context, s *l2.Store, _ string, keys []string) error {
			_, err := s.DeleteAndPublish(ctx, keys, "fw:inv", []byte("m"))
			return err
		}},
		{name: "WriteAndPublish", n: 3, write: func(ctx context.Context, s *l2.Store, _ string, keys []string) error {
			ops := []l2.Op{{Item: item(keys[0], "w")}, {Item: l2.Item{Key: keys[1]}, Delete: true}, {Item: item(keys[2], "w")}}
			errs, err := s.WriteAndPublish(ctx, ops, "fw:inv", []byte("m"))
			if err != nil {
				return err
			}
			return errors.Join(errs...)
		}},
		{name: "EndWrite", n: 1, write: func(ctx context.Context, s *l2.Store, _ string, keys []string) error {
			marker := keys[0] + "::wt"
			if _, err := s.BeginWrite(ctx, marker, time.Minute); err != nil {
				return err
			}
			_, err := s.EndWrite(ctx, marker, item(keys[0], "w"), "fw:inv", []byte("m"))
			return err
		}},
		{name: "RecordAndSet", n: 1, write: func(ctx context.Context, s *l2.Store, base string, keys []string) error {
			st, err := l2.NewStream("{"+base+"}:wb", "g")
			if err != nil {
				return err
			}
			_, err = s.RecordAndSet(ctx, st, "rk", item(keys[0], "w"), "fw:inv", []byte("m"))
			return err
		}},
	}
}

// TestFence runs the fence tests on a standalone server and on a Cluster.
func TestFence(t *testing.T) {
	t.Parallel()
	tps := []topology{
		{name: "standalone", srv: redistest.Start(t)},
		{name: "cluster", cl: redistest.StartCluster(t)},
	}
	// First, while no node has a script yet.
	t.Run("cluster/FillOnNodesMissingTheScript", func(t *testing.T) { testFillOnNodesMissingTheScript(t, tps[1]) })

	tests := []struct {
		name string
		run  func(*testing.T, topology)
	}{
		{name: "WriteScriptsMoveFences", run: testWriteScriptsMoveFences},
		{name: "OtherCallsLeaveFences", run: testOtherCallsLeaveFences},
		{name: "FillIfAbsent", run: testFillIfAbsent},
		{name: "FillReplace", run: testFillReplace},
		{name: "FillLease", run: testFillLease},
		{name: "TaggedFill", run: testTaggedFill},
		{name: "TagTrimHorizon", run: testTagTrimHorizon},
		{name: "BumpTags", run: testBumpTags},
		{name: "FenceReset", run: testFenceReset},
		{name: "Read", run: testRead},
		{name: "ReadMany", run: testReadMany},
	}
	for _, tp := range tps {
		for _, tt := range tests {
			t.Run(tp.name+"/"+tt.name, func(t *testing.T) {
				t.Parallel()
				tt.run(t, tp)
			})
		}
	}
}

// testWriteScriptsMoveFences checks that every write script moves the
// fence of every key it writes, from no fence (set to the time) and from
// an integer (incremented), so that a fill whose read came before the
// write is Fenced, while one whose read came after is Stored.
func testWriteScriptsMoveFences(t *testing.T, tp topology) {
	for _, wc := range writeCases() {
		t.Run(wc.name, func(t *testing.T) {
			s, c, _ := tp.store(t, roomy())
			ctx := t.Context()
			base := "fw" + wc.name
			keys := tp.keys(base, wc.n)
			if distinct := len(slices.Compact(slices.Sorted(slices.Values(fenceKeys(s, keys))))); tp.cl == nil && distinct != wc.n {
				t.Fatalf("keys %q have %d fences; the test needs one per key", keys, distinct)
			}
			for round := range 2 { // no fence yet, then an integer one
				before, err := s.ReadMany(ctx, keys, 1024, "")
				if err != nil {
					t.Fatalf("ReadMany = %v", err)
				}
				raw := make([]string, len(keys))
				for i, k := range keys {
					raw[i] = fenceOf(t, c, s, k)
				}
				if err := wc.write(ctx, s, base, keys); err != nil {
					t.Fatalf("round %d: write = %v", round, err)
				}
				for i, k := range keys {
					got := fenceOf(t, c, s, k)
					n, err := strconv.ParseInt(got, 10, 64)
					if err != nil || got == raw[i] {
						t.Fatalf("round %d: fence of %s = %q after the write, %q before; want a moved integer", round, k, got, raw[i])
					}
					if old, err := strconv.ParseInt(raw[i], 10, 64); err == nil && n <= old {
						t.Errorf("round %d: fence of %s went from %d to %d; want it higher", round, k, old, n)
					}
					want := valueOf(t, c, k)
					stale := l2.Fill{Item: item(k, "stale"), Mode: l2.FillReplace, Fence: before[i].Fence}
					if res := fill(t, s, stale, ""); res != l2.Fenced {
						t.Errorf("round %d: fill of %s read before the write = %v; want fenced", round, k, res)
					}
					if got := valueOf(t, c, k); got != want {
						t.Errorf("round %d: %s = %q after a fenced fill; want %q", round, k, got, want)
					}
				}
			}
			for _, k := range keys {
				e := read(t, s, k, "")
				if res := fill(t, s, l2.Fill{Item: item(k, "fresh"), Mode: l2.FillReplace, Fence: e.Fence}, ""); res != l2.Stored {
					t.Errorf("fill of %s read after the writes = %v; want stored", k, res)
				}
			}
		})
	}
}

// fenceKeys returns the fence of each of keys.
func fenceKeys(s *l2.Store, keys []string) []string {
	out := make([]string, len(keys))
	for i, k := range keys {
		out[i] = s.FenceKey(k)
	}
	return out
}

// testOtherCallsLeaveFences checks that what is not a write leaves the
// fence alone: fills (of every mode), dropping an unreadable value, and
// ending a write that failed at the source.
func testOtherCallsLeaveFences(t *testing.T, tp topology) {
	drop := func(ctx context.Context, s *l2.Store, key string) error {
		_, err := s.DeleteAndPublish(ctx, []string{key}, "ol:inv", nil)
		return err
	}
	tests := []struct {
		name  string
		setup func(ctx context.Context, s *l2.Store, key string) error // nil: none
		call  func(ctx context.Context, s *l2.Store, key string) error
	}{
		{name: "FillIfAbsent", setup: drop, call: func(ctx context.Context, s *l2.Store, key string) error {
			e, err := s.Read(ctx, key, 1024, "")
			if err != nil {
				return err
			}
			return wantFill(ctx, s, l2.Fill{Item: item(key, "f"), Fence: e.Fence}, l2.Stored)
		}},
		{name: "FillReplace", call: func(ctx context.Context, s *l2.Store, key string) error {
			e, err := s.Read(ctx, key, 1024, "")
			if err != nil {
				return err
			}
			return wantFill(ctx, s, l2.Fill{Item: item(key, "f"), Mode: l2.FillReplace, Fence: e.Fence}, l2.Stored)
		}},
		{name: "FillLease",
			setup: func(ctx context.Context, s *l2.Store, key string) error {
				if err := drop(ctx, s, key); err != nil {
					return err
				}
				if _, ok, err := s.Acquire(ctx, key, []byte("L"), time.Minute); err != nil || !ok {
					return fmt.Errorf("Acquire = %v, %v", ok, err)
				}
				return nil
			},
			call: func(ctx context.Context, s *l2.Store, key string) error {
				return wantFill(ctx, s, l2.Fill{Item: item(key, "f"), Mode: l2.FillLease, Lease: []byte("L")}, l2.Stored)
			}},
		{name: "DropUnreadable", call: func(ctx context.Context, s *l2.Store, key string) error {
			dropped, err := s.DropUnreadable(ctx, key, []byte("w"), 0, "ol:inv", []byte("m"))
			if err == nil && !dropped {
				err = errors.New("not dropped")
			}
			return err
		}},
		{name: "EndWrite of a failed write",
			setup: func(ctx context.Context, s *l2.Store, key string) error {
				_, err := s.BeginWrite(ctx, key+"::wt", time.Minute)
				return err
			},
			call: func(ctx context.Context, s *l2.Store, key string) error {
				_, err := s.EndWrite(ctx, key+"::wt", l2.Item{Key: key}, "", nil)
				return err
			}},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, c, _ := tp.store(t, roomy())
			key := tp.keys(fmt.Sprintf("ol%d", i), 1)[0]
			if err := s.SetAndPublish(t.Context(), item(key, "w"), "ol:inv", nil); err != nil {
				t.Fatal(err)
			}
			if tt.setup != nil {
				if err := tt.setup(t.Context(), s, key); err != nil {
					t.Fatal(err)
				}
			}
			before := fenceOf(t, c, s, key)
			if err := tt.call(t.Context(), s, key); err != nil {
				t.Fatalf("%s = %v", tt.name, err)
			}
			if got := fenceOf(t, c, s, key); got != before {
				t.Errorf("fence = %q after %s; want %q, unmoved", got, tt.name, before)
			}
		})
	}
}

// wantFill runs f alone and returns an error unless its result is want.
func wantFill(ctx context.Context, s *l2.Store, f l2.Fill, want l2.FillResult) error {
	res, err := s.Fill(ctx, []l2.Fill{f}, "")
	if err != nil {
		return err
	}
	if res[0] != want {
		return fmt.Errorf("Fill = %v; want %v", res[0], want)
	}
	return nil
}

// testFillIfAbsent checks that a fill whose read saw no write stores, with
// its TTL, and that a second one (same read) finds the key taken.
func testFillIfAbsent(t *testing.T, tp topology) {
	s, c, _ := tp.store(t, roomy())
	key := tp.keys("fa", 1)[0]
	e := read(t, s, key, "")
	if e.Present() {
		t.Fatalf("Read = %+v; want absent", e)
	}
	first := l2.Fill{Item: l2.Item{Key: key, Value: []byte("v1"), TTL: 2 * time.Minute}, Fence: e.Fence}
	if res := fill(t, s, first, ""); res != l2.Stored {
		t.Fatalf("first fill = %v; want stored", res)
	}
	if got := valueOf(t, c, key); got != "v1" {
		t.Errorf("value = %q; want v1", got)
	}
	if ttl := c.PTTL(t.Context(), key).Val(); ttl <= time.Minute || ttl > 2*time.Minute {
		t.Errorf("PTTL = %v; want the fill's, in (1m, 2m]", ttl)
	}
	second := l2.Fill{Item: item(key, "v2"), Fence: e.Fence}
	if res := fill(t, s, second, ""); res != l2.Taken {
		t.Errorf("second fill = %v; want taken", res)
	}
	if got := valueOf(t, c, key); got != "v1" {
		t.Errorf("value = %q after the second fill; want v1", got)
	}
}

// testFillReplace checks that a FillReplace fill stores over the value only
// if no write or delete of the key's slot moved its fence since the read.
func testFillReplace(t *testing.T, tp topology) {
	tests := []struct {
		name    string
		between func(ctx context.Context, s *l2.Store, key, sameSlot, otherSlot string) error
		want    l2.FillResult
	}{
		{name: "nothing happened", want: l2.Stored,
			between: func(context.Context, *l2.Store, string, string, string) error { return nil }},
		{name: "another fill", want: l2.Stored,
			between: func(ctx context.Context, s *l2.Store, key, _, _ string) error {
				e, err := s.Read(ctx, key, 1024, "")
				if err != nil {
					return err
				}
				return wantFill(ctx, s, l2.Fill{Item: item(key, "other fill"), Mode: l2.FillReplace, Fence: e.Fence}, l2.Stored)
			}},
		{name: "a write of the key", want: l2.Fenced,
			between: func(ctx context.Context, s *l2.Store, key, _, _ string) error {
				return s.SetAndPublish(ctx, item(key, "written"), "fr:inv", nil)
			}},
		{name: "a delete of the key", want: l2.Fenced,
			between: func(ctx context.Context, s *l2.Store, key, _, _ string) error {
				_, err := s.DeleteAndPublish(ctx, []string{key}, "fr:inv", nil)
				return err
			}},
		{name: "a write of another key of its slot", want: l2.Fenced,
			between: func(ctx context.Context, s *l2.Store, _, sameSlot, _ string) error {
				return s.SetAndPublish(ctx, item(sameSlot, "written"), "fr:inv", nil)
			}},
		{name: "a write of a key of another slot", want: l2.Stored,
			between: func(ctx context.Context, s *l2.Store, _, _, otherSlot string) error {
				return s.SetAndPublish(ctx, item(otherSlot, "written"), "fr:inv", nil)
			}},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, c, _ := tp.store(t, roomy())
			ctx := t.Context()
			tag := fmt.Sprintf("fr%d", i)
			key, sameSlot, otherSlot := "{"+tag+"}:k", "{"+tag+"}:same", "{"+tag+"x}:other"
			if s.FenceKey(key) == s.FenceKey(otherSlot) {
				t.Fatalf("%s and %s share a slot; the test needs two", key, otherSlot)
			}
			if err := s.SetAndPublish(ctx, item(key, "old"), "fr:inv", nil); err != nil {
				t.Fatal(err)
			}
			e := read(t, s, key, "")
			if string(e.Value) != "old" {
				t.Fatalf("Read = %q; want old", e.Value)
			}
			if err := tt.between(ctx, s, key, sameSlot, otherSlot); err != nil {
				t.Fatal(err)
			}
			want := valueOf(t, c, key)
			if tt.want == l2.Stored {
				want = "loaded"
			}
			if res := fill(t, s, l2.Fill{Item: item(key, "loaded"), Mode: l2.FillReplace, Fence: e.Fence}, ""); res != tt.want {
				t.Errorf("Fill = %v; want %v", res, tt.want)
			}
			if got := valueOf(t, c, key); got != want {
				t.Errorf("value = %q; want %q", got, want)
			}
		})
	}
}

// testFillLease checks FillLease: it replaces the fill's own lease (or
// drops it with TTL 0) and publishes its message; a lease voided by a
// write, a delete, an expiry or another owner is Taken, changes nothing
// and publishes nothing. The fence plays no part.
func testFillLease(t *testing.T, tp topology) {
	tests := []struct {
		name      string
		between   func(ctx context.Context, s *l2.Store, c redis.UniversalClient, key string) error
		giveTTL   time.Duration
		want      l2.FillResult
		wantValue string // "" for absent
		wantMsg   bool
	}{
		{name: "own lease replaced", giveTTL: time.Minute, want: l2.Stored, wantValue: "v", wantMsg: true},
		{name: "TTL 0 drops the lease", giveTTL: 0, want: l2.Stored, wantValue: "", wantMsg: true},
		{name: "fence moved by a write of another key of its slot", giveTTL: time.Minute, want: l2.Stored, wantValue: "v", wantMsg: true,
			between: func(ctx context.Context, s *l2.Store, _ redis.UniversalClient, key string) error {
				return s.SetAndPublish(ctx, item(key+":same", "w"), "fl:other", nil)
			}},
		{name: "voided by a write", giveTTL: time.Minute, want: l2.Taken, wantValue: "w",
			between: func(ctx context.Context, s *l2.Store, _ redis.UniversalClient, key string) error {
				return s.SetAndPublish(ctx, item(key, "w"), "fl:other", nil)
			}},
		{name: "voided by a delete", giveTTL: time.Minute, want: l2.Taken, wantValue: "",
			between: func(ctx context.Context, s *l2.Store, _ redis.UniversalClient, key string) error {
				_, err := s.DeleteAndPublish(ctx, []string{key}, "fl:other", nil)
				return err
			}},
		{name: "drop voided by a write", giveTTL: 0, want: l2.Taken, wantValue: "w",
			between: func(ctx context.Context, s *l2.Store, _ redis.UniversalClient, key string) error {
				return s.SetAndPublish(ctx, item(key, "w"), "fl:other", nil)
			}},
		{name: "lease expired", giveTTL: time.Minute, want: l2.Taken, wantValue: "",
			between: func(ctx context.Context, _ *l2.Store, c redis.UniversalClient, key string) error {
				return c.Del(ctx, key).Err()
			}},
		{name: "lease expired and taken by another", giveTTL: time.Minute, want: l2.Taken, wantValue: "Lother",
			between: func(ctx context.Context, s *l2.Store, c redis.UniversalClient, key string) error {
				if err := c.Del(ctx, key).Err(); err != nil {
					return err
				}
				_, _, err := s.Acquire(ctx, key, []byte("Lother"), time.Minute)
				return err
			}},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, c, _ := tp.store(t, roomy())
			ctx := t.Context()
			key := fmt.Sprintf("{fl%d}:k", i)
			node := tp.node(key)
			// A channel of its own: a Cluster relays a message to the other
			// nodes later, maybe after the next case subscribed there.
			channel := fmt.Sprintf("fl:inv:%d", i)
			ps := subscribe(t, node, channel)
			if _, ok, err := s.Acquire(ctx, key, []byte("Lmine"), time.Minute); err != nil || !ok {
				t.Fatalf("Acquire = %v, %v; want acquired", ok, err)
			}
			if tt.between != nil {
				if err := tt.between(ctx, s, c, key); err != nil {
					t.Fatal(err)
				}
			}
			f := l2.Fill{Item: l2.Item{Key: key, Value: []byte("v"), TTL: tt.giveTTL}, Mode: l2.FillLease, Lease: []byte("Lmine"), Msg: []byte("filled")}
			if res := fill(t, s, f, channel); res != tt.want {
				t.Errorf("Fill = %v; want %v", res, tt.want)
			}
			if got := valueOf(t, c, key); got != tt.wantValue {
				t.Errorf("value = %q; want %q", got, tt.wantValue)
			}
			var want []string
			if tt.wantMsg {
				want = []string{"filled"}
			}
			expectMessages(t, ps, node.Client(t), channel, want...)
		})
	}
}

// testTaggedFill checks that a fill of a tagged value is refused when one
// of its tags got a version after the read (BumpTags), and stored, with
// the key added to its tag sets, when only other tags did.
func testTaggedFill(t *testing.T, tp topology) {
	tests := []struct {
		name     string
		mode     l2.FillMode
		tags     []string // the value's
		preBump  []string // tags bumped before the read
		postBump []string // tags bumped after the read
		want     l2.FillResult
	}{
		{name: "its tag bumped", tags: []string{"red"}, preBump: []string{"red"}, postBump: []string{"red"}, want: l2.TagFenced},
		{name: "one of its tags bumped", tags: []string{"red", "blue"}, preBump: []string{"red"}, postBump: []string{"blue"}, want: l2.TagFenced},
		{name: "another tag bumped", tags: []string{"blue"}, preBump: []string{"blue"}, postBump: []string{"red"}, want: l2.Stored},
		{name: "its tag bumped before the read only", tags: []string{"red"}, preBump: []string{"red"}, want: l2.Stored},
		{name: "first version after a read of an empty set", tags: []string{"red"}, postBump: []string{"red"}, want: l2.TagFenced},
		{name: "another tag's first version after a read of an empty set", tags: []string{"red"}, postBump: []string{"blue"}, want: l2.Stored},
		{name: "replace, its tag bumped", mode: l2.FillReplace, tags: []string{"red"}, preBump: []string{"red"}, postBump: []string{"red"}, want: l2.TagFenced},
		{name: "replace, another tag bumped", mode: l2.FillReplace, tags: []string{"red"}, preBump: []string{"red"}, postBump: []string{"blue"}, want: l2.Stored},
		{name: "lease, its tag bumped", mode: l2.FillLease, tags: []string{"red"}, preBump: []string{"red"}, postBump: []string{"red"}, want: l2.TagFenced},
		{name: "lease, another tag bumped", mode: l2.FillLease, tags: []string{"red"}, preBump: []string{"red"}, postBump: []string{"blue"}, want: l2.Stored},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, c, _ := tp.store(t, roomy())
			ctx := t.Context()
			key := fmt.Sprintf("tf%d:k", i)
			versions := fmt.Sprintf("tf%d:{tv}", i)
			before := "" // what the key holds before the fill
			switch tt.mode {
			case l2.FillReplace:
				before = "old"
				if err := c.Set(ctx, key, before, time.Minute).Err(); err != nil {
					t.Fatal(err)
				}
			case l2.FillLease:
				before = "Lmine"
				if _, ok, err := s.Acquire(ctx, key, []byte(before), time.Minute); err != nil || !ok {
					t.Fatalf("Acquire = %v, %v", ok, err)
				}
			}
			if len(tt.preBump) > 0 {
				if err := s.BumpTags(ctx, versions, tt.preBump, time.Hour, "inv", []byte("m")); err != nil {
					t.Fatal(err)
				}
			}
			e := read(t, s, key, versions)
			if len(tt.postBump) > 0 {
				if err := s.BumpTags(ctx, versions, tt.postBump, time.Hour, "inv", []byte("m")); err != nil {
					t.Fatal(err)
				}
			}
			tags := &l2.TagFill{Versions: versions, Names: tt.tags, Slack: time.Second}
			for _, name := range tt.tags {
				tags.Entries = append(tags.Entries, l2.TagEntry{Set: fmt.Sprintf("tf%d:{%s}", i, name), Member: key, TTL: time.Minute})
			}
			f := l2.Fill{Item: item(key, "v"), Mode: tt.mode, Fence: e.Fence, Lease: []byte("Lmine"), Tags: tags}
			if res := fill(t, s, f, ""); res != tt.want {
				t.Errorf("Fill = %v; want %v", res, tt.want)
			}
			want := before
			if tt.want == l2.Stored {
				want = "v"
			}
			if got := valueOf(t, c, key); got != want {
				t.Errorf("value = %q; want %q", got, want)
			}
			if tt.want != l2.Stored {
				return
			}
			for _, te := range tags.Entries {
				score, err := c.ZScore(ctx, te.Set, key).Result()
				if err != nil || score <= float64(serverMicros(t, c)/1000) {
					t.Errorf("ZSCORE %s %s = %v, %v; want the key, expiring in the future", te.Set, key, score, err)
				}
			}
		})
	}
}

// testTagTrimHorizon checks the trim of old tag versions: BumpTags drops
// versions older than keep, remembering the highest dropped one as the
// member "", and a fill whose read saw an epoch below it is refused
// whatever its tags (the version that would have refused it may be gone);
// a fill read after the trim is not. On a Cluster the check runs in its
// own script: both are covered.
func testTagTrimHorizon(t *testing.T, tp topology) {
	s, c, _ := tp.store(t, roomy())
	ctx := t.Context()
	versions := "th:{tv}"
	keys := tp.keys("th", 3)
	// Versions from long ago, as if given by old BumpTags calls: "a"
	// before the read, "b" after it.
	if err := c.ZAdd(ctx, versions, redis.Z{Score: 1000, Member: "a"}).Err(); err != nil {
		t.Fatal(err)
	}
	e := read(t, s, keys[0], versions)
	e1 := read(t, s, keys[1], versions)
	if err := c.ZAdd(ctx, versions, redis.Z{Score: 2000, Member: "b"}).Err(); err != nil {
		t.Fatal(err)
	}
	tagged := func(key string, fence l2.Fence, tags ...string) l2.Fill {
		tf := &l2.TagFill{Versions: versions, Names: tags}
		for _, name := range tags {
			tf.Entries = append(tf.Entries, l2.TagEntry{Set: "th:{" + name + "}", Member: key, TTL: time.Minute})
		}
		return l2.Fill{Item: item(key, "v"), Fence: fence, Tags: tf}
	}
	// Before the trim, "b" refuses its own fills only.
	if res := fill(t, s, tagged(keys[0], e.Fence, "b"), ""); res != l2.TagFenced {
		t.Errorf("before the trim: fill tagged b = %v; want tag fenced", res)
	}
	if res := fill(t, s, tagged(keys[1], e1.Fence, "d"), ""); res != l2.Stored {
		t.Errorf("before the trim: fill tagged d = %v; want stored", res)
	}

	if err := s.BumpTags(ctx, versions, []string{"c"}, time.Hour, "inv", []byte("m")); err != nil {
		t.Fatal(err)
	}
	members, err := c.ZRangeWithScores(ctx, versions, 0, -1).Result()
	if err != nil {
		t.Fatal(err)
	}
	if len(members) != 2 || members[0] != (redis.Z{Score: 2000, Member: ""}) || members[1].Member != "c" {
		t.Fatalf("versions after the trim = %v; want \"\" at 2000 (the highest dropped) and c", members)
	}
	for _, tags := range [][]string{{"b"}, {"d"}, {"c"}} {
		if res := fill(t, s, tagged(keys[0], e.Fence, tags...), ""); res != l2.TagFenced {
			t.Errorf("after the trim: fill tagged %v read before it = %v; want tag fenced", tags, res)
		}
	}
	if got := valueOf(t, c, keys[0]); got != "" {
		t.Errorf("%s = %q; want absent", keys[0], got)
	}
	e2 := read(t, s, keys[2], versions)
	if res := fill(t, s, tagged(keys[2], e2.Fence, "b"), ""); res != l2.Stored {
		t.Errorf("fill tagged b read after the trim = %v; want stored", res)
	}

	// The horizon never goes down.
	if err := c.ZAdd(ctx, versions, redis.Z{Score: 1500, Member: "z"}).Err(); err != nil {
		t.Fatal(err)
	}
	if err := s.BumpTags(ctx, versions, []string{"c"}, time.Hour, "inv", []byte("m")); err != nil {
		t.Fatal(err)
	}
	if h, err := c.ZScore(ctx, versions, "").Result(); err != nil || h != 2000 {
		t.Errorf("horizon after trimming an older version = %v, %v; want 2000", h, err)
	}
}

// testBumpTags checks the versions BumpTags gives: the server's time in
// microseconds, or one above the set's highest version when that is
// higher; all tags of one call get the same; the set never expires.
func testBumpTags(t *testing.T, tp topology) {
	s, c, _ := tp.store(t, roomy())
	ctx := t.Context()
	versions := "bt:{tv}"
	node := tp.node(versions).Client(t)
	t0 := serverMicros(t, node)
	if err := s.BumpTags(ctx, versions, []string{"a", "b"}, time.Hour, "inv", []byte("m")); err != nil {
		t.Fatal(err)
	}
	t1 := serverMicros(t, node)
	a, b := c.ZScore(ctx, versions, "a").Val(), c.ZScore(ctx, versions, "b").Val()
	if a != b || a < float64(t0) || a > float64(t1) {
		t.Errorf("versions a, b = %.0f, %.0f; want one version, the server's time in µs, in [%d, %d]", a, b, t0, t1)
	}
	if ttl := c.PTTL(ctx, versions).Val(); ttl != -1 {
		t.Errorf("PTTL of the version set = %v; want none", ttl)
	}
	// A version ahead of the clock (another server's, or a clock that went
	// back): the next one is above it all the same.
	far := float64(t1 + 1e12)
	if err := c.ZAdd(ctx, versions, redis.Z{Score: far, Member: "future"}).Err(); err != nil {
		t.Fatal(err)
	}
	if err := s.BumpTags(ctx, versions, []string{"a"}, time.Hour, "inv", []byte("m")); err != nil {
		t.Fatal(err)
	}
	if got := c.ZScore(ctx, versions, "a").Val(); got != far+1 {
		t.Errorf("version of a = %.0f; want %.0f, one above the highest", got, far+1)
	}
}

// testFenceReset checks that a fence that someone else deleted or
// overwrote (with something INCR refuses or that INCR makes 1) is set to
// the server's time in microseconds by the next write, so that it still
// moves: a fill read before is refused, then and after.
func testFenceReset(t *testing.T, tp topology) {
	tests := []struct {
		name     string
		sabotage func(ctx context.Context, c *redis.Client, fence string) error
	}{
		{name: "deleted", sabotage: func(ctx context.Context, c *redis.Client, fence string) error {
			return c.Del(ctx, fence).Err()
		}},
		{name: "not a number", sabotage: func(ctx context.Context, c *redis.Client, fence string) error {
			return c.Set(ctx, fence, "zz", 0).Err()
		}},
		{name: "a float", sabotage: func(ctx context.Context, c *redis.Client, fence string) error {
			return c.Set(ctx, fence, "1.5", 0).Err()
		}},
		{name: "zero", sabotage: func(ctx context.Context, c *redis.Client, fence string) error {
			return c.Set(ctx, fence, "0", 0).Err()
		}},
		{name: "at the top of int64", sabotage: func(ctx context.Context, c *redis.Client, fence string) error {
			return c.Set(ctx, fence, "9223372036854775807", 0).Err()
		}},
		{name: "another type", sabotage: func(ctx context.Context, c *redis.Client, fence string) error {
			if err := c.Del(ctx, fence).Err(); err != nil {
				return err
			}
			return c.RPush(ctx, fence, "x").Err()
		}},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, c, _ := tp.store(t, roomy())
			ctx := t.Context()
			key := tp.keys(fmt.Sprintf("rs%d", i), 1)[0]
			node := tp.node(key).Client(t)
			if err := s.SetAndPublish(ctx, item(key, "w0"), "rs:inv", nil); err != nil {
				t.Fatal(err)
			}
			e := read(t, s, key, "")
			t0 := serverMicros(t, node)
			if err := tt.sabotage(ctx, node, s.FenceKey(key)); err != nil {
				t.Fatal(err)
			}
			if err := s.SetAndPublish(ctx, item(key, "w1"), "rs:inv", nil); err != nil {
				t.Fatalf("write after the sabotage = %v", err)
			}
			t1 := serverMicros(t, node)
			n, err := strconv.ParseInt(fenceOf(t, c, s, key), 10, 64)
			if err != nil || n < t0 || n > t1 {
				t.Fatalf("fence after the write = %d, %v; want the server's time in µs, in [%d, %d]", n, err, t0, t1)
			}
			if res := fill(t, s, l2.Fill{Item: item(key, "stale"), Mode: l2.FillReplace, Fence: e.Fence}, ""); res != l2.Fenced {
				t.Errorf("fill read before = %v; want fenced", res)
			}
			// Reset, it moves as before.
			e = read(t, s, key, "")
			if err := s.SetAndPublish(ctx, item(key, "w2"), "rs:inv", nil); err != nil {
				t.Fatal(err)
			}
			if got := fenceOf(t, c, s, key); got != strconv.FormatInt(n+1, 10) {
				t.Errorf("fence after the next write = %s; want %d", got, n+1)
			}
			if res := fill(t, s, l2.Fill{Item: item(key, "stale"), Mode: l2.FillReplace, Fence: e.Fence}, ""); res != l2.Fenced {
				t.Errorf("fill read before the next write = %v; want fenced", res)
			}
			if got := valueOf(t, c, key); got != "w2" {
				t.Errorf("value = %q; want w2", got)
			}
		})
	}
}

// testRead checks what Read returns for each state of a key, in one round
// trip, with the tag epoch's ZRANGE in the same one when asked.
func testRead(t *testing.T, tp topology) {
	const limit = 16
	tests := []struct {
		name      string
		giveValue []byte
		giveTTL   time.Duration // 0: no expiry; -1: no key
		wantValue []byte
		wantLarge bool
		wantTTL   string // "none", "-1" or "ttl" (in [PTTL after, giveTTL])
	}{
		{name: "absent", giveTTL: -1, wantTTL: "none"},
		{name: "value with a TTL", giveValue: []byte("v"), giveTTL: time.Minute, wantValue: []byte("v"), wantTTL: "ttl"},
		{name: "value without expiry", giveValue: []byte("v"), giveTTL: 0, wantValue: []byte("v"), wantTTL: "-1"},
		{name: "binary value", giveValue: []byte{0, '\r', '\n', 0xff}, giveTTL: time.Minute, wantValue: []byte{0, '\r', '\n', 0xff}, wantTTL: "ttl"},
		{name: "value of the limit's length", giveValue: bytes.Repeat([]byte("x"), limit), giveTTL: time.Minute,
			wantValue: bytes.Repeat([]byte("x"), limit), wantTTL: "ttl"},
		{name: "value one byte over the limit", giveValue: bytes.Repeat([]byte("x"), limit+1), giveTTL: time.Minute,
			wantLarge: true, wantTTL: "ttl"},
		{name: "large value without expiry", giveValue: bytes.Repeat([]byte("x"), 10*limit), giveTTL: 0, wantLarge: true, wantTTL: "-1"},
		{name: "empty value is a miss", giveValue: []byte{}, giveTTL: time.Minute, wantTTL: "none"},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, c, rec := tp.store(t, roomy())
			ctx := t.Context()
			key := fmt.Sprintf("rd%d", i)
			if tt.giveTTL >= 0 {
				if err := c.Set(ctx, key, tt.giveValue, tt.giveTTL).Err(); err != nil {
					t.Fatal(err)
				}
			}
			for _, versions := range []string{"", "rd:{tv}"} {
				rec.reset()
				e, err := s.Read(ctx, key, limit, versions)
				if err != nil {
					t.Fatalf("Read = %v", err)
				}
				trips := rec.names()
				after := c.PTTL(ctx, key).Val()
				want := [][]string{{"getrange", "pttl", "get"}}
				if versions != "" {
					want[0] = append(want[0], "zrange")
				}
				if !reflect.DeepEqual(trips, want) {
					t.Errorf("round trips = %v; want %v", trips, want)
				}
				if !sameBytes(e.Value, tt.wantValue) || e.TooLarge != tt.wantLarge {
					t.Errorf("Read = %q (nil %t), TooLarge %t; want %q (nil %t), %t", e.Value, e.Value == nil, e.TooLarge, tt.wantValue, tt.wantValue == nil, tt.wantLarge)
				}
				if e.Present() != (tt.wantValue != nil || tt.wantLarge) {
					t.Errorf("Present = %t", e.Present())
				}
				switch tt.wantTTL {
				case "none":
					if e.TTL != 0 {
						t.Errorf("TTL = %v; want 0", e.TTL)
					}
				case "-1":
					if e.TTL != -1 {
						t.Errorf("TTL = %v; want -1", e.TTL)
					}
				default:
					// Read takes a millisecond off PTTL: Redis's truncated
					// clock may add one to the key's real life.
					if e.TTL < after-time.Millisecond || e.TTL > tt.giveTTL-time.Millisecond {
						t.Errorf("TTL = %v; want in [%v, %v] (PTTL after and TTL given, less a millisecond)", e.TTL, after-time.Millisecond, tt.giveTTL-time.Millisecond)
					}
				}
			}
		})
	}
}

// testReadMany checks that ReadMany returns one entry per key, in order,
// from one pipeline, with the fence each fill needs.
func testReadMany(t *testing.T, tp topology) {
	s, c, rec := tp.store(t, roomy())
	ctx := t.Context()
	keys := []string{"rm:absent", "rm:a", "rm:large", "rm:b"}
	for k, v := range map[string]string{"rm:a": "a", "rm:large": "0123456789", "rm:b": "b"} {
		if err := c.Set(ctx, k, v, time.Minute).Err(); err != nil {
			t.Fatal(err)
		}
	}
	rec.reset()
	if es, err := s.ReadMany(ctx, nil, 8, ""); err != nil || es != nil {
		t.Fatalf("ReadMany(nil) = %v, %v; want nil, nil", es, err)
	}
	es, err := s.ReadMany(ctx, keys, 8, "rm:{tv}")
	if err != nil {
		t.Fatalf("ReadMany = %v", err)
	}
	want := [][]string{{"getrange", "pttl", "get", "getrange", "pttl", "get", "getrange", "pttl", "get", "getrange", "pttl", "get", "zrange"}}
	if got := rec.names(); !reflect.DeepEqual(got, want) {
		t.Errorf("round trips = %v; want %v", got, want)
	}
	type entry struct {
		value   string
		present bool
		large   bool
	}
	var got []entry
	for _, e := range es {
		got = append(got, entry{string(e.Value), e.Present(), e.TooLarge})
	}
	if want := []entry{{"", false, false}, {"a", true, false}, {"", true, true}, {"b", true, false}}; !reflect.DeepEqual(got, want) {
		t.Errorf("ReadMany = %+v; want %+v", got, want)
	}
	// Each entry's fence is its key's: a write of one key refuses its fill
	// only.
	if err := s.SetAndPublish(ctx, item("rm:a", "w"), "rm:inv", nil); err != nil {
		t.Fatal(err)
	}
	fills := make([]l2.Fill, len(keys))
	for i, k := range keys {
		fills[i] = l2.Fill{Item: item(k, "loaded"), Mode: l2.FillReplace, Fence: es[i].Fence}
	}
	res, err := s.Fill(ctx, fills, "")
	if err != nil {
		t.Fatalf("Fill = %v", err)
	}
	if want := []l2.FillResult{l2.Stored, l2.Fenced, l2.Stored, l2.Stored}; !reflect.DeepEqual(res, want) {
		t.Errorf("Fill = %v; want %v", res, want)
	}
}

// testFillOnNodesMissingTheScript fills keys of two Cluster nodes at once,
// one of which has the fill script and one of which does not (NOSCRIPT):
// each fill runs once, so each reports what it did.
func testFillOnNodesMissingTheScript(t *testing.T, tp topology) {
	s, c, _ := tp.store(t, roomy())
	ctx := t.Context()
	onNode := func(i int, skip string) string {
		for j := range 1000 {
			if k := fmt.Sprintf("ns%d", j); k != skip && tp.cl.NodeFor(k) == tp.cl.Nodes[i] {
				return k
			}
		}
		t.Fatalf("no key on node %d", i)
		return ""
	}
	first := onNode(0, "")
	keys := []string{onNode(0, first), onNode(1, "")}
	for _, n := range tp.cl.Nodes {
		if err := n.Client(t).ScriptFlush(ctx).Err(); err != nil {
			t.Fatal(err)
		}
	}
	// The first node gets the script.
	e := read(t, s, first, "")
	if res := fill(t, s, l2.Fill{Item: item(first, "v"), Fence: e.Fence}, ""); res != l2.Stored {
		t.Fatalf("Fill(%s) = %v; want stored", first, res)
	}
	es, err := s.ReadMany(ctx, keys, 1024, "")
	if err != nil {
		t.Fatal(err)
	}
	fills := []l2.Fill{{Item: item(keys[0], "v"), Fence: es[0].Fence}, {Item: item(keys[1], "v"), Fence: es[1].Fence}}
	res, err := s.Fill(ctx, fills, "")
	if err != nil {
		t.Fatalf("Fill = %v", err)
	}
	if want := []l2.FillResult{l2.Stored, l2.Stored}; !reflect.DeepEqual(res, want) {
		t.Errorf("Fill(%q) = %v; want %v", keys, res, want)
	}
	for _, k := range keys {
		if got := valueOf(t, c, k); got != "v" {
			t.Errorf("%s = %q; want v", k, got)
		}
	}
}

// countingConn counts the bytes read from a connection.
type countingConn struct {
	net.Conn
	n *atomic.Int64
}

func (c countingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.n.Add(int64(n))
	return n, err
}

// byteCounter is a go-redis hook that counts the bytes its client reads
// from the network.
type byteCounter struct{ n atomic.Int64 }

func (b *byteCounter) DialHook(next redis.DialHook) redis.DialHook {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := next(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return countingConn{Conn: c, n: &b.n}, nil
	}
}

func (b *byteCounter) ProcessHook(next redis.ProcessHook) redis.ProcessHook { return next }

func (b *byteCounter) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

// TestReadTooLargeIsNotTransferred reads a 4 MiB value with a limit of
// 1 KiB: Read reports it TooLarge, with its TTL, and fewer than 2 KiB
// come over the network, where a Get of it reads all 4 MiB.
func TestReadTooLargeIsNotTransferred(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	opts := srv.Options()
	opts.ContextTimeoutEnabled = true
	c := redis.NewClient(opts)
	t.Cleanup(func() { c.Close() })
	var counter byteCounter
	c.AddHook(&counter)
	s := newStore(t, c, roomy())
	ctx := t.Context()
	const size = 4 << 20
	if err := c.Set(ctx, "big", bytes.Repeat([]byte{0xab}, size), time.Minute).Err(); err != nil {
		t.Fatal(err)
	}

	counter.n.Store(0)
	e, err := s.Read(ctx, "big", 1024, "")
	if err != nil {
		t.Fatalf("Read = %v", err)
	}
	got := counter.n.Load()
	if !e.TooLarge || e.Value != nil || !e.Present() || e.TTL <= 0 || e.TTL > time.Minute {
		t.Errorf("Read = TooLarge %t, %d bytes (nil %t), TTL %v; want TooLarge, nil, TTL in (0, 1m]", e.TooLarge, len(e.Value), e.Value == nil, e.TTL)
	}
	if got >= 2048 {
		t.Errorf("Read of a 4 MiB value with limit 1 KiB read %d bytes off the network; want < 2048", got)
	}

	counter.n.Store(0)
	if v, err := s.Get(ctx, "big"); err != nil || len(v) != size {
		t.Fatalf("Get = %d bytes, %v", len(v), err)
	}
	if got := counter.n.Load(); got < size {
		t.Errorf("Get read %d bytes; want at least %d (the counter counts)", got, size)
	}
}

// TestAcquireForeignLease checks which values Acquire replaces: a lease
// (same first byte as the new one) that never expires or outlives the new
// lease's TTL was not left by a replica of this configuration, and counts
// as expired; any other lease, and any value, is returned with its TTL.
func TestAcquireForeignLease(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	c, _ := newClient(t, srv)
	s := newStore(t, c, roomy())
	ctx := t.Context()

	tests := []struct {
		name         string
		giveValue    string
		giveTTL      time.Duration // 0: no expiry
		wantAcquired bool
		wantTTL      string // "-1", or "given" for (0, giveTTL]
	}{
		{name: "ForeignLease without TTL is replaced", giveValue: "Lforeign", wantAcquired: true},
		{name: "ForeignLease outliving the new lease is replaced", giveValue: "Lforeign", giveTTL: 10 * time.Minute, wantAcquired: true},
		{name: "lease within the new lease's TTL is kept", giveValue: "Lother", giveTTL: 30 * time.Second, wantTTL: "given"},
		{name: "value without TTL is kept", giveValue: "value", wantTTL: "-1"},
		{name: "value outliving the new lease is kept", giveValue: "value", giveTTL: 10 * time.Minute, wantTTL: "given"},
		{name: "empty value is kept", giveValue: "", wantTTL: "-1"},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			key := fmt.Sprintf("fl:%d", i)
			if err := c.Set(ctx, key, tt.giveValue, tt.giveTTL).Err(); err != nil {
				t.Fatal(err)
			}
			cur, acquired, err := s.Acquire(ctx, key, []byte("Lmine"), time.Minute)
			if err != nil || acquired != tt.wantAcquired {
				t.Fatalf("Acquire = %q, %t, %v; want acquired %t", cur.Value, acquired, err, tt.wantAcquired)
			}
			if tt.wantAcquired {
				if cur.Present() {
					t.Errorf("Acquire returned %q; want nothing when it acquired", cur.Value)
				}
				if got, ttl := valueOf(t, c, key), c.PTTL(ctx, key).Val(); got != "Lmine" || ttl <= 0 || ttl > time.Minute {
					t.Errorf("key = %q, PTTL %v; want the new lease, for at most its TTL", got, ttl)
				}
				return
			}
			if string(cur.Value) != tt.giveValue || cur.Value == nil {
				t.Errorf("Acquire returned %q (nil %t); want %q", cur.Value, cur.Value == nil, tt.giveValue)
			}
			switch tt.wantTTL {
			case "-1":
				if cur.TTL != -1 {
					t.Errorf("TTL = %v; want -1", cur.TTL)
				}
			default:
				if cur.TTL <= 0 || cur.TTL > tt.giveTTL {
					t.Errorf("TTL = %v; want in (0, %v]", cur.TTL, tt.giveTTL)
				}
			}
			if got := valueOf(t, c, key); got != tt.giveValue {
				t.Errorf("key = %q; want %q, untouched", got, tt.giveValue)
			}
		})
	}
}

// TestDropUnreadable checks that DropUnreadable deletes the key only when
// it still holds the value it names (or, with a length, a longer one),
// publishes only then, and never moves the fence.
func TestDropUnreadable(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	c, _ := newClient(t, srv)
	s := newStore(t, c, roomy())
	ctx := t.Context()
	ps := subscribe(t, srv, "du:inv")
	pub := srv.Client(t)

	tests := []struct {
		name       string
		holds      string // "" for absent
		give       string
		longerThan int
		want       bool
	}{
		{name: "the value named", holds: "bad\x00", give: "bad\x00", want: true},
		{name: "another value", holds: "good", give: "bad"},
		{name: "a prefix of the value", holds: "bad-and-more", give: "bad"},
		{name: "absent", give: "bad"},
		{name: "longer than the length", holds: "0123456789", longerThan: 9, want: true},
		{name: "as long as the length", holds: "0123456789", longerThan: 10},
		{name: "absent, with a length", longerThan: 1},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			key := fmt.Sprintf("du:%d", i)
			if err := s.SetAndPublish(ctx, item(key, tt.holds), "du:other", nil); err != nil {
				t.Fatal(err)
			}
			if tt.holds == "" {
				if err := c.Del(ctx, key).Err(); err != nil {
					t.Fatal(err)
				}
			}
			fence := fenceOf(t, c, s, key)
			dropped, err := s.DropUnreadable(ctx, key, []byte(tt.give), tt.longerThan, "du:inv", []byte("dropped"))
			if err != nil || dropped != tt.want {
				t.Fatalf("DropUnreadable = %t, %v; want %t", dropped, err, tt.want)
			}
			want := tt.holds
			var msgs []string
			if tt.want {
				want, msgs = "", []string{"dropped"}
			}
			if got := valueOf(t, c, key); got != want {
				t.Errorf("key = %q; want %q", got, want)
			}
			if got := fenceOf(t, c, s, key); got != fence {
				t.Errorf("fence = %q; want %q, unmoved", got, fence)
			}
			expectMessages(t, ps, pub, "du:inv", msgs...)
		})
	}
}

// TestFenceKey checks that a fence shares its key's hash slot (so that a
// Cluster runs a script over both), that the 16384 slots have 16384
// fences, and that the fences carry the prefix given.
func TestFenceKey(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	cc := redis.NewClusterClient(&redis.ClusterOptions{Addrs: []string{srv.Addr}}) // never reached
	t.Cleanup(func() { cc.Close() })
	s := newStore(t, cc, l2.Options{})
	fences := map[string]bool{}
	slots := map[int]bool{}
	for i := 0; len(slots) < 16384 && i < 1_000_000; i++ {
		key := "k" + strconv.Itoa(i)
		f := s.FenceKey(key)
		if got, want := l2.Slot(cc, f), l2.Slot(cc, key); got != want {
			t.Fatalf("FenceKey(%q) = %q in slot %d; want slot %d", key, f, got, want)
		}
		slots[l2.Slot(cc, key)] = true
		fences[f] = true
	}
	if len(slots) != 16384 || len(fences) != 16384 {
		t.Errorf("%d slots have %d fences; want 16384 of each", len(slots), len(fences))
	}
	if f := s.FenceKey("k"); !strings.HasPrefix(f, l2.DefaultFencePrefix+"{") {
		t.Errorf("FenceKey = %q; want the default prefix %q", f, l2.DefaultFencePrefix)
	}
	p := newStore(t, cc, l2.Options{FencePrefix: "app:f"})
	if f := p.FenceKey("k"); f != "app:f"+strings.TrimPrefix(s.FenceKey("k"), l2.DefaultFencePrefix) {
		t.Errorf("FenceKey with prefix app:f = %q", f)
	}
}
