package tiercache_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tiercache/tiercache"
	"github.com/tiercache/tiercache/internal/redistest"
)

// TestPresenceRecordLifecycle: a replica's record is in Redis once Start
// returns, with its identity, a TTL of three heartbeats and its stats;
// WritePresence refreshes the stats; Stop removes it.
func TestPresenceRecordLifecycle(t *testing.T) {
	srv := redistest.Start(t)
	ctx := context.Background()
	const interval = time.Hour // the ticker never fires here: WritePresence does
	a := newReplica(t, srv, tiercache.Config{InstanceID: "replica-a", HeartbeatInterval: interval})
	ks, _ := tiercache.NewKeyspace[string, string](a.c, "pres", tiercache.KeyspaceConfig{})

	rs, err := tiercache.ListReplicas(ctx, a.client, "")
	if err != nil {
		t.Fatal(err)
	}
	if len(rs) != 1 {
		t.Fatalf("ListReplicas = %d records; want 1", len(rs))
	}
	host, _ := os.Hostname()
	r := rs[0]
	if r.ID != "replica-a" || r.Namespace != tiercache.DefaultNamespace || r.Host != host || r.PID != os.Getpid() ||
		!r.BusHealthy || r.Breaker != "closed" || r.Interval != interval || r.Version == "" || r.Started.IsZero() {
		t.Errorf("record after Start = %+v; want replica-a of this process, healthy, closed", r)
	}
	ttl, err := a.client.PTTL(ctx, tiercache.PresenceKey("", "replica-a")).Result()
	if err != nil {
		t.Fatal(err)
	}
	if ttl <= 2*interval || ttl > 3*interval {
		t.Errorf("record TTL = %v; want three heartbeats (%v)", ttl, 3*interval)
	}

	var loads atomic.Int64
	if _, err := ks.GetOrLoad(ctx, "k", countingLoader(&loads, func(k string) string { return k })); err != nil {
		t.Fatal(err)
	}
	ks.Wait()
	if _, err := ks.Get(ctx, "k"); err != nil {
		t.Fatal(err)
	}
	if err := a.c.WritePresence(ctx); err != nil {
		t.Fatal(err)
	}
	rs, err = tiercache.ListReplicas(ctx, a.client, "")
	if err != nil || len(rs) != 1 {
		t.Fatalf("ListReplicas = %v, %v; want one record", rs, err)
	}
	r = rs[0]
	got := r.Stats.Keyspaces["pres"]
	if got.L1Hits != 1 || got.Loads != 1 || r.L1Entries != 1 || r.L1Cost <= 0 || r.HitRatio != 0.5 || r.LastInvalidation.IsZero() {
		t.Errorf("record after one load and one hit: L1Hits %d, Loads %d, L1Entries %d, L1Cost %d, HitRatio %v, LastInvalidation %v",
			got.L1Hits, got.Loads, r.L1Entries, r.L1Cost, r.HitRatio, r.LastInvalidation)
	}

	if err := a.c.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if n, err := a.client.Exists(ctx, tiercache.PresenceKey("", "replica-a")).Result(); err != nil || n != 0 {
		t.Errorf("record after Stop: exists %d, %v; want gone", n, err)
	}
	if err := a.c.WritePresence(ctx); !errors.Is(err, tiercache.ErrClosed) {
		t.Errorf("WritePresence after Stop = %v; want ErrClosed", err)
	}
}

// TestPresenceHeartbeatTicks: the heartbeat rewrites the record every
// interval, counted by a hook, not waited for by sleeping.
func TestPresenceHeartbeatTicks(t *testing.T) {
	srv := redistest.Start(t)
	beats := make(chan error, 16)
	r := newReplica(t, srv, tiercache.Config{HeartbeatInterval: 10 * time.Millisecond}, tiercache.WithBeatHook(func(err error) {
		select {
		case beats <- err:
		default:
		}
	}))
	timer := time.NewTimer(waitTimeout)
	defer timer.Stop()
	for i := range 3 { // Start's write, then two ticks
		select {
		case err := <-beats:
			if err != nil {
				t.Fatalf("beat %d: %v", i, err)
			}
		case <-timer.C:
			t.Fatalf("%d heartbeats within %v; want 3", i, waitTimeout)
		}
	}
	rs, err := tiercache.ListReplicas(context.Background(), r.client, "")
	if err != nil || len(rs) != 1 || rs[0].ID != r.c.InstanceID() {
		t.Fatalf("ListReplicas = %+v, %v; want this replica", rs, err)
	}
}

