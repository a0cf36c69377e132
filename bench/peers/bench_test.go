package peers

import (
	"context"
	"math/rand/v2"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tiercache/tiercache/internal/redistest"
)

// benchKeys is the number of keys the L1 and L2 benchmarks cycle through.
const benchKeys = 1024

// BenchmarkL1Hit reads keys served by the local tier, one at a time: each
// peer's replica 2 reads what replica 1 wrote, after a warm-up that checks
// (with Redis' own counters) that the reads no longer reach Redis.
func BenchmarkL1Hit(b *testing.B) { benchL1(b, benchGets) }

// BenchmarkL1HitParallel is BenchmarkL1Hit from GOMAXPROCS goroutines.
func BenchmarkL1HitParallel(b *testing.B) { benchL1(b, benchGetsParallel) }

// benchL1 runs the L1 hit workload of every peer, and the raw ristretto
// floor, with run: serial or parallel.
func benchL1(b *testing.B, run func(b *testing.B, srv *redistest.Server, g getter, keys []string)) {
	srv := startRedis(b)
	for _, m := range peerMakers {
		p := m.make(b, srv)
		keys := p.keys(benchKeys)
		fill(b, p.replicas[0], keys)
		b.Run("peer="+m.name, func(b *testing.B) {
			warm(b, srv, p.replicas[1], keys)
			run(b, srv, p.replicas[1], keys)
		})
	}
	b.Run("peer=ristrettoFloor", func(b *testing.B) {
		keys := (&peer{}).keys(benchKeys)
		run(b, srv, newRistrettoFloor(b, keys), keys)
	})
}

// BenchmarkL2Hit reads keys from Redis with the local tier bypassed:
// tiercache through a keyspace with DisableL1 (on a Cache of its own, same
// keys), go-redis/cache with GetSkippingLocalCache, rueidis with Do instead
// of DoCache. goredisFloor is raw go-redis GET plus a pooled msgpack decode.
func BenchmarkL2Hit(b *testing.B) {
	srv := startRedis(b)
	for _, m := range peerMakers {
		p := m.make(b, srv)
		keys := p.keys(benchKeys)
		fill(b, p.replicas[0], keys)
		b.Run("peer="+m.name, func(b *testing.B) { benchGets(b, srv, l2Getter{p.replicas[1]}, keys) })
	}
	b.Run("peer=goredisFloor", func(b *testing.B) {
		keys := (&peer{prefix: "floor:"}).keys(benchKeys)
		benchGets(b, srv, newGoredisFloor(b, srv, keys), keys)
	})
}

// l2Getter reads a replica's Redis tier through the getter interface.
type l2Getter struct{ r replica }

func (g l2Getter) Get(ctx context.Context, key string) (Product, error) { return g.r.GetL2(ctx, key) }

// benchGets reads keys through g in turn, serially. It reports
// redis-reads/op, the lookups srv served during the loop per read (INFO
// keyspace_hits + keyspace_misses, read outside the timed loop): 0 for a
// local hit, 1 for an L2 hit. An L1 benchmark above 0 measured Redis, not
// the local tier (tiercache bypasses L1 while its bus is unhealthy, e.g. a
// health PING unanswered for ping_timeout on a starved machine).
func benchGets(b *testing.B, srv *redistest.Server, g getter, keys []string) {
	ctx := context.Background()
	before := redisReads(b, srv)
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if _, err := g.Get(ctx, keys[i%len(keys)]); err != nil {
			b.Fatal(err)
		}
		i++
	}
	b.ReportMetric(float64(redisReads(b, srv)-before)/float64(b.N), "redis-reads/op")
}

// benchGetsParallel reads keys through g from GOMAXPROCS goroutines, each
// starting at a different key, and reports redis-reads/op as benchGets.
func benchGetsParallel(b *testing.B, srv *redistest.Server, g getter, keys []string) {
	ctx := context.Background()
	var next atomic.Int64
	before := redisReads(b, srv)
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		i := int(next.Add(1)) * 317
		for pb.Next() {
			if _, err := g.Get(ctx, keys[i%len(keys)]); err != nil {
				b.Error(err)
				return
			}
			i++
		}
	})
	b.StopTimer()
	b.ReportMetric(float64(redisReads(b, srv)-before)/float64(b.N), "redis-reads/op")
}

// The Zipf workload.
const (
	zipfKeys       = 10_000
	zipfS          = 1.1 // Zipf exponent: key 0 takes about 10% of the ops
	zipfWriteEvery = 10  // one op in ten is a write
	zipfPerProc    = 2   // b.SetParallelism: goroutines per GOMAXPROCS
	zipfSamples    = 1 << 15
	// zipfMaxErrors is the share of failed ops (e.g. a Redis read past
	// tiercache's 100ms ReadTimeout on a busy machine) above which the
	// benchmark fails rather than reports.
	zipfMaxErrors = 0.01
)

