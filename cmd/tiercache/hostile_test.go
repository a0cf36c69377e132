package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tiercache/tiercache"
	"github.com/tiercache/tiercache/internal/redistest"
)

// Memory that a run of replicas or stats may hold, as peak resident set,
// with the records of plantHostile in Redis.
const (
	// hostileRSS bounds the whole process, with the race detector or not.
	hostileRSS = 64 << 20
	// hostileExtra bounds what the hostile records add to the same run with
	// the honest record alone: what ListReplicas may read (eight records of
	// at most tiercache.MaxReplicaRecord bytes) and decode, with the
	// collector's headroom.
	hostileExtra = 16 << 20
	// hostileExtraRace is hostileExtra under the race detector, whose
	// shadow memory about triples the heap's footprint.
	hostileExtraRace = 40 << 20
)

// floodRecord is a presence record of id of just under size bytes that
// names as many empty keyspaces as fit: about 80,000 in 1 MiB.
func floodRecord(id string, size int) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, `{"id":%q,"namespace":"tiercache","host":"flood","pid":1,"version":"v0","breaker":"closed","seen":%q,"stats":{"keyspaces":{`,
		id, time.Now().Format(time.RFC3339Nano))
	for i := 0; b.Len() < size-32; i++ {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `"k%06d":{}`, i)
	}
	b.WriteString("}}}")
	return b.Bytes()
}

// record encodes r as a replica writes it.
func record(tb testing.TB, r tiercache.Replica) []byte {
	tb.Helper()
	b, err := json.Marshal(r)
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

// plantHonest writes the presence record of one well-behaved replica,
// "honest", with the keyspace users, in the default namespace.
func plantHonest(tb testing.TB, client *redis.Client) {
	tb.Helper()
	plant(tb, client, "honest", record(tb, tiercache.Replica{
		ID: "honest", Namespace: tiercache.DefaultNamespace, Host: "web-1", PID: 42, Version: "v1.2.3",
		Seen: time.Now(), Breaker: "closed", BusHealthy: true,
		Stats: tiercache.Stats{Keyspaces: map[string]tiercache.KeyspaceStats{"users": {L1Hits: 3, L2Hits: 1}}},
	}))
}

// plantHostile writes, beside the honest record, eight presence records
// that someone with write access to Redis could leave to hurt the
// operator's terminal or memory: three of 1 MiB naming about 80,000
// keyspaces each, two of just under tiercache.MaxReplicaRecord naming as
// many as fit (about 40,000), one of 100 MiB, one whose host, version and
// keyspace name hold ANSI escape sequences (C0 and C1), and one whose id
// in the index does.
func plantHostile(tb testing.TB, client *redis.Client) {
	tb.Helper()
	ctx := context.Background()
	plantHonest(tb, client)
	for i, size := range []int{1 << 20, 1 << 20, 1 << 20, tiercache.MaxReplicaRecord, tiercache.MaxReplicaRecord} {
		id := fmt.Sprintf("flood-%d", i)
		plant(tb, client, id, floodRecord(id, size))
	}
	plant(tb, client, "ansi", record(tb, tiercache.Replica{
		ID: "ansi", Namespace: tiercache.DefaultNamespace, Host: "\x1b]0;pwned\a\x1b[2J", Version: "\u009b31mred",
		Breaker: "\x1b[5mclosed", Seen: time.Now(),
		Stats: tiercache.Stats{Keyspaces: map[string]tiercache.KeyspaceStats{"\x1b[31mred": {L1Hits: 1}}},
	}))
	const escID = "\x1b[2J\x1b[Hevil"
	plant(tb, client, escID, record(tb, tiercache.Replica{ID: escID, Namespace: tiercache.DefaultNamespace, Seen: time.Now()}))
	// 100 MiB, made by Redis itself rather than sent from here.
	big := tiercache.PresenceKey("", "big")
	if err := client.Set(ctx, big, `{"id":"big","host":"`, 0).Err(); err != nil {
		tb.Fatal(err)
	}
	if err := client.SetRange(ctx, big, 100<<20-2, `"}`).Err(); err != nil {
		tb.Fatal(err)
	}
	if err := client.ZAdd(ctx, tiercache.PresenceIndexKey(""), redis.Z{Score: 1e15, Member: "big"}).Err(); err != nil {
		tb.Fatal(err)
	}
}

// setupClient returns a client for addr with time for Redis to make large
// records, closed in tb.Cleanup.
func setupClient(tb testing.TB, addr string) *redis.Client {
	c := redis.NewClient(&redis.Options{Addr: addr, ReadTimeout: waitTimeout})
	tb.Cleanup(func() { c.Close() })
	return c
}

// plant writes a presence record of id and indexes it, for ever.
func plant(tb testing.TB, client *redis.Client, id string, rec []byte) {
	tb.Helper()
	ctx := context.Background()
	if err := client.Set(ctx, tiercache.PresenceKey("", id), rec, 0).Err(); err != nil {
		tb.Fatal(err)
	}
	if err := client.ZAdd(ctx, tiercache.PresenceIndexKey(""), redis.Z{Score: 1e15, Member: id}).Err(); err != nil {
		tb.Fatal(err)
	}
}

// TestCLIPresenceHostile proves that replicas and stats, as tables and as
// JSON, list the honest replica beside eight hostile records, name the
// records they refused, print no raw control character, and hold little
// more memory than with the honest record alone, under hostileRSS in all.
func TestCLIPresenceHostile(t *testing.T) {
	honest, hostile := redistest.Start(t), redistest.Start(t)
	plantHonest(t, newClient(t, honest.Addr))
	plantHostile(t, setupClient(t, hostile.Addr))
	extra := int64(hostileExtra)
	if raceEnabled {
		extra = hostileExtraRace
	}
	tests := []struct {
		give []string
		want []string // on stdout
	}{
		{[]string{"replicas"}, []string{"honest", "web-1", "users"}},
		{[]string{"replicas", "--json"}, []string{`"id": "honest"`, `"users"`}},
		{[]string{"stats"}, []string{"users", "honest", "TOTAL"}},
		{[]string{"stats", "--json"}, []string{`"users"`, `"honest"`}},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.give, " "), func(t *testing.T) {
			floor := cli(t, append(tt.give, "--addr", honest.Addr)...)
			floor.want(t, exitOK, tt.want, nil)
			r := cli(t, append(tt.give, "--addr", hostile.Addr)...)
			r.want(t, exitError, tt.want, []string{
				"some presence records could not be read",
				`"tiercache::replicas{tiercache}:big": tiercache: presence record of 104857600 bytes, more than`,
				`"tiercache::replicas{tiercache}:flood-0": tiercache: presence record of 1048`,
				`"tiercache::replicas{tiercache}:flood-3": tiercache: presence record: 40`,
				"keyspaces, more than",
				`"tiercache::replicas{tiercache}:ansi": tiercache: presence record: host "\x1b]0;pwned\a\x1b[2J" holds U+001B`,
				`member "\x1b[2J\x1b[Hevil" holds U+001B`,
			})
			for _, out := range []string{r.stdout, r.stderr} {
				if i := strings.IndexAny(out, "\x1b\u009b\a"); i >= 0 {
					t.Errorf("raw control character %q in output at %d:\n%q", out[i], i, out[max(0, i-40):min(len(out), i+40)])
				}
			}
			if strings.Contains(r.stdout, "flood") || strings.Contains(r.stdout, "pwned") || strings.Contains(r.stdout, "evil") {
				t.Errorf("a hostile record was listed:\n%.2000s", r.stdout)
			}
			mib := func(n int64) float64 { return float64(n) / (1 << 20) }
			t.Logf("peak RSS %.1f MiB, with the honest record alone %.1f MiB (race detector: %t)", mib(r.maxRSS), mib(floor.maxRSS), raceEnabled)
			if r.maxRSS-floor.maxRSS > extra {
				t.Errorf("peak RSS %.1f MiB, %.1f MiB more than with the honest record alone; want at most %.0f MiB more",
					mib(r.maxRSS), mib(r.maxRSS-floor.maxRSS), mib(extra))
			}
			if r.maxRSS < 0 || r.maxRSS > hostileRSS {
				t.Errorf("peak RSS %.1f MiB; want at most %.0f MiB", mib(r.maxRSS), mib(hostileRSS))
			}
		})
	}
}