// TestPresenceOffAndBadRecords: with heartbeats off nothing is written and
// WritePresence says why; ListReplicas returns the good records of several
// replicas by ID, skipping a garbage one and naming it in the error.
func TestPresenceOffAndBadRecords(t *testing.T) {
	srv := redistest.Start(t)
	ctx := context.Background()
	off := newReplica(t, srv, tiercache.Config{InstanceID: "off", HeartbeatInterval: -1})
	if err := off.c.WritePresence(ctx); !errors.Is(err, tiercache.ErrInvalidConfig) {
		t.Errorf("WritePresence with heartbeats off = %v; want ErrInvalidConfig", err)
	}
	newReplica(t, srv, tiercache.Config{InstanceID: "b"})
	newReplica(t, srv, tiercache.Config{InstanceID: "a"})
	newReplica(t, srv, tiercache.Config{InstanceID: "other-ns", Namespace: "elsewhere"})
	if err := off.client.Set(ctx, tiercache.PresenceKey("", "garbage"), "not json", 0).Err(); err != nil {
		t.Fatal(err)
	}
	if err := off.client.ZAdd(ctx, tiercache.PresenceIndexKey(""), redis.Z{Score: 1e15, Member: "garbage"}).Err(); err != nil {
		t.Fatal(err)
	}
	// A member whose record expired and that no beat has dropped yet.
	if err := off.client.ZAdd(ctx, tiercache.PresenceIndexKey(""), redis.Z{Score: 1e15, Member: "gone"}).Err(); err != nil {
		t.Fatal(err)
	}
	rs, err := tiercache.ListReplicas(ctx, off.client, "")
	if err == nil || !strings.Contains(err.Error(), "garbage") {
		t.Errorf("ListReplicas error = %v; want one naming the garbage record", err)
	}
	var ids []string
	for _, r := range rs {
		ids = append(ids, r.ID)
	}
	if got, want := strings.Join(ids, ","), "a,b"; got != want {
		t.Errorf("ListReplicas IDs = %s; want %s (sorted, this namespace only, none for off)", got, want)
	}
}

// TestPresenceCluster: on a Cluster, the records and their index share a
// slot, so the beat's script runs there, and ListReplicas finds every
// replica, whichever master it is connected through.
func TestPresenceCluster(t *testing.T) {
	cl := redistest.StartCluster(t)
	ctx := context.Background()
	for _, id := range []string{"ra", "rb", "rc"} {
		newReplicaOn(t, cl.Client(t), tiercache.Config{Namespace: "cl", InstanceID: id})
	}
	rs, err := tiercache.ListReplicas(ctx, cl.Client(t), "cl")
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, r := range rs {
		ids = append(ids, r.ID)
	}
	if got, want := strings.Join(ids, ","), "ra,rb,rc"; got != want {
		t.Errorf("ListReplicas on a Cluster = %s; want %s", got, want)
	}
}

// TestPresenceIndexDropsTheDead: a replica that died without Stop leaves
// the index once its record expired, at the next beat of any replica, by
// Redis's clock; and Stop takes a replica out of the index at once.
func TestPresenceIndexDropsTheDead(t *testing.T) {
	srv := redistest.Start(t)
	ctx := context.Background()
	a := newReplica(t, srv, tiercache.Config{InstanceID: "a", HeartbeatInterval: time.Hour})
	idx := tiercache.PresenceIndexKey("")
	if err := a.client.ZAdd(ctx, idx, redis.Z{Score: 1, Member: "dead"}).Err(); err != nil { // expired in 1970
		t.Fatal(err)
	}
	if err := a.c.WritePresence(ctx); err != nil {
		t.Fatal(err)
	}
	members, err := a.client.ZRange(ctx, idx, 0, -1).Result()
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(members, ","); got != "a" {
		t.Errorf("index after a beat = %s; want only a", got)
	}
	if err := a.c.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if n, err := a.client.Exists(ctx, idx).Result(); err != nil || n != 0 {
		t.Errorf("index after its last replica stopped: exists %d, %v; want gone", n, err)
	}
}

// hostileRecord is a presence record planted in Redis under id by
// someone other than a replica.
type hostileRecord struct {
	id  string
	rec []byte
}

