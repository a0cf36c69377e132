package catalog

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	mrand "math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/fx"

	"github.com/tiercache/tiercache"
)

// Defaults of DemoOptions.
const (
	DefaultDemoReplicas      = 3
	DefaultDemoProducts      = 1000
	DefaultDemoCategories    = 20
	DefaultDemoDuration      = 10 * time.Second
	DefaultDemoMaxOps        = 1_000_000
	DefaultDemoWorkers       = 8
	DefaultDemoUpdateShare   = 0.05
	DefaultDemoListingShare  = 0.10
	DefaultDemoZipfS         = 1.1
	DefaultDemoViewsEvery    = 100
	DefaultDemoViewsInterval = time.Second
	DefaultDemoProgressEvery = time.Second
)

// demoRequestTimeout bounds one HTTP request of the load.
const demoRequestTimeout = 10 * time.Second

// demoStopTimeout bounds the stop of one replica.
const demoStopTimeout = 30 * time.Second

// DemoOptions configure RunDemo. Zero fields take the defaults above.
type DemoOptions struct {
	// RedisAddr is the host:port of the Redis the replicas share. Required.
	RedisAddr string `json:"redis_addr"`
	// Replicas is the number of replicas, each an fx app with its own
	// Redis client and HTTP server on a loopback port.
	Replicas int `json:"replicas"`
	// Products and Categories size the catalog.
	Products   int `json:"products"`
	Categories int `json:"categories"`
	// Duration bounds each of the two runs of the load (cache on, cache
	// off), and MaxOps the requests of each.
	Duration time.Duration `json:"duration"`
	MaxOps   int64         `json:"max_ops"`
	// Workers is the number of concurrent clients.
	Workers int `json:"workers"`
	// UpdateShare is the share of requests that update a product, and
	// ListingShare of those that read a category listing; the rest read
	// product pages. Negative: none.
	UpdateShare  float64 `json:"update_share"`
	ListingShare float64 `json:"listing_share"`
	// ZipfS is the exponent of the Zipf law that picks products and
	// categories (> 1; larger is more skewed).
	ZipfS float64 `json:"zipf_s"`
	// Seed seeds the load's random choices (default 1).
	Seed uint64 `json:"seed"`
	// ViewsEvery and ViewsInterval configure the view counter
	// (counter.every, counter.interval).
	ViewsEvery    int64         `json:"views_every"`
	ViewsInterval time.Duration `json:"views_interval"`
	// QueryLatency makes each database statement wait this long,
	// emulating a database across the network (Config.QueryLatency);
	// default 0: SQLite in-process, microseconds a statement.
	QueryLatency time.Duration `json:"query_latency"`
	// ProgressEvery is the time between two progress lines.
	ProgressEvery time.Duration `json:"progress_every"`
	// Dir holds the SQLite files; default a temporary directory, removed
	// at the end.
	Dir string `json:"dir"`
	// KillPubSubAt, when positive, sends CLIENT KILL TYPE pubsub to Redis
	// that long into the run with the cache, so that every replica loses
	// its subscription at once, and measures the L1 hit ratio on each side
	// of it (Phase.PubSubKill).
	KillPubSubAt time.Duration `json:"kill_pubsub_at"`
	// NoReplay turns replay off on the replicas (replay.max_count -1):
	// every resubscription flushes their L1, as a kill shows.
	NoReplay bool `json:"no_replay"`
	// Namespace is the tiercache namespace of the run; default
	// "catalogdemo-<random>", whose keys are deleted at the end.
	Namespace string `json:"namespace"`
	// DBOutage, when positive, makes the database fail (ErrDatabaseDown)
	// for this long in the middle of each run, and adds a run with the
	// cache and fail-safe on. With it, products and listings live
	// DemoOutageTTL in the cache, so that they expire during the outage,
	// and leases are off (fail-safe does not combine with them). It must
	// be shorter than Duration. Default 0: no outage.
	DBOutage time.Duration `json:"db_outage"`
}

// DemoOutageTTL is the TTL of products and listings in a demo with a
// database outage (DemoOptions.DBOutage), and DemoOutageMaxAge their
// fail_safe.max_age in the run with fail-safe.
const (
	DemoOutageTTL    = time.Second
	DemoOutageMaxAge = time.Minute
)

