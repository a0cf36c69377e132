package tiercache_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tiercache/tiercache"
	"github.com/tiercache/tiercache/bus"
	"github.com/tiercache/tiercache/codec"
	"github.com/tiercache/tiercache/internal/redistest"
)

// The bounds oracle: one test per promise of bounded consistency, each a
// table of runs of three replicas, writers and readers against a shared
// in-test database, with faults. Every loop is bounded by a count and by a
// deadline; a fault's length is waited with a timer, everything else with
// channels and invalidation hooks.
//
//   - TestBoundFencedFill: no store of a loaded value survives a write or
//     delete made after the miss that started the load.
//   - TestBoundTagsInFlight: InvalidateTags fences the loads in flight of
//     the values it tags, and every call publishes an invalidation.
//   - TestBoundMaxStaleness: no replica serves a replaced value from L1
//     more than Config.MaxStaleness after it was replaced, whatever fails.
//   - TestBoundReplicaAcks: with Config.WriteReplicaAcks, no acknowledged
//     write is lost by a failover.

const (
	boundKeys      = 200
	boundLoad      = 500 * time.Microsecond // the loader's latency
	boundWarm      = 300                    // writes of writer 0 before the fault
	boundWarmMax   = 3 * time.Second        // the fault comes by then all the same
	boundRun       = 3 * time.Second
	boundTail      = 700 * time.Millisecond // the run goes on this long after a fault
	boundHard      = 25 * time.Second       // no loop of a run goes past this
	boundWritesMax = 200_000                // per writer
	boundReadsMax  = 400_000                // per reader
	boundExamples  = 5                      // stale reads described in the log
	markerOrigin   = "bound-marker"
	markerPrefix   = "~mark-"
)

// boundDB is the in-test database: per key, a version that every write
// raises (a deletion is a version too), when the cache write of each
// version was issued and whether it was acknowledged.
type boundDB struct {
	mu   sync.Mutex // protects rows
	rows map[string]*boundRow
}

type boundRow struct {
	version int         // current version; 1 at the start
	deleted bool        // the current version is a deletion
	issued  []time.Time // issued[v]: when the cache write of version v began; zero before
	acked   []bool      // acked[v]: that write returned nil
	failed  []bool      // failed[v]: that write returned an error
}

// newBoundDB holds every key at version 1.
func newBoundDB(keys []string) *boundDB {
	d := &boundDB{rows: make(map[string]*boundRow, len(keys))}
	for _, k := range keys {
		d.rows[k] = &boundRow{version: 1, issued: make([]time.Time, 2), acked: make([]bool, 2), failed: make([]bool, 2)}
	}
	return d
}

// update makes a new version of key, a deletion if deleted, and returns it.
func (d *boundDB) update(key string, deleted bool) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	r := d.rows[key]
	r.version++
	r.deleted = deleted
	r.issued = append(r.issued, time.Time{})
	r.acked = append(r.acked, false)
	r.failed = append(r.failed, false)
	return r.version
}

// issue records that the cache write of version v of key begins now.
func (d *boundDB) issue(key string, v int) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.rows[key].issued[v] = time.Now()
}

// ack records that the cache write of version v of key returned nil.
func (d *boundDB) ack(key string, v int) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.rows[key].acked[v] = true
}

// fail records that the cache write of version v of key returned an error:
// no replica can be required to hear of it.
func (d *boundDB) fail(key string, v int) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.rows[key].failed[v] = true
}

// read returns key's current version and whether it is a deletion.
func (d *boundDB) read(key string) (int, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	r := d.rows[key]
	return r.version, r.deleted
}

// newestAcked returns the newest version of key whose cache write returned
// nil, 0 if none.
func (d *boundDB) newestAcked(key string) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	r := d.rows[key]
	for v := len(r.acked) - 1; v >= 2; v-- {
		if r.acked[v] {
			return v
		}
	}
	return 0
}

// ackedAbove returns how many writes of versions of key above v were
// acknowledged.
func (d *boundDB) ackedAbove(key string, v int) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	n := 0
	for _, ok := range d.rows[key].acked[v+1:] {
		if ok {
			n++
		}
	}
	return n
}

// replacedFor returns how long before start the first cache write of a
// version of key newer than v was issued (of an acknowledged one, with
// ackedOnly; never of one that failed), and whether one had been.
func (d *boundDB) replacedFor(key string, v int, start time.Time, ackedOnly bool) (time.Duration, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	r := d.rows[key]
	for w := v + 1; w < len(r.issued); w++ {
		at := r.issued[w]
		if at.IsZero() || !at.Before(start) {
			return 0, false // issued later, or not yet: so are the newer ones
		}
		if r.failed[w] {
			continue
		}
		if !ackedOnly || r.acked[w] {
			return start.Sub(at), true
		}
	}
	return 0, false
}

// loader returns a loader of d that reads the row, then waits delay (the
// query's latency: a timer, not a synchronisation) before it returns, so
// that what it returns may be replaced while it waits; loads counts its
// calls. A deleted row is ErrNotFound.
func (d *boundDB) loader(delay time.Duration, loads *atomic.Int64) tiercache.Loader[string, int] {
	return func(ctx context.Context, key string) (int, error) {
		loads.Add(1)
		v, deleted := d.read(key)
		if delay > 0 {
			t := time.NewTimer(delay)
			select {
			case <-t.C:
			case <-ctx.Done():
				t.Stop()
				return 0, ctx.Err()
			}
		}
		if deleted {
			return 0, fmt.Errorf("db: %s deleted at v%d: %w", key, v, tiercache.ErrNotFound)
		}
		return v, nil
	}
}