// plantRecords writes records in namespace and indexes them, for ever.
func plantRecords(t *testing.T, client redis.UniversalClient, namespace string, recs ...hostileRecord) {
	t.Helper()
	ctx := context.Background()
	for _, r := range recs {
		if err := client.Set(ctx, tiercache.PresenceKey(namespace, r.id), r.rec, 0).Err(); err != nil {
			t.Fatal(err)
		}
		if err := client.ZAdd(ctx, tiercache.PresenceIndexKey(namespace), redis.Z{Score: 1e15, Member: r.id}).Err(); err != nil {
			t.Fatal(err)
		}
	}
}

// encodeReplica encodes r as a replica writes it.
func encodeReplica(t *testing.T, r tiercache.Replica) []byte {
	t.Helper()
	b, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// withKeyspaces returns a record of id naming n keyspaces called
// prefix0, prefix1...
func withKeyspaces(id, prefix string, n int) tiercache.Replica {
	r := tiercache.Replica{ID: id, Stats: tiercache.Stats{Keyspaces: map[string]tiercache.KeyspaceStats{}}}
	for i := range n {
		r.Stats.Keyspaces[fmt.Sprintf("%s%d", prefix, i)] = tiercache.KeyspaceStats{}
	}
	return r
}

// padded returns the JSON text b with spaces after it, size bytes in all.
func padded(b []byte, size int) []byte {
	return append(b, bytes.Repeat([]byte(" "), size-len(b))...)
}

// floodJSON is a record of id of about size bytes naming as many empty
// keyspaces as fit, every one called name when name is not "".
func floodJSON(id, name string, size int) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, `{"id":%q,"stats":{"keyspaces":{`, id)
	for i := 0; b.Len() < size-32; i++ {
		if i > 0 {
			b.WriteByte(',')
		}
		if name != "" {
			fmt.Fprintf(&b, `%q:{}`, name)
		} else {
			fmt.Fprintf(&b, `"k%06d":{}`, i)
		}
	}
	b.WriteString("}}}")
	return b.Bytes()
}

