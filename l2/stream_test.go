package l2_test

import (
	"context"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tiercache/tiercache/internal/redistest"
	"github.com/tiercache/tiercache/l2"
)

// newStream returns the Stream of key for the group "g".
func newStream(t *testing.T, key string) *l2.Stream {
	t.Helper()
	st, err := l2.NewStream(key, "g")
	if err != nil {
		t.Fatalf("NewStream(%q) = %v", key, err)
	}
	return st
}

// ids returns the ids of recs.
func ids(recs []l2.Record) []string {
	out := make([]string, len(recs))
	for i, r := range recs {
		out[i] = r.ID
	}
	return out
}

// record records k=v on st and returns the record as a read returns it
// the first time.
func record(t *testing.T, s *l2.Store, st *l2.Stream, k, v string) l2.Record {
	t.Helper()
	id, err := s.Record(t.Context(), st, k, []byte(v))
	if err != nil {
		t.Fatalf("Record(%q) = %v", k, err)
	}
	return l2.Record{ID: id, Key: k, Value: []byte(v), Deliveries: 1}
}

func TestWriteBehindNewStream(t *testing.T) {
	t.Parallel()
	tests := []struct {
		give, group string
		wantErr     bool
	}{
		{give: "ns:wb:{ks}", group: "g"},
		{give: "{a}b", group: "g"},
		{give: "ns:wb:{ks}", group: "", wantErr: true},
		{give: "ns:wb:ks", group: "g", wantErr: true},
		{give: "ns:wb:{}ks", group: "g", wantErr: true},
		{give: "ns:wb:{ks", group: "g", wantErr: true},
		{give: "", group: "g", wantErr: true},
	}
	for _, tt := range tests {
		st, err := l2.NewStream(tt.give, tt.group)
		if got := err != nil; got != tt.wantErr {
			t.Errorf("NewStream(%q, %q) = %v; want error %t", tt.give, tt.group, err, tt.wantErr)
			continue
		}
		if err != nil {
			if !errors.Is(err, l2.ErrInvalid) {
				t.Errorf("NewStream(%q, %q) = %v; want l2.ErrInvalid", tt.give, tt.group, err)
			}
			continue
		}
		if got, want := []string{st.Key(), st.Last(), st.Dead(), st.Marker("k")},
			[]string{tt.give, tt.give + ":last", tt.give + ":dead", tt.give + ":flight:k"}; !reflect.DeepEqual(got, want) {
			t.Errorf("keys = %q; want %q", got, want)
		}
	}
}

func TestWriteBehindCompareIDs(t *testing.T) {
	t.Parallel()
	tests := []struct {
		a, b string
		want int
	}{
		{"1-0", "1-0", 0},
		{"1-0", "1-1", -1},
		{"2-0", "10-0", -1}, // numbers, not strings
		{"10-5", "9-99", 1},
		{"1700000000000-3", "1700000000000-12", -1},
		{"0-0", "1-0", -1},
	}
	for _, tt := range tests {
		if got := l2.CompareIDs(tt.a, tt.b); got != tt.want {
			t.Errorf("CompareIDs(%q, %q) = %d; want %d", tt.a, tt.b, got, tt.want)
		}
	}
}