// boundKeyNames returns n keys, each padded to pad bytes (0: no padding).
func boundKeyNames(n, pad int) []string {
	keys := make([]string, n)
	for i := range keys {
		k := fmt.Sprintf("k%03d", i)
		if pad > len(k) {
			k += "-" + strings.Repeat("x", pad-len(k)-1)
		}
		keys[i] = k
	}
	return keys
}

// hot returns a source of indexes in [0, n), Zipf-distributed so that a few
// keys take most of the traffic, as in production: readers and writers
// then meet on the same keys, where fills and writes race.
func hot(seed1, seed2 uint64, n int) func() int {
	z := rand.NewZipf(rand.New(rand.NewPCG(seed1, seed2)), 1.1, 1, uint64(n-1))
	return func() int { return int(z.Uint64()) }
}

// owned returns the keys writer w of two writes: every other one.
func owned(keys []string, w int) []string {
	var out []string
	for i, k := range keys {
		if i%2 == w {
			out = append(out, k)
		}
	}
	return out
}

// ledger knows, per replica and key, the delivered floor: the newest
// version whose write was acknowledged and then delivered to that replica.
// A write is delivered to a replica once its hook has applied either a
// marker, an invalidation of a key no replica uses, that the writer
// published after the write returned (pub/sub hands one server's messages
// to each subscriber in the order it published them, so the write's own
// invalidation was applied before the marker), or a reset or flush of the
// keyspace that came after the write returned (it evicts at least what the
// write's invalidation would have). Per replica, not global: a replica that
// hears nothing has nothing delivered.
type ledger struct {
	keyspace string
	channel  string
	events   bool // keep each replica's invalidations of the keyspace, in order

	mu    sync.Mutex              // protects acked and marks
	acked map[string]int          // key -> newest acknowledged version
	marks map[string][]keyVersion // marker id -> the versions it delivers
	reps  []*ledgerReplica
}

type keyVersion struct {
	key string
	v   int
}

type ledgerReplica struct {
	mu      sync.Mutex         // protects the fields below
	raises  map[string][]raise // per key, the floor's raises in order
	markers int                // markers applied
	resets  int                // resets and flushes of the keyspace applied
	events  []hookEvent        // with ledger.events: what the hook applied, in order
}

// raise is a floor reached at a time.
type raise struct {
	v  int
	at time.Time
}

// hookEvent is one invalidation of the keyspace applied by a replica: a
// marker (marker set), or one from a publisher.
type hookEvent struct {
	marker string
	origin string
	keys   int // keys and tags named
	flush  bool
}

func newLedger(namespace, keyspace string, replicas int, events bool) *ledger {
	l := &ledger{
		keyspace: keyspace,
		channel:  namespace + ":invalidate",
		events:   events,
		acked:    make(map[string]int),
		marks:    make(map[string][]keyVersion),
	}
	for range replicas {
		l.reps = append(l.reps, &ledgerReplica{raises: make(map[string][]raise)})
	}
	return l
}

// hook returns replica r's invalidation hook.
func (l *ledger) hook(r int) func(tiercache.Invalidation) {
	rep := l.reps[r]
	return func(i tiercache.Invalidation) {
		now := time.Now()
		l.mu.Lock()
		defer l.mu.Unlock()
		rep.mu.Lock()
		defer rep.mu.Unlock()
		if i.Reset || i.Flush && (i.Keyspace == "" || i.Keyspace == l.keyspace) {
			rep.resets++
			for k, v := range l.acked {
				rep.raise(k, v, now)
			}
		}
		if i.Keyspace != l.keyspace {
			return
		}
		if i.Origin == markerOrigin {
			for _, mk := range i.Keys {
				id := strings.TrimPrefix(mk, markerPrefix)
				for _, kv := range l.marks[id] {
					rep.raise(kv.key, kv.v, now)
				}
				rep.markers++
				if l.events {
					rep.events = append(rep.events, hookEvent{marker: id})
				}
			}
			return
		}
		if l.events {
			rep.events = append(rep.events, hookEvent{origin: i.Origin, keys: len(i.Keys) + len(i.Tags), flush: i.Flush})
		}
	}
}

// raise raises key's floor to v at at, if v is higher. The caller holds
// r.mu.
func (r *ledgerReplica) raise(key string, v int, at time.Time) {
	rs := r.raises[key]
	if len(rs) > 0 && rs[len(rs)-1].v >= v {
		return
	}
	r.raises[key] = append(rs, raise{v, at})
}

// floor returns replica r's delivered floor of key: 0 before any delivery.
func (l *ledger) floor(r int, key string) int {
	rep := l.reps[r]
	rep.mu.Lock()
	defer rep.mu.Unlock()
	rs := rep.raises[key]
	if len(rs) == 0 {
		return 0
	}
	return rs[len(rs)-1].v
}

// window returns how long before start a version of key newer than v was
// delivered to replica r.
func (l *ledger) window(r int, key string, v int, start time.Time) time.Duration {
	rep := l.reps[r]
	rep.mu.Lock()
	defer rep.mu.Unlock()
	for _, x := range rep.raises[key] {
		if x.v > v {
			return start.Sub(x.at)
		}
	}
	return 0
}