// TestListReplicasPresenceHostile: ListReplicas refuses, whole and named in
// its error (escaped), every record beyond the limits of ParseReplica, and
// still lists the honest replica beside it; it accepts a record at every
// limit.
func TestListReplicasPresenceHostile(t *testing.T) {
	srv := redistest.Start(t)
	client := srv.Client(t)
	ctx := context.Background()
	longName := strings.Repeat("n", tiercache.MaxKeyspaceName-3) // three digits follow
	atLimits := withKeyspaces("at-limits", longName, tiercache.MaxReplicaKeyspaces)
	atLimits.Host = strings.Repeat("h", tiercache.MaxReplicaField)
	atLimits.Version = "v1.0.0-ünïcödé" // printable beyond ASCII
	hist := tiercache.Histogram{Counts: make([]uint64, len(tiercache.LatencyBuckets())+2)}
	tests := []struct {
		name    string
		give    hostileRecord
		wantErr string // "" when the record is listed
	}{
		{"AtEveryLimit", hostileRecord{"at-limits", encodeReplica(t, atLimits)}, ""},
		{"ExactlyMaxReplicaRecord", hostileRecord{"max", padded(encodeReplica(t, tiercache.Replica{ID: "max"}), tiercache.MaxReplicaRecord)}, ""},
		{"OneByteTooLarge", hostileRecord{"big", padded(encodeReplica(t, tiercache.Replica{ID: "big"}), tiercache.MaxReplicaRecord+1)},
			fmt.Sprintf("of %d bytes, more than %d", tiercache.MaxReplicaRecord+1, tiercache.MaxReplicaRecord)},
		{"TooManyKeyspaces", hostileRecord{"many", encodeReplica(t, withKeyspaces("many", "k", tiercache.MaxReplicaKeyspaces+1))},
			fmt.Sprintf("%d keyspaces, more than %d", tiercache.MaxReplicaKeyspaces+1, tiercache.MaxReplicaKeyspaces)},
		{"FloodOfKeyspaces", hostileRecord{"flood", floodJSON("flood", "", tiercache.MaxReplicaRecord)}, fmt.Sprintf("keyspaces, more than %d", tiercache.MaxReplicaKeyspaces)},
		{"OneKeyspaceNamedOverAndOver", hostileRecord{"dup", floodJSON("dup", "same", tiercache.MaxReplicaRecord)}, fmt.Sprintf("keyspaces, more than %d", tiercache.MaxReplicaKeyspaces)},
		{"EscapeInID", hostileRecord{"esc-id", encodeReplica(t, tiercache.Replica{ID: "\x1b[2J"})}, `id "\x1b[2J" holds U+001B`},
		{"EscapeInHost", hostileRecord{"esc-host", encodeReplica(t, tiercache.Replica{ID: "esc-host", Host: "\x1b]0;pwned\a"})}, `host "\x1b]0;pwned\a" holds U+001B`},
		{"C1InVersion", hostileRecord{"c1", encodeReplica(t, tiercache.Replica{ID: "c1", Version: "\u009b31m"})}, `version "\u009b31m" holds U+009B`},
		{"BidiOverrideInBreaker", hostileRecord{"bidi", encodeReplica(t, tiercache.Replica{ID: "bidi", Breaker: "\u202edesolc"})}, `breaker "\u202edesolc" holds U+202E`},
		{"EscapeInNamespace", hostileRecord{"ns", encodeReplica(t, tiercache.Replica{ID: "ns", Namespace: "a\x00b"})}, `namespace "a\x00b" holds U+0000`},
		{"EscapeInStatsInstanceID", hostileRecord{"sid", encodeReplica(t, tiercache.Replica{ID: "sid", Stats: tiercache.Stats{InstanceID: "\x07"}})}, `stats instance_id "\a" holds U+0007`},
		{"LongHost", hostileRecord{"long-host", encodeReplica(t, tiercache.Replica{ID: "long-host", Host: strings.Repeat("h", tiercache.MaxReplicaField+1)})},
			fmt.Sprintf("host %q... of %d bytes, more than %d", strings.Repeat("h", 40), tiercache.MaxReplicaField+1, tiercache.MaxReplicaField)},
		{"EscapeInKeyspaceName", hostileRecord{"esc-ks", encodeReplica(t, withKeyspaces("esc-ks", "\x1b[31m", 1))}, `keyspace name "\x1b[31m0" holds U+001B`},
		{"TabInKeyspaceName", hostileRecord{"tab-ks", encodeReplica(t, withKeyspaces("tab-ks", "a\tb", 1))}, `keyspace name "a\tb0" holds U+0009`},
		{"ColonInKeyspaceName", hostileRecord{"colon-ks", encodeReplica(t, withKeyspaces("colon-ks", "a:b", 1))}, `keyspace name "a:b0": empty, or holds ':' or a space`},
		{"LongKeyspaceName", hostileRecord{"long-ks", encodeReplica(t, withKeyspaces("long-ks", strings.Repeat("n", tiercache.MaxKeyspaceName), 1))},
			fmt.Sprintf("of %d bytes, more than %d", tiercache.MaxKeyspaceName+1, tiercache.MaxKeyspaceName)},
		{"HistogramOfTooManyBuckets", hostileRecord{"hist", encodeReplica(t, tiercache.Replica{ID: "hist", Stats: tiercache.Stats{Keyspaces: map[string]tiercache.KeyspaceStats{"ks": {LoadLatency: hist}}}})},
			fmt.Sprintf("histogram of %d buckets", len(hist.Counts))},
		{"EscapeInIndexMember", hostileRecord{"\x1b[2Jevil", encodeReplica(t, tiercache.Replica{ID: "evil"})}, `member "\x1b[2Jevil" holds U+001B`},
		{"LongIndexMember", hostileRecord{strings.Repeat("i", tiercache.MaxReplicaField+1), encodeReplica(t, tiercache.Replica{ID: "long"})},
			fmt.Sprintf("of %d bytes, more than %d", tiercache.MaxReplicaField+1, tiercache.MaxReplicaField)},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ns := fmt.Sprintf("hostile%d", i)
			plantRecords(t, client, ns, hostileRecord{"honest", encodeReplica(t, tiercache.Replica{ID: "honest", Namespace: ns})}, tt.give)
			rs, err := tiercache.ListReplicas(ctx, client, ns)
			var ids []string
			for _, r := range rs {
				ids = append(ids, r.ID)
			}
			want := "honest"
			if tt.wantErr == "" {
				want = strings.Join(slices.Sorted(slices.Values([]string{tt.give.id, "honest"})), ",")
				if err != nil {
					t.Errorf("ListReplicas error = %v; want none", err)
				}
			} else if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("ListReplicas error = %.500v; want one holding %s", err, tt.wantErr)
			}
			if got := strings.Join(ids, ","); got != want {
				t.Errorf("ListReplicas IDs = %.100s; want %s", got, want)
			}
			if err != nil && strings.IndexFunc(err.Error(), func(r rune) bool { return r != '\n' && !strconv.IsPrint(r) }) >= 0 {
				t.Errorf("ListReplicas error holds a character that is not printable: %q", err)
			}
		})
	}

	// A record that is not a string is that record's error, not the list's.
	ns := "wrongtype"
	plantRecords(t, client, ns, hostileRecord{"honest", encodeReplica(t, tiercache.Replica{ID: "honest"})})
	if err := client.HSet(ctx, tiercache.PresenceKey(ns, "hash"), "f", "v").Err(); err != nil {
		t.Fatal(err)
	}
	if err := client.ZAdd(ctx, tiercache.PresenceIndexKey(ns), redis.Z{Score: 1e15, Member: "hash"}).Err(); err != nil {
		t.Fatal(err)
	}
	rs, err := tiercache.ListReplicas(ctx, client, ns)
	if len(rs) != 1 || rs[0].ID != "honest" || err == nil || !strings.Contains(err.Error(), "WRONGTYPE") {
		t.Errorf("ListReplicas beside a hash = %d records, %v; want honest, and WRONGTYPE for the hash", len(rs), err)
	}
}