func (o DemoOptions) withDefaults() (DemoOptions, error) {
	if o.RedisAddr == "" {
		return o, errors.New("catalog: demo: a Redis address is required")
	}
	def := func(v *int, d int) {
		if *v == 0 {
			*v = d
		}
	}
	def(&o.Replicas, DefaultDemoReplicas)
	def(&o.Products, DefaultDemoProducts)
	def(&o.Categories, DefaultDemoCategories)
	def(&o.Workers, DefaultDemoWorkers)
	if o.Duration == 0 {
		o.Duration = DefaultDemoDuration
	}
	if o.MaxOps == 0 {
		o.MaxOps = DefaultDemoMaxOps
	}
	if o.UpdateShare == 0 {
		o.UpdateShare = DefaultDemoUpdateShare
	}
	if o.ListingShare == 0 {
		o.ListingShare = DefaultDemoListingShare
	}
	o.UpdateShare, o.ListingShare = max(o.UpdateShare, 0), max(o.ListingShare, 0)
	if o.ZipfS == 0 {
		o.ZipfS = DefaultDemoZipfS
	}
	if o.Seed == 0 {
		o.Seed = 1
	}
	if o.ViewsEvery == 0 {
		o.ViewsEvery = DefaultDemoViewsEvery
	}
	if o.ViewsInterval == 0 {
		o.ViewsInterval = DefaultDemoViewsInterval
	}
	if o.ProgressEvery == 0 {
		o.ProgressEvery = DefaultDemoProgressEvery
	}
	if o.Namespace == "" {
		var b [4]byte
		rand.Read(b[:])
		o.Namespace = "catalogdemo-" + hex.EncodeToString(b[:])
	}
	switch {
	case o.Replicas < 1 || o.Replicas > 16:
		return o, fmt.Errorf("catalog: demo: %d replicas, want 1 to 16", o.Replicas)
	case o.Products < 2 || o.Categories < 1 || o.Categories > o.Products:
		return o, fmt.Errorf("catalog: demo: %d products in %d categories, want 2 <= products and 1 <= categories <= products", o.Products, o.Categories)
	case o.QueryLatency < 0 || o.QueryLatency > time.Second:
		return o, fmt.Errorf("catalog: demo: query latency %v, want 0 to 1s", o.QueryLatency)
	case o.KillPubSubAt < 0:
		return o, fmt.Errorf("catalog: demo: kill pubsub at %v, want it positive", o.KillPubSubAt)
	case o.Duration < 0 || o.MaxOps < 0 || o.Workers < 1:
		return o, fmt.Errorf("catalog: demo: duration %v, max ops %d, workers %d: want them positive", o.Duration, o.MaxOps, o.Workers)
	case o.UpdateShare+o.ListingShare > 1:
		return o, fmt.Errorf("catalog: demo: update share %v and listing share %v add up to more than 1", o.UpdateShare, o.ListingShare)
	case !(o.ZipfS > 1):
		return o, fmt.Errorf("catalog: demo: zipf s %v, want > 1", o.ZipfS)
	case o.DBOutage < 0 || (o.DBOutage > 0 && o.DBOutage >= o.Duration):
		return o, fmt.Errorf("catalog: demo: database outage %v, want 0 or shorter than the duration %v", o.DBOutage, o.Duration)
	case o.ViewsEvery < 1 || o.ViewsInterval < time.Millisecond || o.ProgressEvery < 10*time.Millisecond:
		return o, fmt.Errorf("catalog: demo: views every %d, interval %v, progress every %v: too small", o.ViewsEvery, o.ViewsInterval, o.ProgressEvery)
	}
	return o, nil
}