// ack records that the writes of kvs were acknowledged, and publishes
// marker id, which delivers them to each replica that applies it.
func (l *ledger) ack(ctx context.Context, pub *redis.Client, id string, kvs []keyVersion) error {
	l.mu.Lock()
	for _, kv := range kvs {
		if kv.v > l.acked[kv.key] {
			l.acked[kv.key] = kv.v
		}
	}
	l.marks[id] = kvs
	l.mu.Unlock()
	m := bus.Message{Version: bus.WireVersion, Origin: markerOrigin, Keyspace: l.keyspace, Keys: []string{markerPrefix + id}}
	b, err := m.Marshal()
	if err != nil {
		return err
	}
	return pub.Publish(ctx, l.channel, b).Err()
}

// counts returns the markers and the resets or flushes replica r applied.
func (l *ledger) counts(r int) (markers, resets int) {
	rep := l.reps[r]
	rep.mu.Lock()
	defer rep.mu.Unlock()
	return rep.markers, rep.resets
}

// tally counts reads, the stale ones, those stale past a bound, and the
// longest stale window, and keeps a few stale reads to describe.
type tally struct {
	bound    time.Duration
	reads    atomic.Int64
	stale    atomic.Int64
	past     atomic.Int64
	longest  atomic.Int64 // nanoseconds
	mu       sync.Mutex   // protects examples
	examples []string
}

// staleRead counts a read stale for window, described by what.
func (t *tally) staleRead(window time.Duration, what func() string) {
	t.stale.Add(1)
	for cur := t.longest.Load(); int64(window) > cur && !t.longest.CompareAndSwap(cur, int64(window)); cur = t.longest.Load() {
	}
	if window <= t.bound {
		return
	}
	t.past.Add(1)
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.examples) < boundExamples {
		t.examples = append(t.examples, what())
	}
}

func (t *tally) String() string {
	return fmt.Sprintf("%d reads, %d stale past the bound (%v), longest window %v",
		t.reads.Load(), t.past.Load(), t.bound, time.Duration(t.longest.Load()))
}

// startBoundReplica starts a Cache on client with hook (nil: none); it is
// stopped in t.Cleanup.
func startBoundReplica(t *testing.T, client redis.UniversalClient, cfg tiercache.Config, hook func(tiercache.Invalidation)) *tiercache.Cache {
	t.Helper()
	var opts []tiercache.Option
	if hook != nil {
		opts = append(opts, tiercache.WithInvalidationHook(hook))
	}
	c, err := tiercache.New(client, cfg, opts...)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	if err := c.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
		defer cancel()
		if err := c.Stop(ctx); err != nil {
			t.Errorf("Stop = %v", err)
		}
	})
	return c
}

// proxiedClients returns a client function for three replicas on srv:
// replica 2 reaches it through proxy.
func proxiedClients(t *testing.T, srv *redistest.Server, proxy *redistest.Proxy) func(i int) *redis.Client {
	return func(i int) *redis.Client {
		o := srv.Options()
		if i == 2 {
			o.Addr = proxy.Addr
		}
		c := newPlainClient(o)
		t.Cleanup(func() { c.Close() })
		return c
	}
}

// run is the clock of one run: writers stop at stop or at its deadline,
// readers when the writers are done.
type run struct {
	stop     chan struct{} // closed by the controller: the writers stop
	done     chan struct{} // closed when every writer returned: the readers stop
	warm     chan struct{} // closed once writer 0 made boundWarm writes
	warmOnce sync.Once
	deadline time.Time
	writers  sync.WaitGroup
	all      sync.WaitGroup
}

func newRun() *run {
	return &run{
		stop:     make(chan struct{}),
		done:     make(chan struct{}),
		warm:     make(chan struct{}),
		deadline: time.Now().Add(boundHard),
	}
}

// over reports whether ch is closed or the deadline passed.
func (r *run) over(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return time.Now().After(r.deadline)
	}
}

// writer runs fn(i) for i = 1.. until the writers stop.
func (r *run) writer(w int, fn func(i int)) {
	r.writers.Add(1)
	r.all.Go(func() {
		defer r.writers.Done()
		for i := 1; i <= boundWritesMax && !r.over(r.stop); i++ {
			fn(i)
			if w == 0 && i == boundWarm {
				r.warmOnce.Do(func() { close(r.warm) })
			}
		}
	})
}

// reader runs fn(n) for n = 0.. until the writers are done.
func (r *run) reader(fn func(n int)) {
	r.all.Go(func() {
		for n := 0; n < boundReadsMax && !r.over(r.done); n++ {
			fn(n)
		}
	})
}

// control runs fault (nil: none) once writer 0 is warm, or after
// boundWarmMax, then lets the run go on for tail and stops the writers;
// without a fault the run lasts boundRun. It returns when every goroutine
// of the run returned, and whether the fault ran.
func (r *run) control(fault func(), tail time.Duration) (faulted bool) {
	r.all.Go(func() {
		r.writers.Wait()
		close(r.done)
	})
	wait := func(d time.Duration) {
		t := time.NewTimer(d)
		defer t.Stop()
		<-t.C // the run's length, not a synchronisation
	}
	if fault == nil {
		wait(boundRun)
	} else {
		t := time.NewTimer(boundWarmMax)
		select {
		case <-r.warm:
		case <-t.C:
		}
		t.Stop()
		fault()
		faulted = true
		wait(tail)
	}
	close(r.stop)
	r.all.Wait()
	return faulted
}