// RecordAndSet publishes, records and stores in one round trip, atomically.
func TestWriteBehindRecordAndSet(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	c, rec := newClient(t, srv)
	s := newStore(t, c, roomy())
	st := newStream(t, "ns:wb:{ks}")
	ps := subscribe(t, srv, "ns:inv")
	ctx := t.Context()
	it := l2.Item{Key: "ns:ks:k", Value: []byte{0x20, 1, 0, 2}, TTL: time.Minute}
	// Load the script first, so the call below is one round trip.
	if _, err := s.RecordAndSet(ctx, st, "warm", l2.Item{Key: "ns:ks:warm", Value: []byte("w"), TTL: time.Minute}, "ns:inv", []byte("warm")); err != nil {
		t.Fatal(err)
	}
	receive(t, ps)
	rec.reset()

	id, err := s.RecordAndSet(ctx, st, "k", it, "ns:inv", []byte("m"))
	if err != nil {
		t.Fatalf("RecordAndSet = %v", err)
	}
	if got, want := rec.names(), [][]string{{"evalsha"}}; !reflect.DeepEqual(got, want) {
		t.Errorf("round trips = %v; want %v", got, want)
	}
	if got := receive(t, ps); string(got) != "m" {
		t.Errorf("message = %q; want %q", got, "m")
	}
	if v, err := c.Get(ctx, it.Key).Bytes(); err != nil || string(v) != string(it.Value) {
		t.Errorf("GET = %q, %v; want %q", v, err, it.Value)
	}
	if ttl := c.PTTL(ctx, it.Key).Val(); ttl <= 0 || ttl > time.Minute {
		t.Errorf("PTTL = %v; want (0, 1m]", ttl)
	}
	msgs, err := c.XRange(ctx, st.Key(), id, id).Result()
	if err != nil || len(msgs) != 1 {
		t.Fatalf("XRANGE %s = %v, %v; want the record", id, msgs, err)
	}
	if got, want := msgs[0].Values, map[string]any{"key": "k", "value": string(it.Value)}; !reflect.DeepEqual(got, want) {
		t.Errorf("record fields = %v; want %v", got, want)
	}
	if got := c.HGet(ctx, st.Last(), "k").Val(); got != id {
		t.Errorf("last id of k = %q; want %q", got, id)
	}
}

// Scripts over keys of several slots are refused before any round trip;
// Record, whose keys share the stream's hash tag, is not.
func TestWriteBehindRecordAndSetCluster(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	cc := redis.NewClusterClient(&redis.ClusterOptions{Addrs: []string{srv.Addr}})
	t.Cleanup(func() { cc.Close() })
	rec := new(recorder)
	cc.AddHook(rec)
	s := newStore(t, cc, roomy())
	st := newStream(t, "ns:wb:{ks}")
	it := l2.Item{Key: "ns:ks:k", Value: []byte("v"), TTL: time.Minute}
	_, err := s.RecordAndSet(t.Context(), st, "k", it, "ns:inv", nil)
	if !errors.Is(err, l2.ErrInvalid) || !strings.Contains(err.Error(), "hash slots") {
		t.Fatalf("RecordAndSet = %v; want l2.ErrInvalid naming the hash slots", err)
	}
	if got := len(rec.names()); got != 0 {
		t.Errorf("round trips = %d; want 0", got)
	}
}