// RunDemo runs the catalog demo: opts.Replicas replicas of the service in
// this process, sharing one SQLite file and the Redis at opts.RedisAddr,
// under a Zipf load of product pages, category listings and updates
// spread over the replicas, first with the cache and then, on a fresh
// copy of the catalog, with the cache off. It writes a progress line to
// progress every opts.ProgressEvery (progress may be nil) and returns what
// it measured. When ctx ends it stops the load and returns what it has
// with ctx's error.
func RunDemo(ctx context.Context, opts DemoOptions, progress io.Writer) (Report, error) {
	opts, err := opts.withDefaults()
	if err != nil {
		return Report{}, err
	}
	if progress == nil {
		progress = io.Discard
	}
	rep := Report{Options: opts}
	dir := opts.Dir
	if dir == "" {
		if dir, err = os.MkdirTemp("", "catalog-demo-"); err != nil {
			return rep, fmt.Errorf("catalog: demo: %w", err)
		}
		defer os.RemoveAll(dir)
	}
	fmt.Fprintf(progress, "catalog demo: %d replicas, %d products in %d categories, Zipf s=%.2f, %.0f%% updates, %.0f%% listings, %d workers, %v or %d requests per run\n",
		opts.Replicas, opts.Products, opts.Categories, opts.ZipfS, 100*opts.UpdateShare, 100*opts.ListingShare, opts.Workers, opts.Duration, opts.MaxOps)
	if rep.Cached, err = runPhase(ctx, opts, dir, true, false, progress); err != nil {
		return rep, err
	}
	if opts.DBOutage > 0 {
		fs, err := runPhase(ctx, opts, dir, true, true, progress)
		rep.FailSafe = &fs
		if err != nil {
			return rep, err
		}
	}
	if rep.Uncached, err = runPhase(ctx, opts, dir, false, false, progress); err != nil {
		return rep, err
	}
	return rep, nil
}

// replayConfig is the replicas' replay configuration: the default, or off.
func replayConfig(off bool) tiercache.ReplayConfig {
	if off {
		return tiercache.ReplayConfig{MaxCount: -1}
	}
	return tiercache.ReplayConfig{}
}

// phaseName names a run in progress lines.
func phaseName(cached, failSafe bool) string {
	switch {
	case failSafe:
		return "cache on, fail-safe"
	case cached:
		return "cache on"
	}
	return "cache off"
}

// keyspaces returns the keyspace settings of a run's replicas.
func (o DemoOptions) keyspaces(failSafe bool) map[string]tiercache.KeyspaceConfig {
	ks := map[string]tiercache.KeyspaceConfig{
		KeyspaceViews: {Counter: tiercache.CounterConfig{Every: o.ViewsEvery, Interval: o.ViewsInterval}},
	}
	if o.DBOutage > 0 {
		read := tiercache.KeyspaceConfig{TTL: DemoOutageTTL}
		if failSafe {
			read.FailSafe = tiercache.FailSafeConfig{MaxAge: DemoOutageMaxAge}
		}
		ks[KeyspaceProduct], ks[KeyspaceCategory] = read, read
	}
	return ks
}

// outage makes the replicas' database fail for opts.DBOutage in the
// middle of a run that starts now, says when on progress, and returns the
// function that ends it (at the latest) when the run is over.
func outage(opts DemoOptions, reps []*Replica, progress io.Writer, name string) (end func()) {
	set := func(down bool) {
		for _, r := range reps {
			r.Service().DB().SetDown(down)
		}
	}
	if opts.DBOutage <= 0 {
		return func() {}
	}
	at := (opts.Duration - opts.DBOutage) / 2
	fmt.Fprintf(progress, "%s: the database fails from %v to %v\n", name, at, at+opts.DBOutage)
	down := time.AfterFunc(at, func() { set(true) })
	up := time.AfterFunc(at+opts.DBOutage, func() { set(false) })
	return func() {
		down.Stop()
		up.Stop()
		set(false)
	}
}