// BenchmarkZipf runs the mixed workload on two replicas of each peer, two
// goroutines per core, each bound to one replica (alternately), on one
// redis-server: 90% reads and 10% writes over zipfKeys keys drawn from a
// Zipf distribution. Each write bumps the key's version, under a per-key
// lock so that writes of a key are ordered, and records it once the write
// has returned; a read that finds a version older than the one recorded
// when it began is a stale read: another replica (or a stale fill of its
// own) served a value that had already been replaced.
//
// Reported: stale-reads (in the run, b.N ops), stale/1k-reads,
// stale-own-reads (those served by the replica that had made the write they
// missed: not the invalidation window between replicas but a stale fill, or
// an invalidation of one's own write that arrives late), stale-max-lag-µs
// (the longest time from a write returning to the start of a read that
// missed it: how long a replica may serve a replaced value), errors, and
// the per-op latency p50-µs and p99-µs over reads and writes, read-p99-µs
// over reads, write-p50-µs and write-p99-µs over writes (the first
// zipfSamples ops of each goroutine). ns/op is wall time over b.N: the
// inverse of throughput.
func BenchmarkZipf(b *testing.B) {
	srv := startRedis(b)
	for _, m := range peerMakers {
		p := m.make(b, srv)
		run := newZipfRun(b, p)
		b.Run("peer="+m.name, func(b *testing.B) { benchZipf(b, run) })
	}
}

// zipfRun is the shared state of one peer's workload; it outlives the
// runs of one benchmark, so versions keep growing from one b.N to the next.
type zipfRun struct {
	replicas  [2]replica
	keys      []string
	mu        []sync.Mutex   // per key: orders the writes
	committed []atomic.Int64 // per key: the version of the last write that returned
	// committedAt is, per key, when the last write returned, in
	// nanoseconds since base. It is stored before committed, so a reader
	// that sees version v in committed sees v's time or a later one here.
	committedAt []atomic.Int64
	// committedBy is, per key, the replica (0 or 1) of the last write that
	// returned, stored before committed as committedAt is.
	committedBy []atomic.Int32
	base        time.Time
}

// newZipfRun fills every key of p with version 1, through replica 1.
func newZipfRun(tb testing.TB, p *peer) *zipfRun {
	tb.Helper()
	run := &zipfRun{
		replicas:    p.replicas,
		keys:        p.keys(zipfKeys),
		mu:          make([]sync.Mutex, zipfKeys),
		committed:   make([]atomic.Int64, zipfKeys),
		committedAt: make([]atomic.Int64, zipfKeys),
		committedBy: make([]atomic.Int32, zipfKeys),
		base:        time.Now(),
	}
	fill(tb, p.replicas[0], run.keys)
	for i := range run.committed {
		run.committed[i].Store(1)
	}
	return run
}

// write bumps key k's version through replica ri.
func (run *zipfRun) write(ctx context.Context, ri int, k int) error {
	run.mu[k].Lock()
	defer run.mu[k].Unlock()
	v := run.committed[k].Load() + 1
	if err := run.replicas[ri].Set(ctx, run.keys[k], newProduct(k, v)); err != nil {
		return err
	}
	run.committedAt[k].Store(int64(time.Since(run.base)))
	run.committedBy[k].Store(int32(ri))
	run.committed[k].Store(v)
	return nil
}

// staleRead describes a stale read: lag is how long before the read began
// the write it missed had returned (or a later write of the key: the lag is
// never overstated); own says the read was served by the replica that made
// that write (as recorded when the read began).
type staleRead struct {
	lag time.Duration
	own bool
}

// read reads key k through replica ri and reports whether it was stale.
func (run *zipfRun) read(ctx context.Context, ri int, k int) (stale bool, sr staleRead, err error) {
	want := run.committed[k].Load()
	at := time.Duration(run.committedAt[k].Load())
	by := int(run.committedBy[k].Load())
	start := time.Since(run.base)
	p, err := run.replicas[ri].Get(ctx, run.keys[k])
	if err != nil || p.Version >= want {
		return false, sr, err
	}
	return true, staleRead{lag: max(start-at, 0), own: by == ri}, nil
}