// Records flow: read once by one consumer, prepared (the stale skipped, a
// key another consumer writes waiting), acknowledged and deleted with
// their bookkeeping.
func TestWriteBehindStreamReadPrepareAck(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	c, _ := newClient(t, srv)
	s := newStore(t, c, roomy())
	st := newStream(t, "ns:wb:{flow}")
	ctx := t.Context()
	for range 2 { // the second finds the group: not an error
		if err := s.CreateGroup(ctx, st); err != nil {
			t.Fatalf("CreateGroup = %v", err)
		}
	}
	a1 := record(t, s, st, "a", "1")
	b1 := record(t, s, st, "b", "1")
	a2 := record(t, s, st, "a", "2")

	got, err := s.ReadGroup(ctx, st, "c1", ">", 10)
	if err != nil {
		t.Fatalf("ReadGroup = %v", err)
	}
	if want := []l2.Record{a1, b1, a2}; !reflect.DeepEqual(got, want) {
		t.Fatalf("ReadGroup = %+v; want %+v", got, want)
	}
	if got, err := s.ReadGroup(ctx, st, "c2", ">", 10); err != nil || len(got) != 0 {
		t.Errorf("ReadGroup by c2 = %+v, %v; want nothing: each record goes to one consumer", got, err)
	}

	turns, err := s.Prepare(ctx, st, "c1", time.Minute, []l2.Record{a1, b1, a2})
	if err != nil {
		t.Fatalf("Prepare = %v", err)
	}
	if want := []l2.Turn{l2.TurnSkip, l2.TurnWrite, l2.TurnWrite}; !reflect.DeepEqual(turns, want) {
		t.Errorf("Prepare = %v; want %v (a1 superseded by a2)", turns, want)
	}
	if got := c.Get(ctx, st.Marker("a")).Val(); got != "c1" {
		t.Errorf("marker of a = %q; want c1", got)
	}
	if ttl := c.PTTL(ctx, st.Marker("a")).Val(); ttl <= 0 || ttl > time.Minute {
		t.Errorf("marker PTTL = %v; want (0, 1m]", ttl)
	}
	if turns, err := s.Prepare(ctx, st, "c2", time.Minute, []l2.Record{a2}); err != nil || turns[0] != l2.TurnWait {
		t.Errorf("Prepare by c2 = %v, %v; want TurnWait: c1 holds the marker", turns, err)
	}
	if turns, err := s.Prepare(ctx, st, "c1", time.Minute, []l2.Record{a2}); err != nil || turns[0] != l2.TurnWrite {
		t.Errorf("Prepare by c1 again = %v, %v; want TurnWrite", turns, err)
	}

	n, err := s.Ack(ctx, st, "c1", []l2.Record{a1, b1, a2})
	if err != nil || n != 3 {
		t.Fatalf("Ack = %d, %v; want 3", n, err)
	}
	if got := c.XLen(ctx, st.Key()).Val(); got != 0 {
		t.Errorf("XLEN = %d; want 0: acknowledged records are deleted", got)
	}
	if p := c.XPending(ctx, st.Key(), "g").Val(); p.Count != 0 {
		t.Errorf("XPENDING = %d; want 0", p.Count)
	}
	if got := c.HLen(ctx, st.Last()).Val(); got != 0 {
		t.Errorf("HLEN last = %d; want 0", got)
	}
	if got := c.Exists(ctx, st.Marker("a"), st.Marker("b")).Val(); got != 0 {
		t.Errorf("markers left = %d; want 0", got)
	}
	if turns, err := s.Prepare(ctx, st, "c1", time.Minute, []l2.Record{b1}); err != nil || turns[0] != l2.TurnSkip {
		t.Errorf("Prepare of an acknowledged record = %v, %v; want TurnSkip", turns, err)
	}
}

// Ack keeps the latest id of a key whose later record is still pending,
// and the marker of another consumer.
func TestWriteBehindStreamAckKeepsNewer(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	c, _ := newClient(t, srv)
	s := newStore(t, c, roomy())
	st := newStream(t, "ns:wb:{keep}")
	ctx := t.Context()
	if err := s.CreateGroup(ctx, st); err != nil {
		t.Fatal(err)
	}
	a1 := record(t, s, st, "a", "1")
	a2 := record(t, s, st, "a", "2")
	if _, err := s.ReadGroup(ctx, st, "c1", ">", 10); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Prepare(ctx, st, "c2", time.Minute, []l2.Record{a2}); err != nil {
		t.Fatal(err)
	}
	if n, err := s.Ack(ctx, st, "c1", []l2.Record{a1}); err != nil || n != 1 {
		t.Fatalf("Ack = %d, %v; want 1", n, err)
	}
	if got := c.HGet(ctx, st.Last(), "a").Val(); got != a2.ID {
		t.Errorf("last id of a = %q; want %q", got, a2.ID)
	}
	if got := c.Get(ctx, st.Marker("a")).Val(); got != "c2" {
		t.Errorf("marker of a = %q; want c2's, untouched", got)
	}
	if err := s.ReleaseMarkers(ctx, st, "c1", []string{"a"}); err != nil {
		t.Fatal(err)
	}
	if got := c.Get(ctx, st.Marker("a")).Val(); got != "c2" {
		t.Errorf("marker of a after c1's release = %q; want c2's", got)
	}
	if err := s.ReleaseMarkers(ctx, st, "c2", []string{"a"}); err != nil {
		t.Fatal(err)
	}
	if got := c.Exists(ctx, st.Marker("a")).Val(); got != 0 {
		t.Errorf("marker of a after c2's release exists")
	}
}