// runPhase runs the load once, on a fresh catalog, with the cache or
// without.
func runPhase(ctx context.Context, opts DemoOptions, dir string, cached, failSafe bool, progress io.Writer) (ph Phase, err error) {
	ph.Cached, ph.FailSafe = cached, failSafe
	name := phaseName(cached, failSafe)
	dbPath := filepath.Join(dir, "catalog-"+strings.ReplaceAll(name, " ", "-")+".db")
	if err := seedFile(dbPath, opts.Products, opts.Categories); err != nil {
		return ph, err
	}
	rec := newRecorder(opts.Replicas, opts.Products)
	reps := make([]*Replica, 0, opts.Replicas)
	stopAll := func() error {
		var errs []error
		for _, r := range reps {
			sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), demoStopTimeout)
			errs = append(errs, r.Stop(sctx))
			cancel()
		}
		reps = nil
		return errors.Join(errs...)
	}
	if cached { // after the replicas stopped: deferred first
		defer func() { err = errors.Join(err, deleteNamespace(opts.RedisAddr, opts.Namespace)) }()
	}
	defer func() { err = errors.Join(err, stopAll()) }()
	for i := range opts.Replicas {
		cfg := Config{
			Database:     dbPath,
			QueryLatency: opts.QueryLatency,
			CacheOff:     !cached,
			Cache: tiercache.Config{
				Namespace:  opts.Namespace,
				InstanceID: rec.instance(i),
				Redis:      tiercache.RedisConfig{Addrs: []string{opts.RedisAddr}},
				Replay:     replayConfig(opts.NoReplay),
				Keyspaces:  opts.keyspaces(failSafe),
			},
		}
		fxOpts := []fx.Option{fx.Supply(Hooks{OnUpdate: rec.writeReturned})}
		if cached {
			fxOpts = append(fxOpts, WithInvalidationHook(rec.hook(i)))
		}
		r, err := StartReplica(ctx, cfg, fxOpts...)
		if err != nil {
			return ph, fmt.Errorf("catalog: demo: %s: replica %d: %w", name, i+1, err)
		}
		reps = append(reps, r)
	}
	addrs := make([]string, len(reps))
	for i, r := range reps {
		addrs[i] = r.Addr()
	}
	fmt.Fprintf(progress, "%s: replicas at %s\n", name, strings.Join(addrs, " "))

	ld := newLoad(opts, reps, rec)
	ld.start = time.Now() // the progress samples' time 0
	stopProgress := ld.reportProgress(name, progress)
	killed := make(chan *PubSubKill, 1)
	loadDone := make(chan struct{})
	if cached && opts.KillPubSubAt > 0 {
		go func() { killed <- ld.killPubSub(ctx, opts.RedisAddr, loadDone) }()
	}
	endOutage := outage(opts, reps, progress, name)
	runErr := ld.run(ctx)
	endOutage()
	close(loadDone)
	ph.Samples = stopProgress()
	if cached && opts.KillPubSubAt > 0 {
		ph.PubSubKill = <-killed
		fmt.Fprintf(progress, "%s: %v\n", name, ph.PubSubKill)
	}
	ph.Elapsed = ld.elapsed

	// Stopping flushes the view counts; the counters keep their values.
	if err := stopAll(); err != nil {
		return ph, fmt.Errorf("catalog: demo: %s: %w", name, err)
	}
	ld.results(&ph)
	for i, r := range ld.replicas {
		st := r.Service().Stats()
		ph.DBQueries += st.DBQueries
		ph.UpdateRetries += st.UpdateConflicts
		ph.Views.Views += st.Views
		ph.Views.DBWrites += st.ViewWrites
		ph.Views.RowsWritten += st.ViewRows
		if st.Cache != nil {
			for _, ks := range []string{KeyspaceProduct, KeyspaceCategory} {
				k := st.Cache.Keyspaces[ks]
				ph.FailSafeHits += int64(k.FailSafeHits)
				ph.Tiers = append(ph.Tiers, TierStats{Instance: rec.instance(i), Keyspace: ks, L1Hits: k.L1Hits, L2Hits: k.L2Hits, Misses: k.Misses, Loads: k.Loads,
					CoherenceChecks: k.CoherenceChecks, CoherenceViolations: k.CoherenceViolations})
			}
		}
	}
	if ph.Views.InDB, err = totalViews(dbPath); err != nil {
		return ph, err
	}
	ph.StaleReads, ph.WindowReads = rec.classify(cached)
	if cached {
		ph.Lag = rec.lag()
	}
	fmt.Fprintf(progress, "%s: %d requests in %v, %d stale reads\n", name, ph.Requests, ph.Elapsed.Round(time.Millisecond), ph.StaleReads)
	return ph, runErr
}

func seedFile(path string, products, categories int) error {
	db, err := Open(path)
	if err != nil {
		return err
	}
	return errors.Join(Seed(db.SQL(), products, categories), db.Close())
}