// pubsubAddrs returns the addresses, as CLIENT LIST gives them, of the
// pub/sub connections srv holds.
func pubsubAddrs(t *testing.T, srv *redistest.Server) map[string]bool {
	admin := newPlainClient(srv.Options())
	defer admin.Close()
	list, err := admin.ClientList(context.Background()).Result()
	if err != nil {
		t.Errorf("CLIENT LIST: %v", err)
		return nil
	}
	addrs := map[string]bool{}
	for line := range strings.Lines(list) {
		fields := strings.Fields(line)
		if !slices.Contains(fields, "flags=P") {
			continue
		}
		for _, f := range fields {
			if a, ok := strings.CutPrefix(f, "addr="); ok {
				addrs[a] = true
			}
		}
	}
	return addrs
}

// TestBoundFencedFill checks fenced fills: no store into Redis of a loaded
// value survives a write or delete of its key made after the miss that
// started the load, on any replica, with L1 on or off, whatever the bus's
// health. Three replicas on one redis-server share 200 keys (Zipf: a few
// hot ones take most of the traffic) and a database; replicas 0 and 1
// write, each key by one writer, cache-aside: a new row then Set, a new
// row then Delete (the next read loads it), or the row deleted then
// Delete, in turn. All three read with GetOrLoad (and one read in five
// with Get); the loader reads the database, then takes 0.5 ms to return.
// A read is stale when it started after a newer version's write was
// acknowledged and delivered to the reading replica (see ledger) and
// returned an older version (for a deleted row: any version older than
// the deletion); its window runs from that delivery to the read's start.
// There must be none.
//
//   - NoLeases: no fault, L1 on, no leases.
//   - DisableL1: the same without L1, where the fill guard has nothing to
//     compare.
//   - SilencedSubscription: replica 2's subscription is cut for 2 s at the
//     proxy while its data path works; a 20 ms L1 TTL keeps it loading and
//     filling meanwhile, deaf to the deletes made elsewhere.
func TestBoundFencedFill(t *testing.T) {
	tests := []struct {
		give  string
		cfg   tiercache.KeyspaceConfig
		fault func(*testing.T, *redistest.Server, *redistest.Proxy)
	}{
		{"FencedFill_NoLeases", tiercache.KeyspaceConfig{}, nil},
		{"FencedFill_DisableL1", tiercache.KeyspaceConfig{DisableL1: true}, nil},
		{"FencedFill_SilencedSubscription", tiercache.KeyspaceConfig{L1TTL: 20 * time.Millisecond}, partition},
	}
	for _, tt := range tests {
		t.Run(tt.give, func(t *testing.T) {
			srv := redistest.Start(t)
			proxy := redistest.StartProxy(t, srv.Addr)
			const ns = "ff"
			keys := boundKeyNames(boundKeys, 0)
			db := newBoundDB(keys)
			led := newLedger(ns, "v", 3, false)
			pub := newPlainClient(srv.Options())
			defer pub.Close()
			client := proxiedClients(t, srv, proxy)
			kss := make([]*tiercache.Keyspace[string, int], 3)
			for i := range kss {
				c := startBoundReplica(t, client(i), tiercache.Config{Namespace: ns}, led.hook(i))
				kss[i] = mustKeyspace[string, int](t, c, "v", tt.cfg)
			}

			var (
				ctx        = context.Background()
				rn         = newRun()
				reads      = &tally{}
				loads      [3]atomic.Int64
				faulting   atomic.Bool
				faultLoads atomic.Int64 // replica 2's loads while the fault lasts
				sets, dels atomic.Int64
				failed     atomic.Int64
			)
			for w := range 2 {
				mine := owned(keys, w)
				pick := hot(uint64(w), 1, len(mine))
				rn.writer(w, func(i int) {
					k := mine[pick()]
					// In turn: a new row then Set; a new row then Delete (the
					// next read loads it); the row deleted, then Delete.
					op := i % 3
					v := db.update(k, op == 2)
					db.issue(k, v)
					var err error
					if op == 0 {
						err = kss[w].Set(ctx, k, v)
					} else {
						err = kss[w].Delete(ctx, k)
					}
					if err != nil {
						failed.Add(1)
						return // not acknowledged: promises nothing
					}
					if op == 0 {
						sets.Add(1)
					} else {
						dels.Add(1)
					}
					if err := led.ack(ctx, pub, fmt.Sprintf("%d-%d", w, i), []keyVersion{{k, v}}); err != nil {
						t.Errorf("publish marker: %v", err)
					}
				})
			}
			for r := range 3 {
				load := db.loader(boundLoad, &loads[r])
				if r == 2 {
					inner := load
					load = func(ctx context.Context, k string) (int, error) {
						if faulting.Load() {
							faultLoads.Add(1)
						}
						return inner(ctx, k)
					}
				}
				for g := range 2 {
					pick := hot(uint64(r), uint64(g)+10, len(keys))
					rn.reader(func(n int) {
						k := keys[pick()]
						get := n%5 == 0
						floor := led.floor(r, k)
						start := time.Now()
						var v int
						var err error
						if get {
							v, err = kss[r].Get(ctx, k)
						} else {
							v, err = kss[r].GetOrLoad(ctx, k, load)
						}
						if err != nil {
							return // a miss, a deleted row, or Redis unreachable: not a stale read
						}
						reads.reads.Add(1)
						if v < floor {
							w := led.window(r, k, v, start)
							reads.staleRead(w, func() string {
								return fmt.Sprintf("replica %d %s(%s) = v%d, %v after v%d was delivered to it",
									r, map[bool]string{true: "Get", false: "GetOrLoad"}[get], k, v, w, floor)
							})
						}
					})
				}
			}
			var fault func()
			if tt.fault != nil {
				fault = func() {
					faulting.Store(true)
					defer faulting.Store(false)
					tt.fault(t, srv, proxy)
				}
			}
			faulted := rn.control(fault, boundTail)

			var prevented uint64
			var deliveries []string
			for i, ks := range kss {
				prevented += ks.Stats().StaleFillsPrevented
				m, rs := led.counts(i)
				deliveries = append(deliveries, fmt.Sprintf("replica %d: %d markers, %d resets, %d loads", i, m, rs, loads[i].Load()))
				if m == 0 {
					t.Errorf("replica %d applied no marker: nothing was delivered, the run proves nothing", i)
				}
			}
			t.Logf("%s: %s; %d reads stale in all", tt.give, reads, reads.stale.Load())
			t.Logf("%s: %d sets and %d deletes acknowledged, %d failed; %d fills refused by the guard; %s; replica 2 loaded %d times during the fault",
				tt.give, sets.Load(), dels.Load(), failed.Load(), prevented, strings.Join(deliveries, ", "), faultLoads.Load())
			for _, e := range reads.examples {
				t.Logf("stale: %s", e)
			}
			if n := reads.stale.Load(); n != 0 {
				t.Errorf("%d stale reads of %d; want none", n, reads.reads.Load())
			}
			if reads.reads.Load() < 300 || sets.Load()+dels.Load() < 100 {
				t.Errorf("only %d reads and %d writes: the run proves nothing", reads.reads.Load(), sets.Load()+dels.Load())
			}
			if tt.fault != nil && (!faulted || faultLoads.Load() == 0) {
				t.Errorf("fault ran: %v; replica 2 loaded %d times during it; want it loading while silenced", faulted, faultLoads.Load())
			}
		})
	}
}