// A consumer's pending records are read again (a delivery each time),
// claimed by another consumer once idle, and held: claimed again, with or
// without counting a delivery, only by the consumer they are pending on.
func TestWriteBehindStreamPendingClaimHold(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	c, _ := newClient(t, srv)
	s := newStore(t, c, roomy())
	st := newStream(t, "ns:wb:{claim}")
	ctx := t.Context()
	if err := s.CreateGroup(ctx, st); err != nil {
		t.Fatal(err)
	}
	a := record(t, s, st, "a", "1")
	b := record(t, s, st, "b", "1")
	if _, err := s.ReadGroup(ctx, st, "c1", ">", 10); err != nil {
		t.Fatal(err)
	}

	own, err := s.ReadGroup(ctx, st, "c1", "0", 10)
	if err != nil {
		t.Fatalf("ReadGroup 0 = %v", err)
	}
	a.Deliveries, b.Deliveries = 2, 2
	if want := []l2.Record{a, b}; !reflect.DeepEqual(own, want) {
		t.Errorf("ReadGroup 0 = %+v; want %+v", own, want)
	}
	if after, err := s.ReadGroup(ctx, st, "c1", a.ID, 10); err != nil || !reflect.DeepEqual(ids(after), []string{b.ID}) {
		t.Errorf("ReadGroup after %s = %v, %v; want [%s]", a.ID, ids(after), err, b.ID)
	} else if after[0].Deliveries != 3 {
		t.Errorf("deliveries of b read again = %d; want 3", after[0].Deliveries)
	}

	if got, err := s.Hold(ctx, st, "c2", time.Minute, []l2.Record{a}, true); err != nil || len(got) != 0 {
		t.Errorf("Hold by c2 = %v, %v; want nothing: the records are c1's", got, err)
	}
	got, err := s.Hold(ctx, st, "c1", time.Minute, []l2.Record{a, b}, false)
	if want := map[string]int64{a.ID: 2, b.ID: 3}; err != nil || !reflect.DeepEqual(got, want) {
		t.Errorf("Hold without counting = %v, %v; want %v", got, err, want)
	}
	got, err = s.Hold(ctx, st, "c1", time.Minute, []l2.Record{a}, true)
	if want := map[string]int64{a.ID: 3}; err != nil || !reflect.DeepEqual(got, want) {
		t.Errorf("Hold counting = %v, %v; want %v", got, err, want)
	}

	if recs, next, err := s.AutoClaim(ctx, st, "c2", time.Hour, "0-0", 10); err != nil || len(recs) != 0 || next != "0-0" {
		t.Errorf("AutoClaim idle 1h = %+v, %q, %v; want nothing", recs, next, err)
	}
	recs, next, err := s.AutoClaim(ctx, st, "c2", 0, "0-0", 10)
	if err != nil || next != "0-0" {
		t.Fatalf("AutoClaim = %q, %v", next, err)
	}
	a.Deliveries, b.Deliveries = 4, 4
	if want := []l2.Record{a, b}; !reflect.DeepEqual(recs, want) {
		t.Errorf("AutoClaim = %+v; want %+v", recs, want)
	}
	if got, err := s.ReadGroup(ctx, st, "c1", "0", 10); err != nil || len(got) != 0 {
		t.Errorf("c1's pending after the claim = %+v, %v; want none", got, err)
	}

	// A pending record deleted by hand comes back Gone.
	if err := c.XDel(ctx, st.Key(), a.ID).Err(); err != nil {
		t.Fatal(err)
	}
	gone, err := s.ReadGroup(ctx, st, "c2", "0", 10)
	if err != nil || len(gone) != 2 || !gone[0].Gone || gone[1].Gone {
		t.Errorf("ReadGroup with a deleted entry = %+v, %v; want a Gone, then b", gone, err)
	}
}