func totalViews(path string) (int64, error) {
	db, err := Open(path)
	if err != nil {
		return 0, err
	}
	n, err := db.TotalViews(context.Background())
	return n, errors.Join(err, db.Close())
}

// deleteNamespace deletes what the run left in Redis (counter totals, tag
// sets, values), in a bounded number of SCAN rounds.
func deleteNamespace(addr, ns string) error {
	c := redis.NewClient(&redis.Options{Addr: addr, ContextTimeoutEnabled: true})
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var cursor uint64
	for range 10_000 {
		keys, next, err := c.Scan(ctx, cursor, ns+":*", 1000).Result()
		if err != nil {
			return fmt.Errorf("catalog: demo: clean up namespace %s: %w", ns, err)
		}
		if len(keys) > 0 {
			if err := c.Unlink(ctx, keys...).Err(); err != nil {
				return fmt.Errorf("catalog: demo: clean up namespace %s: %w", ns, err)
			}
		}
		if cursor = next; cursor == 0 {
			return nil
		}
	}
	return nil
}

// op kinds of the load.
const (
	opDetail = iota
	opListing
	opUpdate
	numOps
)

// load drives requests at the replicas.
type load struct {
	opts     DemoOptions
	replicas []*Replica
	urls     []string
	rec      *recorder
	client   *http.Client

	ops     atomic.Int64  // requests started
	done    atomic.Int64  // requests finished
	start   time.Time     // set before reportProgress and run
	elapsed time.Duration // from start to the end of run

	mu      sync.Mutex // protects workers
	workers []*worker
}

// worker is one client of the load; its fields are its own until the load
// ends.
type worker struct {
	rng      *mrand.Rand
	products *mrand.Zipf
	cats     *mrand.Zipf
	lat      [numOps][]time.Duration
	reqs     [numOps]int64
	errs     [numOps]int64
	queries  [numOps]int64
	conflict int64
}

func newLoad(opts DemoOptions, reps []*Replica, rec *recorder) *load {
	urls := make([]string, len(reps))
	for i, r := range reps {
		urls[i] = r.URL()
	}
	return &load{
		opts:     opts,
		replicas: reps,
		urls:     urls,
		rec:      rec,
		client: &http.Client{
			Timeout:   demoRequestTimeout,
			Transport: &http.Transport{MaxIdleConnsPerHost: opts.Workers, DisableCompression: true},
		},
	}
}

// run runs the workers until opts.Duration has passed, opts.MaxOps
// requests were sent, or ctx ends.
func (l *load) run(ctx context.Context) error {
	defer l.client.CloseIdleConnections()
	ctx, cancel := context.WithTimeoutCause(ctx, l.opts.Duration, errRunOver)
	defer cancel()
	var wg sync.WaitGroup
	for i := range l.opts.Workers {
		rng := mrand.New(mrand.NewPCG(l.opts.Seed, uint64(i)))
		w := &worker{
			rng:      rng,
			products: mrand.NewZipf(rng, l.opts.ZipfS, 1, uint64(l.opts.Products-1)),
			cats:     mrand.NewZipf(rng, l.opts.ZipfS, 1, uint64(l.opts.Categories-1)),
		}
		l.mu.Lock()
		l.workers = append(l.workers, w)
		l.mu.Unlock()
		wg.Go(func() { l.work(ctx, w) })
	}
	wg.Wait()
	l.elapsed = time.Since(l.start)
	if err := context.Cause(ctx); err != nil && !errors.Is(err, errRunOver) {
		return err // the caller's ctx ended, not the run's duration
	}
	return nil
}

// errRunOver ends a run of the load that lasted its duration.
var errRunOver = errors.New("catalog: demo: run over")

func (l *load) work(ctx context.Context, w *worker) {
	for ctx.Err() == nil && l.ops.Add(1) <= l.opts.MaxOps {
		r := w.rng.IntN(len(l.urls))
		x := w.rng.Float64()
		switch {
		case x < l.opts.UpdateShare:
			l.update(ctx, w, r, int64(w.products.Uint64())+1)
		case x < l.opts.UpdateShare+l.opts.ListingShare:
			l.listing(ctx, w, r, int64(w.cats.Uint64())+1)
		default:
			l.detail(ctx, w, r, int64(w.products.Uint64())+1)
		}
		l.done.Add(1)
	}
}