// TestListReplicasPresenceHostileCost: eight hostile records (three of
// 1 MiB naming 80,000 keyspaces, two at MaxReplicaRecord naming 40,000, a
// record of 100 MiB, an index member of 8 MiB and a record of escapes)
// cost ListReplicas no more than reading eight records of MaxReplicaRecord
// bytes: Redis sends no more than that, and ListReplicas allocates no more
// than a few times that.
func TestListReplicasPresenceHostileCost(t *testing.T) {
	srv := redistest.Start(t)
	// Redis takes a while to make the large records.
	client := redis.NewClient(&redis.Options{Addr: srv.Addr, ReadTimeout: waitTimeout})
	defer client.Close()
	ctx := context.Background()
	plantRecords(t, client, "", hostileRecord{"honest", encodeReplica(t, tiercache.Replica{ID: "honest"})})
	for i, size := range []int{1 << 20, 1 << 20, 1 << 20, tiercache.MaxReplicaRecord, tiercache.MaxReplicaRecord} {
		id := fmt.Sprintf("flood-%d", i)
		plantRecords(t, client, "", hostileRecord{id, floodJSON(id, "", size)})
	}
	plantRecords(t, client, "", hostileRecord{"ansi", encodeReplica(t, tiercache.Replica{ID: "ansi", Host: "\x1b[2J"})})
	// Made by Redis, not sent from here: a record of 100 MiB and an index
	// member of 8 MiB (Lua takes seconds to make one of 100 MiB).
	big := tiercache.PresenceKey("", "big")
	plantRecords(t, client, "", hostileRecord{"big", []byte(`{"id":"big","host":"`)})
	if err := client.SetRange(ctx, big, 100<<20-2, `"}`).Err(); err != nil {
		t.Fatal(err)
	}
	if err := client.Eval(ctx, `return redis.call('ZADD', KEYS[1], 1e15, string.rep('m', 8 * 1024 * 1024))`,
		[]string{tiercache.PresenceIndexKey("")}).Err(); err != nil {
		t.Fatal(err)
	}

	sent := func() int64 {
		info, err := client.Info(ctx, "stats").Result()
		if err != nil {
			t.Fatal(err)
		}
		for line := range strings.Lines(info) {
			if v, ok := strings.CutPrefix(strings.TrimSpace(line), "total_net_output_bytes:"); ok {
				n, _ := strconv.ParseInt(v, 10, 64)
				return n
			}
		}
		t.Fatal("INFO stats has no total_net_output_bytes")
		return 0
	}
	var before, after runtime.MemStats
	sentBefore := sent()
	runtime.ReadMemStats(&before)
	rs, err := tiercache.ListReplicas(ctx, client, "")
	runtime.ReadMemStats(&after)
	sentDuring := sent() - sentBefore
	if len(rs) != 1 || rs[0].ID != "honest" {
		t.Errorf("ListReplicas = %d records; want honest alone", len(rs))
	}
	if n := strings.Count(fmt.Sprint(err), "\n") + 1; err == nil || n != 8 {
		t.Errorf("ListReplicas error names %d records; want 8:\n%v", n, err)
	}
	budget := int64(8 * (tiercache.MaxReplicaRecord + 1))
	if sentDuring > budget+64<<10 { // and the INFO reply
		t.Errorf("Redis sent %d bytes; want at most %d, eight records of %d bytes", sentDuring, budget, tiercache.MaxReplicaRecord)
	}
	if alloc := int64(after.TotalAlloc - before.TotalAlloc); alloc > 3*budget {
		t.Errorf("ListReplicas allocated %.1f MiB; want at most %.1f MiB, three times eight records of %d bytes",
			float64(alloc)/(1<<20), float64(3*budget)/(1<<20), tiercache.MaxReplicaRecord)
	}
	t.Logf("Redis sent %d bytes; ListReplicas allocated %d bytes", sentDuring, after.TotalAlloc-before.TotalAlloc)
}