// zipfWorker is one goroutine of the workload. Its counters are its own,
// so that counting adds no shared cache line.
type zipfWorker struct {
	run    *zipfRun
	ri     int // the replica it uses
	rng    *rand.Rand
	zipf   *rand.Zipf
	lat    []time.Duration // at most zipfSamples
	write  []bool          // write[i]: lat[i] is a write's
	reads  int
	writes int
	stale  int
	own    int           // stale reads on the replica that made the write
	lag    time.Duration // the longest lag of a stale read
	errs   int
	err    error // the first
}

func (run *zipfRun) worker(id int) *zipfWorker {
	rng := rand.New(rand.NewPCG(uint64(id), uint64(time.Now().UnixNano())))
	return &zipfWorker{
		run:   run,
		ri:    id % 2,
		rng:   rng,
		zipf:  rand.NewZipf(rng, zipfS, 1, zipfKeys-1),
		lat:   make([]time.Duration, 0, zipfSamples),
		write: make([]bool, 0, zipfSamples),
	}
}

// step does one op.
func (w *zipfWorker) step(ctx context.Context) {
	k := int(w.zipf.Uint64())
	var err error
	isWrite := w.rng.IntN(zipfWriteEvery) == 0
	start := time.Now()
	if isWrite {
		err = w.run.write(ctx, w.ri, k)
		w.writes++
	} else {
		var (
			stale bool
			sr    staleRead
		)
		stale, sr, err = w.run.read(ctx, w.ri, k)
		w.reads++
		if stale {
			w.stale++
			w.lag = max(w.lag, sr.lag)
			if sr.own {
				w.own++
			}
		}
	}
	d := time.Since(start)
	if err != nil {
		w.errs++
		if w.err == nil {
			w.err = err
		}
	}
	if len(w.lat) < cap(w.lat) {
		w.lat = append(w.lat, d)
		w.write = append(w.write, isWrite)
	}
}

// zipfTotals sums the workers' counters.
type zipfTotals struct {
	reads, writes, stale, own, errs int
	lag                             time.Duration
	err                             error
	lat, rlat, wlat                 []time.Duration // all ops, reads, writes
}

func sumWorkers(ws []*zipfWorker) zipfTotals {
	var t zipfTotals
	for _, w := range ws {
		t.reads += w.reads
		t.writes += w.writes
		t.stale += w.stale
		t.own += w.own
		t.errs += w.errs
		t.lag = max(t.lag, w.lag)
		if t.err == nil {
			t.err = w.err
		}
		t.lat = append(t.lat, w.lat...)
		for i, d := range w.lat {
			if w.write[i] {
				t.wlat = append(t.wlat, d)
			} else {
				t.rlat = append(t.rlat, d)
			}
		}
	}
	return t
}

func benchZipf(b *testing.B, run *zipfRun) {
	ctx := context.Background()
	workers := make([]*zipfWorker, zipfPerProc*runtime.GOMAXPROCS(0))
	for i := range workers {
		workers[i] = run.worker(i)
	}
	var next atomic.Int64
	b.ReportAllocs()
	b.SetParallelism(zipfPerProc)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		w := workers[next.Add(1)-1]
		for pb.Next() {
			w.step(ctx)
		}
	})
	b.StopTimer()
	t := sumWorkers(workers)
	if t.errs > 0 {
		b.Logf("%d of %d ops failed; the first: %v", t.errs, t.reads+t.writes, t.err)
		if float64(t.errs) > zipfMaxErrors*float64(t.reads+t.writes) {
			b.Fatalf("more than %.0f%% of ops failed", 100*zipfMaxErrors)
		}
	}
	b.ReportMetric(float64(t.stale), "stale-reads")
	b.ReportMetric(float64(t.own), "stale-own-reads")
	b.ReportMetric(1000*float64(t.stale)/float64(max(t.reads, 1)), "stale/1k-reads")
	b.ReportMetric(float64(t.lag)/float64(time.Microsecond), "stale-max-lag-µs")
	b.ReportMetric(float64(t.errs), "errors")
	b.ReportMetric(percentile(t.lat, 50), "p50-µs")
	b.ReportMetric(percentile(t.lat, 99), "p99-µs")
	b.ReportMetric(percentile(t.rlat, 99), "read-p99-µs")
	b.ReportMetric(percentile(t.wlat, 50), "write-p50-µs")
	b.ReportMetric(percentile(t.wlat, 99), "write-p99-µs")
}

// percentile returns the p-th percentile of d, in microseconds (nearest
// rank); it sorts d.
func percentile(d []time.Duration, p float64) float64 {
	if len(d) == 0 {
		return 0
	}
	slices.Sort(d)
	i := int(p / 100 * float64(len(d)-1))
	return float64(d[i]) / float64(time.Microsecond)
}