// do sends one request and decodes a 200's body into v. It returns the
// status (0 for a transport error) and the request's DB statements.
func (l *load) do(ctx context.Context, method, url string, body []byte, v any) (int, int64) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, url, rd)
	if err != nil {
		return 0, 0
	}
	resp, err := l.client.Do(req)
	if err != nil {
		return 0, 0
	}
	defer resp.Body.Close()
	q, _ := strconv.ParseInt(resp.Header.Get(HeaderDBQueries), 10, 64)
	if resp.StatusCode == http.StatusOK {
		if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
			return 0, q
		}
		return resp.StatusCode, q
	}
	io.Copy(io.Discard, resp.Body)
	return resp.StatusCode, q
}

// record accounts one request of kind op that took d.
func (l *load) record(ctx context.Context, w *worker, op int, status int, queries int64, d time.Duration) {
	switch {
	case status == http.StatusOK:
		w.reqs[op]++
		w.queries[op] += queries
		w.lat[op] = append(w.lat[op], d)
	case status == http.StatusConflict:
		w.conflict++
	case ctx.Err() != nil:
		// The run ended during the request: not an error of the service.
	default:
		w.errs[op]++
	}
}

func (l *load) detail(ctx context.Context, w *worker, r int, id int64) {
	min := l.rec.committed(id) // the newest version an update has returned
	start := time.Now()
	var v struct {
		Version int64 `json:"version"`
	}
	status, q := l.do(ctx, http.MethodGet, l.urls[r]+"/products/"+strconv.FormatInt(id, 10), nil, &v)
	l.record(ctx, w, opDetail, status, q, time.Since(start))
	if status == http.StatusOK && v.Version < min {
		l.rec.oldRead(id, r, start, v.Version)
	}
}

func (l *load) listing(ctx context.Context, w *worker, r int, id int64) {
	start := time.Now()
	var v struct {
		ID int64 `json:"id"`
	}
	status, q := l.do(ctx, http.MethodGet, l.urls[r]+"/categories/"+strconv.FormatInt(id, 10), nil, &v)
	l.record(ctx, w, opListing, status, q, time.Since(start))
}

func (l *load) update(ctx context.Context, w *worker, r int, id int64) {
	body, _ := json.Marshal(ProductUpdate{
		Name:  fmt.Sprintf("product %d, edition %d", id, w.rng.IntN(1_000_000)),
		Price: float64(w.rng.IntN(20000))/100 + 0.99,
	})
	start := time.Now()
	var v struct {
		Version int64 `json:"version"`
	}
	status, q := l.do(ctx, http.MethodPut, l.urls[r]+"/products/"+strconv.FormatInt(id, 10), body, &v)
	end := time.Now()
	l.record(ctx, w, opUpdate, status, q, end.Sub(start))
	if status == http.StatusOK {
		l.rec.updated(id, r, v.Version, start, end)
	}
}

// reportProgress writes a progress line every opts.ProgressEvery until the
// returned function is called; that function takes a last sample, at the
// end of the run, waits for the writer and returns the samples taken, their
// Elapsed counted from l.start. So the samples reach the end of the run: a
// last interval shorter than a quarter of ProgressEvery is merged into the
// one before it rather than sampled alone (a rate over a few milliseconds
// says little).
func (l *load) reportProgress(name string, w io.Writer) func() []Sample {
	stop, done := make(chan struct{}), make(chan struct{})
	var samples []Sample
	cached := l.replicas[0].Service().Cached()
	go func() {
		defer close(done)
		t := time.NewTicker(l.opts.ProgressEvery)
		defer t.Stop()
		// prev is the mark before last, for merging a short last interval.
		type mark struct {
			at  time.Time
			ops int64
		}
		prev, last := mark{l.start, 0}, mark{l.start, 0}
		sample := func(now time.Time) {
			ops := l.done.Load()
			from := last
			if now.Sub(last.at) < l.opts.ProgressEvery/4 && len(samples) > 0 {
				samples = samples[:len(samples)-1] // merged into this one
				from = prev
			}
			s := Sample{Elapsed: now.Sub(l.start), Requests: ops, PerSecond: float64(ops-from.ops) / now.Sub(from.at).Seconds(), HitRatio: -1}
			line := fmt.Sprintf("  %-9s %6.1fs %10s requests %8.0f/s", name, s.Elapsed.Seconds(), thousands(ops), s.PerSecond)
			if cached {
				s.HitRatio = l.hitRatio()
				line += fmt.Sprintf("   hit ratio %.3f", s.HitRatio)
			}
			fmt.Fprintln(w, line)
			samples = append(samples, s)
			prev, last = from, mark{now, ops}
		}
		for {
			select {
			case <-stop:
				if now := time.Now(); now.After(last.at) {
					sample(now)
				}
				return
			case now := <-t.C:
				sample(now)
			}
		}
	}()
	return func() []Sample {
		close(stop)
		<-done
		return samples
	}
}