// TestBoundTagsInFlight checks that InvalidateTags fences the loads in
// flight: a value loaded before the call, on any replica, is never stored
// after it, and that every call publishes at least one invalidation of the
// keyspace that every replica's hook sees. 200 keys in four tags (a
// tagger); replicas 0 and 1 update the database for every key of a tag,
// then call InvalidateTags; all three read with GetOrLoad and the 0.5 ms
// loader. A read is stale when it started after the call returned and was
// delivered to the reader (the ledger's marker, published after the call
// returned, was applied there) and returned a version older than the
// database's at the call; its window runs from that delivery. There must be
// none, and no call without an invalidation of the keyspace from its
// replica between the marker of that writer's previous call and its own.
func TestBoundTagsInFlight(t *testing.T) {
	tests := []struct {
		give string
		cfg  tiercache.KeyspaceConfig
	}{
		{"TagsInFlight_L1", tiercache.KeyspaceConfig{}},
		{"TagsInFlight_DisableL1", tiercache.KeyspaceConfig{DisableL1: true}},
	}
	const tags = 4
	keys := boundKeyNames(boundKeys, 0)
	tagOf := make(map[string]string, len(keys)) // read-only from here on
	byTag := map[string][]string{}
	for i, k := range keys {
		tag := fmt.Sprint("t", i%tags)
		tagOf[k] = tag
		byTag[tag] = append(byTag[tag], k)
	}
	for _, tt := range tests {
		t.Run(tt.give, func(t *testing.T) {
			srv := redistest.Start(t)
			const ns = "tf"
			db := newBoundDB(keys)
			led := newLedger(ns, "tagged", 3, true)
			pub := newPlainClient(srv.Options())
			defer pub.Close()
			kss := make([]*tiercache.Keyspace[string, int], 3)
			ids := make([]string, 3)
			for i := range kss {
				client := newPlainClient(srv.Options())
				t.Cleanup(func() { client.Close() })
				c := startBoundReplica(t, client, tiercache.Config{Namespace: ns}, led.hook(i))
				ids[i] = c.InstanceID()
				kss[i] = mustKeyspace(t, c, "tagged", tt.cfg,
					tiercache.WithTags(func(k string, _ int) []string { return []string{tagOf[k]} }))
			}

			var (
				ctx    = context.Background()
				rn     = newRun()
				reads  = &tally{}
				loads  [3]atomic.Int64
				calls  [2]atomic.Int64 // acknowledged, per writer
				failed atomic.Int64
			)
			for w := range 2 {
				rng := rand.New(rand.NewPCG(uint64(w), 2))
				rn.writer(w, func(i int) {
					tag := fmt.Sprint("t", rng.IntN(tags))
					kvs := make([]keyVersion, 0, len(byTag[tag]))
					for _, k := range byTag[tag] {
						kvs = append(kvs, keyVersion{k, db.update(k, false)})
					}
					if err := kss[w].InvalidateTags(ctx, tag); err != nil {
						failed.Add(1)
						return
					}
					calls[w].Add(1)
					if err := led.ack(ctx, pub, fmt.Sprintf("%d-%d", w, i), kvs); err != nil {
						t.Errorf("publish marker: %v", err)
					}
				})
			}
			for r := range 3 {
				load := db.loader(boundLoad, &loads[r])
				for g := range 2 {
					pick := hot(uint64(r), uint64(g)+20, len(keys))
					rn.reader(func(int) {
						k := keys[pick()]
						floor := led.floor(r, k)
						start := time.Now()
						v, err := kss[r].GetOrLoad(ctx, k, load)
						if err != nil {
							return
						}
						reads.reads.Add(1)
						if v < floor {
							w := led.window(r, k, v, start)
							reads.staleRead(w, func() string {
								return fmt.Sprintf("replica %d GetOrLoad(%s) = v%d, %v after InvalidateTags(%s) at v%d was delivered to it",
									r, k, v, w, tagOf[k], floor)
							})
						}
					})
				}
			}
			rn.control(nil, 0)

			// Each call of writer w must show, on every replica, at least
			// one invalidation of the keyspace from w between the marker of
			// w's previous acknowledged call and its own.
			var unseen, checked int
			var deliveries []string
			for r, rep := range led.reps {
				rep.mu.Lock()
				seen := [2]int{} // invalidations from writer w since its last marker
				for _, e := range rep.events {
					for w := range 2 {
						switch {
						case e.marker != "" && strings.HasPrefix(e.marker, fmt.Sprint(w, "-")):
							checked++
							if seen[w] == 0 {
								unseen++
							}
							seen[w] = 0
						case e.marker == "" && e.origin == ids[w] && (e.keys > 0 || e.flush):
							seen[w]++
						}
					}
				}
				rep.mu.Unlock()
				m, rs := led.counts(r)
				deliveries = append(deliveries, fmt.Sprintf("replica %d: %d markers, %d resets, %d loads", r, m, rs, loads[r].Load()))
				if m == 0 {
					t.Errorf("replica %d applied no marker: nothing was delivered, the run proves nothing", r)
				}
			}
			t.Logf("%s: %s; %d reads stale in all", tt.give, reads, reads.stale.Load())
			t.Logf("%s: %d+%d InvalidateTags acknowledged, %d failed; %d of %d (call, replica) pairs saw no invalidation of the keyspace from the call; %s",
				tt.give, calls[0].Load(), calls[1].Load(), failed.Load(), unseen, checked, strings.Join(deliveries, ", "))
			for _, e := range reads.examples {
				t.Logf("stale: %s", e)
			}
			if n := reads.stale.Load(); n != 0 {
				t.Errorf("%d stale reads of %d; want none", n, reads.reads.Load())
			}
			if unseen != 0 {
				t.Errorf("%d of %d (call, replica) pairs: the replica's hook saw no invalidation of the keyspace from the call; want every call seen everywhere", unseen, checked)
			}
			if reads.reads.Load() < 300 || calls[0].Load()+calls[1].Load() < 20 {
				t.Errorf("only %d reads and %d calls: the run proves nothing", reads.reads.Load(), calls[0].Load()+calls[1].Load())
			}
		})
	}
}