// BenchmarkReplicasHostile runs replicas and stats, as tables and as JSON,
// in process, against the honest record beside the eight of plantHostile;
// its floor, BenchmarkReplicasHonest, runs them against the honest record
// alone.
func BenchmarkReplicasHostile(b *testing.B) {
	srv := redistest.Start(b)
	plantHostile(b, setupClient(b, srv.Addr))
	benchCommands(b, srv.Addr, exitError)
}

// BenchmarkReplicasHonest is the floor of BenchmarkReplicasHostile: the
// same commands with the honest record alone.
func BenchmarkReplicasHonest(b *testing.B) {
	srv := redistest.Start(b)
	plantHonest(b, newClient(b, srv.Addr))
	benchCommands(b, srv.Addr, exitOK)
}

func benchCommands(b *testing.B, addr string, code int) {
	for _, args := range [][]string{{"replicas"}, {"replicas", "--json"}, {"stats"}, {"stats", "--json"}} {
		b.Run(strings.Join(args, "-"), func(b *testing.B) {
			args := append(args, "--addr", addr)
			b.ReportAllocs()
			for b.Loop() {
				if got := run(context.Background(), args, io.Discard, io.Discard); got != code {
					b.Fatalf("exit %d; want %d", got, code)
				}
			}
		})
	}
}

// TestTablesEscapePresenceHostile: the tables of replicas and stats print
// escaped every string of a record, even of one that ListReplicas would
// have refused.
func TestTablesEscapePresenceHostile(t *testing.T) {
	rep := tiercache.Replica{
		ID: "\x1b[2J", Host: "\x1b]0;pwned\a", Version: "\u009b31m", Breaker: "\u202eclosed",
		Stats: tiercache.Stats{Keyspaces: map[string]tiercache.KeyspaceStats{"\x1b[31mred": {L1Hits: 1}, "del\x7f": {}}},
	}
	var out, errOut bytes.Buffer
	printReplicas(&out, []tiercache.Replica{rep}, time.Now())
	all := map[string]*keyspaceStats{}
	for name, ks := range rep.Stats.Keyspaces {
		s := &keyspaceStats{Replicas: map[string]statsRow{}}
		s.add(rep.ID, ks)
		all[name] = s
	}
	printStats(&out, &errOut, all, "ns")
	text := out.String() + errOut.String()
	if i := strings.IndexFunc(text, func(r rune) bool { return r != '\n' && !strconv.IsPrint(r) }); i >= 0 {
		t.Errorf("a table holds a character that is not printable at %d:\n%q", i, text)
	}
	for _, want := range []string{`"\x1b[2J"`, `"\x1b]0;pwned\a"`, `"\u009b31m"`, `"\u202eclosed"`, `"\x1b[31mred"`, `"del\x7f"`} {
		if !strings.Contains(text, want) {
			t.Errorf("the tables lack %s:\n%s", want, text)
		}
	}
}