// hitRatio is the share of product and listing reads, on every replica,
// served from L1 or Redis.
func (l *load) hitRatio() float64 {
	var t TierStats
	for _, r := range l.replicas {
		st := r.Service().Cache().Stats()
		for _, ks := range []string{KeyspaceProduct, KeyspaceCategory} {
			k := st.Keyspaces[ks]
			t.L1Hits += k.L1Hits
			t.L2Hits += k.L2Hits
			t.Misses += k.Misses
			t.Loads += k.Loads
		}
	}
	return t.HitRatio()
}

// results merges the workers' counts into ph.
func (l *load) results(ph *Phase) {
	l.mu.Lock()
	defer l.mu.Unlock()
	stats := [numOps]*RequestStats{&ph.Detail, &ph.Listing, &ph.Update}
	for op, rs := range stats {
		var lat []time.Duration
		for _, w := range l.workers {
			rs.Requests += w.reqs[op]
			rs.Errors += w.errs[op]
			rs.DBQueries += w.queries[op]
			lat = append(lat, w.lat[op]...)
		}
		slices.Sort(lat)
		rs.P50, rs.P99 = quantile(lat, 0.50), quantile(lat, 0.99)
		ph.Requests += rs.Requests
		ph.Errors += rs.Errors
	}
	for _, w := range l.workers {
		ph.Update.Conflicts += w.conflict
	}
}

// quantile returns the q-quantile of sorted (nearest rank), 0 if empty.
func quantile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(math.Ceil(q*float64(len(sorted)))) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

// recorder keeps what the stale-read oracle and the lag measurement need:
// the updates that returned, the versions they made, the reads that
// returned an older version, and each replica's evictions of products.
type recorder struct {
	newest []atomic.Int64 // by product id: the newest version an update returned

	mu      sync.Mutex // protects updates, old, written
	updates map[int64][]update
	old     []oldRead
	written map[[2]int64]time.Time // (id, version) -> when Write returned in the handler

	evictions []*evictionLog // by replica
}

// update is one update that returned 200 to the load.
type update struct {
	replica    int
	version    int64
	start, end time.Time // as the client saw them
}

// oldRead is a read that returned an older version than an update that
// had returned before the read began.
type oldRead struct {
	id      int64
	replica int
	start   time.Time
	version int64
}

// evictionLog is one replica's applied invalidations of product pages,
// from its invalidation hook.
type evictionLog struct {
	mu      sync.Mutex // protects byKey, flushes
	byKey   map[string][]eviction
	flushes []time.Time // whole-keyspace or whole-L1 evictions
}

type eviction struct {
	at     time.Time
	origin string
}

func newRecorder(replicas, products int) *recorder {
	r := &recorder{
		newest:  make([]atomic.Int64, products+1),
		updates: make(map[int64][]update),
		written: make(map[[2]int64]time.Time),
	}
	for range replicas {
		r.evictions = append(r.evictions, &evictionLog{byKey: make(map[string][]eviction)})
	}
	return r
}

func (r *recorder) instance(i int) string { return fmt.Sprintf("replica-%d", i+1) }

// hook is replica i's invalidation hook: it runs on the bus's dispatcher,
// so it only appends.
func (r *recorder) hook(i int) func(tiercache.Invalidation) {
	log := r.evictions[i]
	return func(inv tiercache.Invalidation) {
		now := time.Now()
		if inv.Keyspace != KeyspaceProduct && !(inv.Keyspace == "" && (inv.Flush || inv.Reset)) {
			return
		}
		log.mu.Lock()
		defer log.mu.Unlock()
		if inv.Flush || inv.Reset {
			log.flushes = append(log.flushes, now)
			return
		}
		for _, k := range inv.Keys {
			log.byKey[k] = append(log.byKey[k], eviction{at: now, origin: inv.Origin})
		}
	}
}