// TestBoundMaxStaleness checks Config.MaxStaleness at its default: no
// replica serves a replaced value more than DefaultMaxStaleness after it
// was replaced, whatever fails. Replicas 0 and 1 Set 200 keys to rising
// versions of the database, replica 2 (through a proxy) and the others read
// them with GetOrLoad. A read that returned version v of a key whose
// version v+1 had been issued before the read started is stale for the
// read's start minus the time the Set of v+1 began (conservative: the
// replaced value is counted from its write's first instant). The longest
// window on replica 2 must be at most DefaultMaxStaleness + 50ms.
//
//   - Blackhole: replica 2's link to Redis, data and subscription, is
//     blackholed for 3 s (proxy Partition).
//   - Throttle: replica 2's subscription is throttled to 256 KB/s for 3 s
//     (again on each resubscription) while 900-byte keys make the writers
//     publish more than that.
func TestBoundMaxStaleness(t *testing.T) {
	type env struct {
		srv   *redistest.Server
		proxy *redistest.Proxy
		reset <-chan struct{} // a reset of replica 2 was applied
	}
	const (
		faultFor = 3 * time.Second
		rate     = 256 << 10
		bound    = tiercache.DefaultMaxStaleness + 50*time.Millisecond
	)
	tests := []struct {
		give    string
		keyPad  int // key length
		writers int // per writing replica
		fault   func(t *testing.T, e env)
	}{
		{"MaxStaleness_Blackhole", 0, 1, func(t *testing.T, e env) {
			e.proxy.Partition()
			wait := time.NewTimer(faultFor)
			<-wait.C // the fault's length, not a synchronisation
			e.proxy.Heal()
		}},
		{"MaxStaleness_Throttle", 900, 4, func(t *testing.T, e env) {
			throttle := func() int {
				subs := pubsubAddrs(t, e.srv)
				return e.proxy.Throttle(func(a string) bool { return subs[a] }, rate)
			}
			if n := throttle(); n != 1 {
				t.Errorf("throttle matched %d subscriptions; want replica 2's one", n)
			}
			again := 0
			end := time.NewTimer(faultFor)
			defer end.Stop()
			for throttling := true; throttling; {
				select {
				case <-e.reset: // resubscribed: throttle the new subscription too
					again += throttle()
				case <-end.C: // the fault's length, not a synchronisation
					throttling = false
				}
			}
			e.proxy.Heal()
			t.Logf("throttled replica 2's subscription, and %d more after it resubscribed", again)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.give, func(t *testing.T) {
			srv := redistest.Start(t)
			proxy := redistest.StartProxy(t, srv.Addr)
			const ns = "ms"
			keys := boundKeyNames(boundKeys, tt.keyPad)
			db := newBoundDB(keys)
			resets := make(chan struct{}, 1)
			client := proxiedClients(t, srv, proxy)
			kss := make([]*tiercache.Keyspace[string, int], 3)
			caches := make([]*tiercache.Cache, 3)
			for i := range kss {
				var hook func(tiercache.Invalidation)
				if i == 2 {
					hook = func(inv tiercache.Invalidation) {
						if inv.Reset {
							select {
							case resets <- struct{}{}:
							default:
							}
						}
					}
				}
				caches[i] = startBoundReplica(t, client(i), tiercache.Config{Namespace: ns}, hook)
				kss[i] = mustKeyspace[string, int](t, caches[i], "v", tiercache.KeyspaceConfig{})
			}
			select { // Start's own reset
			case <-resets:
			default:
			}

			// A subscriber of its own counts what is published meanwhile.
			var published, measuring atomic.Int64
			watch := newPlainClient(srv.Options())
			defer watch.Close()
			ps := watch.Subscribe(context.Background(), ns+":invalidate")
			if _, err := ps.ReceiveTimeout(context.Background(), waitTimeout); err != nil {
				t.Fatalf("subscribe: %v", err)
			}

			var (
				ctx    = context.Background()
				rn     = newRun()
				reads  [3]*tally
				loads  [3]atomic.Int64
				sets   atomic.Int64
				failed atomic.Int64
			)
			rn.all.Go(func() {
				defer ps.Close()
				for !rn.over(rn.done) {
					msg, err := ps.ReceiveTimeout(ctx, 100*time.Millisecond)
					if m, ok := msg.(*redis.Message); err == nil && ok && measuring.Load() != 0 {
						published.Add(int64(len(m.Payload)))
					}
				}
			})
			for w := range 2 {
				mine := owned(keys, w)
				for g := range tt.writers {
					rng := rand.New(rand.NewPCG(uint64(w), uint64(g)+30))
					// Writer goroutine g of replica w: writer 0 only for g 0.
					rn.writer(w+2*g, func(int) {
						k := mine[rng.IntN(len(mine))]
						v := db.update(k, false)
						db.issue(k, v)
						if err := kss[w].Set(ctx, k, v); err != nil {
							failed.Add(1)
							return
						}
						db.ack(k, v)
						sets.Add(1)
					})
				}
			}
			for r := range 3 {
				reads[r] = &tally{bound: bound}
				load := db.loader(0, &loads[r])
				for g := range 1 + r/2 { // replica 2 reads with two goroutines
					rng := rand.New(rand.NewPCG(uint64(r), uint64(g)+40))
					rn.reader(func(int) {
						k := keys[rng.IntN(len(keys))]
						start := time.Now()
						v, err := kss[r].GetOrLoad(ctx, k, load)
						if err != nil {
							return
						}
						reads[r].reads.Add(1)
						if w, ok := db.replacedFor(k, v, start, false); ok {
							reads[r].staleRead(w, func() string {
								return fmt.Sprintf("replica %d GetOrLoad(%.4s…) = v%d at %s, %v after the Set of v%d began",
									r, k, v, start.Format("15:04:05.000"), w, v+1)
							})
						}
					})
				}
			}
			var measured time.Duration
			faulted := rn.control(func() {
				t.Logf("%s: fault from %s", tt.give, time.Now().Format("15:04:05.000"))
				measuring.Store(1)
				start := time.Now()
				tt.fault(t, env{srv: srv, proxy: proxy, reset: resets})
				measured = time.Since(start)
				measuring.Store(0)
			}, boundTail)

			bps := float64(published.Load()) / measured.Seconds()
			t.Logf("%s: replica 2: %s; %d stale in all", tt.give, reads[2], reads[2].stale.Load())
			t.Logf("%s: replicas 0, 1: %s; %s", tt.give, reads[0], reads[1])
			t.Logf("%s: %d sets acknowledged, %d failed; %.0f B/s of invalidations published during the fault; replica 2 loads %d, bus %+v",
				tt.give, sets.Load(), failed.Load(), bps, loads[2].Load(), caches[2].Stats().Bus)
			for _, e := range reads[2].examples {
				t.Logf("stale past the bound: %s", e)
			}
			if got := time.Duration(reads[2].longest.Load()); got > bound {
				t.Errorf("replica 2 served a replaced value %v after it was replaced (%d reads past the bound); want at most %v", got, reads[2].past.Load(), bound)
			}
			if !faulted || reads[2].reads.Load() < 300 || sets.Load() < 100 {
				t.Errorf("fault ran: %v, %d reads on replica 2, %d sets: the run proves nothing", faulted, reads[2].reads.Load(), sets.Load())
			}
			if tt.writers > 1 && bps <= rate {
				t.Errorf("%.0f B/s published during the throttle; want more than its %d B/s, or the subscriber never backs up", bps, rate)
			}
		})
	}
}

// TestBoundReplicaAcks checks Config.WriteReplicaAcks: with 1, no write
// whose Set returned nil is lost by a Sentinel failover. Replicas 0 and 1
// Set 200 keys, each its own half in turn, to rising versions, replica 2 and
// the others read them with Get; once writer 0 is warm, SENTINEL FAILOVER,
// and the writers stop as soon as the sentinel names the new master. Then
// each key is read from the new master: one whose stored version is below
// the newest version whose Set returned nil is an acknowledged write lost.
// With 1 there must be none, and some Sets must have returned nil; with 0
// the figure is reported only (it may be 0 by luck). Readers' stale windows
// (as in TestBoundMaxStaleness, counted from acknowledged writes only) are
// reported: a lost write leaves its key stale for the rest of the run.
func TestBoundReplicaAcks(t *testing.T) {
	tests := []struct {
		give string
		acks int
	}{
		{"ReplicaAcks_0", 0},
		{"ReplicaAcks_1", 1},
	}
	for _, tt := range tests {
		t.Run(tt.give, func(t *testing.T) {
			sn := redistest.StartSentinel(t)
			const ns = "ra"
			keys := boundKeyNames(boundKeys, 0)
			db := newBoundDB(keys)
			kss := make([]*tiercache.Keyspace[string, int], 3)
			for i := range kss {
				o := sn.FailoverOptions()
				o.ContextTimeoutEnabled = true
				o.MaxRetries = -1
				client := redis.NewFailoverClient(o)
				t.Cleanup(func() { client.Close() })
				c := startBoundReplica(t, client, tiercache.Config{Namespace: ns, WriteReplicaAcks: tt.acks}, nil)
				kss[i] = mustKeyspace[string, int](t, c, "v", tiercache.KeyspaceConfig{})
			}

			var (
				ctx         = context.Background()
				rn          = newRun()
				reads       = &tally{}
				acked       atomic.Int64
				notRepl     atomic.Int64 // failed with ErrNotReplicated
				failedOther atomic.Int64
				newMaster   string
			)
			for w := range 2 {
				mine := owned(keys, w)
				rn.writer(w, func(i int) {
					k := mine[i%len(mine)]
					v := db.update(k, false)
					db.issue(k, v)
					switch err := kss[w].Set(ctx, k, v); {
					case err == nil:
						db.ack(k, v)
						acked.Add(1)
					case errors.Is(err, tiercache.ErrNotReplicated):
						notRepl.Add(1)
					default:
						failedOther.Add(1)
					}
				})
			}
			for r := range 3 {
				rn.reader(func(n int) {
					k := keys[(n*7+r)%len(keys)]
					start := time.Now()
					v, err := kss[r].Get(ctx, k)
					if err != nil {
						return
					}
					reads.reads.Add(1)
					if w, ok := db.replacedFor(k, v, start, true); ok {
						reads.staleRead(w, func() string {
							return fmt.Sprintf("replica %d Get(%s) = v%d, %v after an acknowledged Set of a newer version began", r, k, v, w)
						})
					}
				})
			}
			rn.control(func() {
				fctx, cancel := context.WithTimeout(ctx, 30*time.Second)
				defer cancel()
				addr, err := sn.Failover(fctx)
				if err != nil {
					t.Errorf("failover: %v", err)
				}
				newMaster = addr
			}, 0)
			if newMaster == "" {
				t.Fatal("no new master")
			}

			// Read what the new master holds.
			master := newPlainClient(&redis.Options{Addr: newMaster})
			defer master.Close()
			cd, err := codec.New(codec.Options{})
			if err != nil {
				t.Fatal(err)
			}
			held, err := master.DBSize(ctx).Result()
			if err != nil {
				t.Fatalf("DBSIZE of the new master: %v", err)
			}
			var lost []string
			lostWrites := 0
			for _, k := range keys {
				want := db.newestAcked(k)
				var got int
				b, err := master.Get(ctx, kss[0].RedisKey(k)).Bytes()
				switch {
				case errors.Is(err, redis.Nil):
				case err != nil:
					t.Fatalf("GET %s from the new master: %v", k, err)
				default:
					if err := cd.Unmarshal(b, &got); err != nil {
						t.Fatalf("decode %s from the new master: %v", k, err)
					}
				}
				if got < want {
					lost = append(lost, fmt.Sprintf("%s: v%d stored, v%d acknowledged", k, got, want))
					lostWrites += db.ackedAbove(k, got)
				}
			}
			t.Logf("%s: readers: %s; %d stale in all", tt.give, reads, reads.stale.Load())
			t.Logf("%s: %d Sets acknowledged, %d failed with ErrNotReplicated, %d failed otherwise; %d keys lost an acknowledged write (%d acknowledged writes lost) on failover to %s, which holds %d keys",
				tt.give, acked.Load(), notRepl.Load(), failedOther.Load(), len(lost), lostWrites, newMaster, held)
			for _, l := range lost[:min(len(lost), boundExamples)] {
				t.Logf("lost: %s", l)
			}
			if tt.acks > 0 && len(lost) != 0 {
				t.Errorf("WriteReplicaAcks %d: %d keys lost an acknowledged write; want none", tt.acks, len(lost))
			}
			if acked.Load() == 0 {
				t.Errorf("no Set returned nil: the run proves nothing")
			}
		})
	}
}