// TestWritePresenceHostile: a replica writes no record that ListReplicas
// would refuse: an id or a keyspace name holding an escape sequence is
// refused by New and NewKeyspace already; with more than
// MaxReplicaKeyspaces keyspaces WritePresence says why, wrapping
// ErrInvalidConfig, and leaves the record before it, if any, to expire; a
// replica at the limit writes its record.
func TestWritePresenceHostile(t *testing.T) {
	srv := redistest.Start(t)
	ctx := context.Background()
	tests := []struct {
		name      string
		id        string
		keyspaces []string
		wantErr   string // "" when the record is written
	}{
		{"TooManyKeyspaces", "many", names("k", tiercache.MaxReplicaKeyspaces+1), fmt.Sprintf("%d keyspaces, more than %d", tiercache.MaxReplicaKeyspaces+1, tiercache.MaxReplicaKeyspaces)},
		{"AtTheLimit", "at-limit", names("k", tiercache.MaxReplicaKeyspaces), ""},
	}
	// What a record would refuse, New and NewKeyspace refuse first.
	if _, err := tiercache.New(srv.Client(t), tiercache.Config{InstanceID: "\x1b[31mred"}); !errors.Is(err, tiercache.ErrInvalidConfig) {
		t.Errorf("New with an escape in the instance id = %v; want ErrInvalidConfig", err)
	}
	if err := tiercache.ValidKeyspaceName("\x1b[2J"); !errors.Is(err, tiercache.ErrInvalidConfig) {
		t.Errorf("ValidKeyspaceName with an escape = %v; want ErrInvalidConfig", err)
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ns := fmt.Sprintf("writer%d", i)
			r := newReplica(t, srv, tiercache.Config{Namespace: ns, InstanceID: tt.id, HeartbeatInterval: time.Hour})
			for _, name := range tt.keyspaces {
				if _, err := tiercache.NewKeyspace[string, string](r.c, name, tiercache.KeyspaceConfig{DisableL1: true}); err != nil {
					t.Fatal(err)
				}
			}
			err := r.c.WritePresence(ctx)
			n, xerr := r.client.Exists(ctx, tiercache.PresenceKey(ns, tt.id)).Result()
			if xerr != nil {
				t.Fatal(xerr)
			}
			if tt.wantErr == "" {
				rs, lerr := tiercache.ListReplicas(ctx, r.client, ns)
				if err != nil || lerr != nil || len(rs) != 1 || len(rs[0].Stats.Keyspaces) != len(tt.keyspaces) {
					t.Errorf("WritePresence = %v, ListReplicas = %d records, %v; want one of %d keyspaces", err, len(rs), lerr, len(tt.keyspaces))
				}
				return
			}
			if !errors.Is(err, tiercache.ErrInvalidConfig) || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("WritePresence = %v; want ErrInvalidConfig saying %s", err, tt.wantErr)
			}
			// What is in Redis, if anything, is the record of Start, before
			// the keyspaces: the refused one was not written.
			rs, _ := tiercache.ListReplicas(ctx, r.client, ns)
			if n != 0 && (len(rs) != 1 || len(rs[0].Stats.Keyspaces) != 0) {
				t.Errorf("after a refused record, ListReplicas = %d records (%v); want at most the one Start wrote, of no keyspace", len(rs), rs)
			}
		})
	}
}

// names returns n names: prefix0, prefix1...
func names(prefix string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%s%d", prefix, i)
	}
	return out
}