// firstEviction returns when replica i first evicted product id, after
// from, by an invalidation from origin or a flush.
func (r *recorder) firstEviction(i int, id int64, origin string, from time.Time) (time.Time, bool) {
	log := r.evictions[i]
	log.mu.Lock()
	defer log.mu.Unlock()
	var first time.Time
	for _, e := range log.byKey[strconv.FormatInt(id, 10)] {
		if e.origin == origin && !e.at.Before(from) && (first.IsZero() || e.at.Before(first)) {
			first = e.at
		}
	}
	for _, at := range log.flushes {
		if !at.Before(from) && (first.IsZero() || at.Before(first)) {
			first = at
		}
	}
	return first, !first.IsZero()
}

// writeReturned is the replicas' Hooks.OnUpdate.
func (r *recorder) writeReturned(id, version int64, at time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.written[[2]int64{id, version}] = at
}

func (r *recorder) committed(id int64) int64 { return r.newest[id].Load() }

func (r *recorder) updated(id int64, replica int, version int64, start, end time.Time) {
	for {
		cur := r.newest[id].Load()
		if version <= cur || r.newest[id].CompareAndSwap(cur, version) {
			break
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.updates[id] = append(r.updates[id], update{replica: replica, version: version, start: start, end: end})
}

func (r *recorder) oldRead(id int64, replica int, start time.Time, version int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.old = append(r.old, oldRead{id: id, replica: replica, start: start, version: version})
}

// classify splits the reads that returned a version older than an update
// that had returned before they began: stale reads, which began after
// their replica had applied that update's invalidation (the replica that
// wrote applies it before answering), and window reads, which began
// before (the invalidation was on its way: tiercache's contract covers
// reads after its delivery). Without the cache every such read is stale.
func (r *recorder) classify(cached bool) (stale, window int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, o := range r.old {
		violated := !cached
		for _, u := range r.updates[o.id] {
			if violated {
				break
			}
			if u.version <= o.version || u.end.After(o.start) {
				continue
			}
			if u.replica == o.replica {
				violated = true
				continue
			}
			at, ok := r.firstEviction(o.replica, o.id, r.instance(u.replica), u.start)
			violated = ok && !at.After(o.start)
		}
		if violated {
			stale++
		} else {
			window++
		}
	}
	return stale, window
}

// lag measures, for each update and each other replica, the time from the
// update's Write returning (in the handler) to that replica's eviction.
func (r *recorder) lag() LagStats {
	r.mu.Lock()
	defer r.mu.Unlock()
	var ls LagStats
	var lags []time.Duration
	per := make([][]time.Duration, len(r.evictions)) // by evicting replica
	for id, us := range r.updates {
		for _, u := range us {
			wrote, ok := r.written[[2]int64{id, u.version}]
			if !ok {
				wrote = u.end
			}
			for i := range r.evictions {
				if i == u.replica {
					continue
				}
				at, ok := r.firstEviction(i, id, r.instance(u.replica), u.start)
				if !ok {
					ls.Missing++
					continue
				}
				d := at.Sub(wrote)
				if d < 0 {
					ls.BeforeReturn++
				}
				lags = append(lags, d)
				per[i] = append(per[i], d)
			}
		}
	}
	slices.Sort(lags)
	ls.Samples = len(lags)
	ls.P50, ls.P99 = quantile(lags, 0.50), quantile(lags, 0.99)
	if len(lags) > 0 {
		ls.Max = lags[len(lags)-1]
	}
	for i, ds := range per {
		slices.Sort(ds)
		rl := ReplicaLag{Instance: r.instance(i), Samples: len(ds), P50: quantile(ds, 0.50), P99: quantile(ds, 0.99)}
		if len(ds) > 0 {
			rl.Max = ds[len(ds)-1]
		}
		ls.Replicas = append(ls.Replicas, rl)
	}
	return ls
}