// Hold extends the markers the consumer holds, and only those.
func TestWriteBehindStreamHoldExtendsMarkers(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	c, _ := newClient(t, srv)
	s := newStore(t, c, roomy())
	st := newStream(t, "ns:wb:{hold}")
	ctx := t.Context()
	if err := s.CreateGroup(ctx, st); err != nil {
		t.Fatal(err)
	}
	a := record(t, s, st, "a", "1")
	b := record(t, s, st, "b", "1")
	if _, err := s.ReadGroup(ctx, st, "c1", ">", 10); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Prepare(ctx, st, "c1", time.Second, []l2.Record{a}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Prepare(ctx, st, "c2", time.Second, []l2.Record{b}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Hold(ctx, st, "c1", time.Hour, []l2.Record{a, b}, false); err != nil {
		t.Fatal(err)
	}
	if ttl := c.PTTL(ctx, st.Marker("a")).Val(); ttl <= time.Second {
		t.Errorf("PTTL of c1's marker = %v; want it extended to about an hour", ttl)
	}
	if ttl := c.PTTL(ctx, st.Marker("b")).Val(); ttl > time.Second {
		t.Errorf("PTTL of c2's marker = %v; want it left at most 1s", ttl)
	}
}

// DeadLetter moves a pending record with its error, once.
func TestWriteBehindStreamDeadLetter(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	c, _ := newClient(t, srv)
	s := newStore(t, c, roomy())
	st := newStream(t, "ns:wb:{dead}")
	ctx := t.Context()
	if err := s.CreateGroup(ctx, st); err != nil {
		t.Fatal(err)
	}
	r := record(t, s, st, "poison", "v")
	if _, err := s.ReadGroup(ctx, st, "c1", ">", 10); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Prepare(ctx, st, "c1", time.Minute, []l2.Record{r}); err != nil {
		t.Fatal(err)
	}
	r.Deliveries = 3
	moved, err := s.DeadLetter(ctx, st, "c1", r, "boom")
	if err != nil || !moved {
		t.Fatalf("DeadLetter = %t, %v; want true", moved, err)
	}
	dead, err := c.XRange(ctx, st.Dead(), "-", "+").Result()
	if err != nil || len(dead) != 1 {
		t.Fatalf("dead stream = %v, %v; want one entry", dead, err)
	}
	want := map[string]any{"key": "poison", "value": "v", "id": r.ID, "deliveries": "3", "error": "boom"}
	if !reflect.DeepEqual(dead[0].Values, want) {
		t.Errorf("dead entry = %v; want %v", dead[0].Values, want)
	}
	if got := c.XLen(ctx, st.Key()).Val(); got != 0 {
		t.Errorf("XLEN = %d; want 0", got)
	}
	if p := c.XPending(ctx, st.Key(), "g").Val(); p.Count != 0 {
		t.Errorf("XPENDING = %d; want 0", p.Count)
	}
	if got := c.Exists(ctx, st.Last(), st.Marker("poison")).Val(); got != 0 {
		t.Errorf("last hash or marker left (%d)", got)
	}
	if moved, err := s.DeadLetter(ctx, st, "c1", r, "again"); err != nil || moved {
		t.Errorf("second DeadLetter = %t, %v; want false: no longer pending", moved, err)
	}
	if got := c.XLen(ctx, st.Dead()).Val(); got != 1 {
		t.Errorf("dead XLEN = %d; want 1", got)
	}
}

func TestWriteBehindStreamLastID(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	c, _ := newClient(t, srv)
	s := newStore(t, c, roomy())
	st := newStream(t, "ns:wb:{last}")
	ctx := t.Context()
	if id, err := s.LastID(ctx, st); err != nil || id != "0-0" {
		t.Errorf("LastID of no stream = %q, %v; want 0-0", id, err)
	}
	record(t, s, st, "a", "1")
	r := record(t, s, st, "b", "1")
	if id, err := s.LastID(ctx, st); err != nil || id != r.ID {
		t.Errorf("LastID = %q, %v; want %q", id, err, r.ID)
	}
}

// Every stream call goes through the breaker: once it is open, each fails
// with ErrCircuitOpen.
func TestWriteBehindStreamBreaker(t *testing.T) {
	t.Parallel()
	c := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1", MaxRetries: -1, ContextTimeoutEnabled: true})
	t.Cleanup(func() { c.Close() })
	s := newStore(t, c, l2.Options{Breaker: l2.BreakerOptions{Failures: 1, CoolDown: time.Hour}})
	st := newStream(t, "ns:wb:{brk}")
	ctx := t.Context()
	if err := s.CreateGroup(ctx, st); err == nil || errors.Is(err, l2.ErrCircuitOpen) {
		t.Fatalf("CreateGroup = %v; want a dial error", err)
	}
	r := l2.Record{ID: "1-0", Key: "k"}
	calls := []struct {
		name string
		call func(context.Context) error
	}{
		{"CreateGroup", func(ctx context.Context) error { return s.CreateGroup(ctx, st) }},
		{"RecordAndSet", func(ctx context.Context) error {
			_, err := s.RecordAndSet(ctx, st, "k", l2.Item{Key: "ns:brk:k", TTL: time.Minute}, "ch", nil)
			return err
		}},
		{"Record", func(ctx context.Context) error { _, err := s.Record(ctx, st, "k", nil); return err }},
		{"ReadGroup", func(ctx context.Context) error { _, err := s.ReadGroup(ctx, st, "c", ">", 1); return err }},
		{"AutoClaim", func(ctx context.Context) error { _, _, err := s.AutoClaim(ctx, st, "c", 0, "0-0", 1); return err }},
		{"Hold", func(ctx context.Context) error {
			_, err := s.Hold(ctx, st, "c", time.Second, []l2.Record{r}, true)
			return err
		}},
		{"Prepare", func(ctx context.Context) error {
			_, err := s.Prepare(ctx, st, "c", time.Second, []l2.Record{r})
			return err
		}},
		{"Ack", func(ctx context.Context) error { _, err := s.Ack(ctx, st, "c", []l2.Record{r}); return err }},
		{"ReleaseMarkers", func(ctx context.Context) error { return s.ReleaseMarkers(ctx, st, "c", []string{"k"}) }},
		{"DeadLetter", func(ctx context.Context) error { _, err := s.DeadLetter(ctx, st, "c", r, "x"); return err }},
		{"LastID", func(ctx context.Context) error { _, err := s.LastID(ctx, st); return err }},
	}
	for _, tt := range calls {
		if err := tt.call(ctx); !errors.Is(err, l2.ErrCircuitOpen) {
			t.Errorf("%s = %v; want l2.ErrCircuitOpen", tt.name, err)
		}
	}
}

// A scan of AutoClaim that goes round deletes the consumers that have
// nothing pending, and keeps those that have.
func TestWriteBehindStreamAutoClaimPrunesConsumers(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	c, _ := newClient(t, srv)
	s := newStore(t, c, roomy())
	st := newStream(t, "ns:wb:{prune}")
	ctx := t.Context()
	if err := s.CreateGroup(ctx, st); err != nil {
		t.Fatal(err)
	}
	record(t, s, st, "a", "1")
	if _, err := s.ReadGroup(ctx, st, "busy", ">", 10); err != nil {
		t.Fatal(err)
	}
	if err := c.XGroupCreateConsumer(ctx, st.Key(), "g", "gone").Err(); err != nil {
		t.Fatal(err)
	}
	// From past every entry: nothing to claim, and the scan goes round.
	recs, next, err := s.AutoClaim(ctx, st, "c2", 0, "99999999999999-0", 10)
	if err != nil || len(recs) != 0 || next != "0-0" {
		t.Fatalf("AutoClaim = %+v, %q, %v; want nothing, 0-0", recs, next, err)
	}
	infos, err := c.XInfoConsumers(ctx, st.Key(), "g").Result()
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for _, i := range infos {
		names[i.Name] = true
	}
	if !names["busy"] || names["gone"] {
		t.Errorf("consumers = %v; want busy kept (a record pending) and gone deleted", names)
	}
}
