package tiercache

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"go.opentelemetry.io/otel/metric"
	"golang.org/x/sync/singleflight"

	"github.com/tiercache/tiercache/bus"
	"github.com/tiercache/tiercache/l2"
)

// Cache is the per-process engine shared by the keyspaces of one service: the
// Redis client, the invalidation bus and the registry of keyspaces.
//
// A Cache is created by New (which starts nothing), started by Start and
// stopped by Stop. Its methods are safe for concurrent use.
type Cache struct {
	cfg    Config // defaults applied
	pubsub string // PubSubSharded or PubSubClassic: Config.PubSubMode resolved

	noAuditJob bool // tests run the audit by hand (AuditNow)
	client     redis.UniversalClient
	store      *l2.Store
	replay     *replayer   // positions in the logs of invalidations; nil with replay off
	flushNext  atomic.Bool // an unreadable message came: the next reset flushes, whatever the logs hold
	writes     *coalescer  // Set and Delete scripts, coalesced per keyspace and slot
	sub        *bus.Subscriber
	log        *slog.Logger
	onInv      func(Invalidation) // optional hook, called after each applied invalidation

	closed    atomic.Bool              // set first thing in Stop; read on every miss
	genEpoch  atomic.Uint64            // bumped by every bus reset: generations read before it are read again
	gens      atomic.Pointer[genState] // the generation hash as this replica knows it; nil before the first read
	genFlight singleflight.Group       // reads of the generation hash in flight
	lastInv   atomic.Int64             // unix nanoseconds of the last invalidation the bus handed over; 0 before
	stopCtx   context.Context          // done once Stop began: cancels loads in flight
	stopLoad  context.CancelFunc       // cancels stopCtx
	flights   tracker                  // loads in flight, waited for by Stop
	jobs      jobs                     // keyspaces' background jobs (flushers), stopped and drained by Stop

	mu        sync.RWMutex // protects keyspaces, started and warming
	keyspaces map[string]keyspace
	started   bool
	warming   bool // Start has started the warmers: later keyspaces warm at once

	pres atomic.Pointer[presence] // the heartbeat, set by Start; nil with heartbeats off

	canary     atomic.Pointer[canarySeen] // the last canary applied; nil before
	canaryBeat chan struct{}              // cap 1: a canary arrived, write the presence record now
	mp         metric.MeterProvider       // WithMeterProvider; nil: no OTel
	meters     *meters                    // the instruments on mp; nil without it

	onBeat     func(error)      // when set (by tests, before Start), called after each presence write
	now        func() time.Time // the clock of TTLs and early refresh; time.Now unless WithClock
	breakerNow func() time.Time // the clock of the breaker's cool-down; nil: time.Now (tests set it)
}

// keyspace is what the Cache needs of a Keyspace[K, V], whatever K and V.
type keyspace interface {
	invalidate(keys []string) // evict keys (as in Redis, without prefix) from L1
	flush()                   // evict the whole L1
	tagged()                  // a tag was invalidated: loads in flight are no longer shared
	filled(keys []string)     // a lease holder filled keys: wake their waiters
	close()                   // release L1
	stats() KeyspaceStats
	auditStep(ctx context.Context) // check recently filled L1 entries against Redis (audit.go)
}

// Option configures cross-cutting hooks of a Cache.
type Option func(*Cache)

// WithLogger sets the logger; the default discards. tiercache logs changes
// of state (the bus going unhealthy and healthy again, the circuit breaker
// opening and closing, a degraded start, presence heartbeats failing and
// recovering), warm-up failures and dead-lettered write-behind records,
// never requests, values or secrets. A Redis failure on a read or a fill is
// counted in Stats, not logged: an outage fails every call, and the breaker
// logs it once, when it opens.
func WithLogger(l *slog.Logger) Option {
	return func(c *Cache) {
		if l != nil {
			c.log = l
		}
	}
}

// Invalidation describes one invalidation applied to this replica's L1, as
// passed to the hook of WithInvalidationHook.
type Invalidation struct {
	Origin   string   // instance id of the publisher ("" for external publishers)
	Keyspace string   // "" with Flush for every keyspace
	Keys     []string // keys as in Redis, without the "<namespace>:<keyspace>:" prefix
	Tags     []string // tags invalidated (InvalidateTags); their keys come as Keys, in messages of their own
	Flush    bool     // the whole keyspace (or every keyspace) was evicted
	Filled   bool     // Keys were filled by a lease holder: nothing evicted, their waiters woken
	Reset    bool     // a bus reset (subscription (re)established or messages lost) flushed every L1
}

// WithClock sets the clock that TTLs (calendar expiry) and early refresh
// read; the default is time.Now. Tests use it for a fixed time. Timeouts and
// waits use the real clock whatever it is.
func WithClock(now func() time.Time) Option {
	return func(c *Cache) {
		if now != nil {
			c.now = now
		}
	}
}

// WithInvalidationHook calls fn after each invalidation from the bus has been
// applied to L1, including resets and the echoes of this replica's own
// writes. fn runs on the bus's dispatcher goroutine (or, for what the
// replay head check reads back, on its own; never two calls at once): it
// must return quickly and must not call back into the Cache. A reset is
// reported once the replica is done with it (L1 flushed or the missed
// invalidations read back, and the logs' heads read). It serves
// measurements (invalidation lag) and tests.
func WithInvalidationHook(fn func(Invalidation)) Option {
	return func(c *Cache) { c.onInv = fn }
}

// New returns a Cache over client. It validates cfg and starts no goroutine;
// call Start before use so reads can use L1, and Stop when done. The client
// stays the caller's: Stop does not close it. Build the client with
// ContextTimeoutEnabled: true, or go-redis ignores the per-call budgets
// (Config.ReadTimeout, Config.WriteTimeout) on the socket.
func New(client redis.UniversalClient, cfg Config, opts ...Option) (*Cache, error) {
	if client == nil {
		return nil, fmt.Errorf("%w: nil redis client", ErrInvalidConfig)
	}
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	c := &Cache{
		cfg:        cfg,
		client:     client,
		log:        slog.New(slog.DiscardHandler),
		keyspaces:  make(map[string]keyspace),
		canaryBeat: make(chan struct{}, 1),
		now:        time.Now,
	}
	c.stopCtx, c.stopLoad = context.WithCancel(context.Background())
	for _, o := range opts {
		o(c)
	}
	if c.mp != nil {
		if c.meters, err = newMeters(c, c.mp); err != nil {
			return nil, err
		}
	}
	if o, ok := client.(interface{ Options() *redis.Options }); ok && !o.Options().ContextTimeoutEnabled {
		c.log.Warn("tiercache: redis client without ContextTimeoutEnabled: read_timeout and write_timeout cannot bound a slow Redis")
	}
	mode, err := resolvePubSub(client, cfg)
	if err != nil {
		return nil, err
	}
	c.pubsub = mode
	sharded := mode == PubSubSharded
	c.store, err = l2.New(client, l2.Options{
		Sharded:      sharded,
		ReadTimeout:  cfg.ReadTimeout,
		WriteTimeout: cfg.WriteTimeout,
		FencePrefix:  cfg.Namespace + "::fence",
		FenceName:    genless(cfg.Namespace),
		ReplicaAcks:  cfg.WriteReplicaAcks,
		Log:          logOptions(cfg),
		Breaker: l2.BreakerOptions{
			Failures: cfg.Breaker.Failures,
			CoolDown: cfg.Breaker.CoolDown,
			Now:      c.breakerNow,
			OnChange: c.breakerChanged,
		},
	})
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidConfig, err)
	}
	if cfg.AuditRate > 0 && !c.noAuditJob {
		_ = c.jobs.add(c.auditJob()) // fails only after Stop
	}
	c.replay = newReplayer(c.store)
	if c.replay != nil && len(c.replay.all) == 1 && cfg.Replay.CheckInterval > 0 {
		_ = c.jobs.add(c.headCheckJob()) // fails only after Stop
	}
	c.writes = &coalescer{store: c.store, channel: cfg.Channel, queues: make(map[batchKey]*writeQueue)}
	c.sub, err = bus.NewSubscriber(client, bus.Options{
		Channel:      cfg.Channel,
		Handler:      c.receive,
		OnReset:      c.resync,
		OnUnreadable: func(error) { c.flushNext.Store(true) },
		PingInterval: cfg.PingInterval,
		PingTimeout:  cfg.PingTimeout,
		MaxStaleness: cfg.MaxStaleness,
		FollowMaster: true,
		Sharded:      sharded,
		Logger:       c.log,
	})
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidConfig, err)
	}
	return c, nil
}

// canarySeen is a canary invalidation applied: its id, and when the bus
// handed it over.
type canarySeen struct {
	id string
	at time.Time
}

// resolvePubSub returns the mode cfg.PubSubMode means with client:
// PubSubSharded or PubSubClassic.
func resolvePubSub(client redis.UniversalClient, cfg Config) (string, error) {
	_, cluster := client.(*redis.ClusterClient)
	mode := cfg.PubSubMode
	switch {
	case mode == PubSubAuto && cluster:
		mode = PubSubSharded
	case mode == PubSubAuto:
		mode = PubSubClassic
	case mode == PubSubSharded && !cluster:
		return "", fmt.Errorf("%w: pubsub_mode %q needs a Redis Cluster client (*redis.ClusterClient), not %T", ErrInvalidConfig, PubSubSharded, client)
	}
	if mode == PubSubSharded && strings.Contains(cfg.Channel, "{") {
		return "", fmt.Errorf("%w: channel %q holds '{', which sharded pub/sub cannot use: set pubsub_mode %q or another channel", ErrInvalidConfig, cfg.Channel, PubSubClassic)
	}
	return mode, nil
}

// PubSubMode returns how this Cache's invalidations travel: PubSubSharded
// or PubSubClassic (Config.PubSubMode, with PubSubAuto resolved for its
// client).
func (c *Cache) PubSubMode() string { return c.pubsub }

// checkSharded checks, when invalidations are sharded, that every master
// knows SSUBSCRIBE (Redis 7 or later), so that a Cluster of Redis 6 fails
// Start with a clear error rather than a bus that never subscribes; and it
// puts the store's ASK detector on the masters' clients the client made
// before New (l2.Store.HookNode).
func (c *Cache) checkSharded(ctx context.Context) error {
	cc, ok := c.client.(*redis.ClusterClient)
	if !ok || c.pubsub != PubSubSharded {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, c.cfg.PingTimeout)
	defer cancel()
	return cc.ForEachMaster(ctx, func(ctx context.Context, m *redis.Client) error {
		c.store.HookNode(m)
		info, err := m.Do(ctx, "COMMAND", "INFO", "ssubscribe").Slice()
		if err != nil {
			return fmt.Errorf("command info ssubscribe on %s: %w", m.Options().Addr, err)
		}
		if len(info) != 1 || info[0] == nil {
			return fmt.Errorf("%w: pubsub_mode %q: %s has no sharded pub/sub (Redis 7 or later needed): set pubsub_mode %q", ErrInvalidConfig, PubSubSharded, m.Options().Addr, PubSubClassic)
		}
		return nil
	})
}

// Config returns the configuration in force, defaults applied, except
// ReadTimeout and WriteTimeout, which stay zero when they were left so:
// DefaultReadTimeout and DefaultWriteTimeout then apply.
func (c *Cache) Config() Config { return c.cfg }

// InstanceID returns the id this replica puts in its invalidations.
func (c *Cache) InstanceID() string { return c.cfg.InstanceID }

// Start subscribes to the invalidation channel and returns once Redis has
// confirmed the subscription. Until then, and whenever the bus is unhealthy,
// reads bypass L1.
//
// When Redis cannot be reached (a PING within Config.PingTimeout fails),
// Start returns nil in degraded mode unless Config.RequireRedis is set: the
// bus subscribes in the background as soon as Redis answers, flushing every
// L1 as on any subscription, and meanwhile reads go to the loaders and
// writes fail; warmers do not run. A Redis that refuses the TLS handshake
// or the credentials fails Start either way.
//
// Start after Stop returns ErrClosed. A Start that fails stops the Cache:
// build a new one to try again.
func (c *Cache) Start(ctx context.Context) error {
	if c.closed.Load() {
		return ErrClosed
	}
	c.mu.Lock()
	if c.started {
		c.mu.Unlock()
		return errors.New("tiercache: already started")
	}
	c.started = true
	c.mu.Unlock()
	// A failed start cannot be retried: release what New set up. ctx may be
	// done already: Stop with a fresh, bounded one.
	fail := func(err error) error {
		stopCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		return errors.Join(err, c.Stop(stopCtx))
	}
	if err := c.ping(ctx); err != nil {
		switch {
		case ctx.Err() != nil:
			return fail(fmt.Errorf("tiercache: start: %w", ctx.Err()))
		case misconfigured(err):
			return fail(fmt.Errorf("tiercache: start: redis refused this client (check TLS and credentials): %w", err))
		case c.cfg.RequireRedis:
			return fail(fmt.Errorf("tiercache: start: redis unreachable and require_redis is set: %w", err))
		}
		if err := c.sub.Launch(ctx); err != nil {
			return fail(fmt.Errorf("tiercache: start bus: %w", err))
		}
		c.log.Warn("tiercache: started degraded: redis unreachable; reads go to the loaders until it answers", "err", err)
		c.jobs.start()
		c.startPresence(ctx)
		return nil
	}
	if err := c.checkSharded(ctx); err != nil {
		return fail(fmt.Errorf("tiercache: start: %w", err))
	}
	if err := c.sub.Start(ctx); err != nil {
		return fail(fmt.Errorf("tiercache: start bus: %w", err))
	}
	// Read the keyspaces' generations now rather than on the first call;
	// a failure only leaves that to the first call.
	_, _ = c.generations(ctx)
	c.jobs.start()
	c.startPresence(ctx)
	c.mu.Lock()
	c.warming = true
	var ws []warmer
	for _, ks := range c.keyspaces {
		if w, ok := ks.(warmer); ok && w.hasWarmer() {
			ws = append(ws, w)
		}
	}
	c.mu.Unlock()
	c.warmAll(ctx, ws)
	return nil
}

// ping checks that Redis answers, within Config.PingTimeout.
func (c *Cache) ping(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.PingTimeout)
	defer cancel()
	return c.client.Ping(ctx).Err()
}

// misconfigured reports whether err, from a call to Redis, says that the
// client is wrong rather than Redis down.
func misconfigured(err error) bool { return TLSRefused(err) || AuthRefused(err) }

// TLSRefused reports whether err, from a call to Redis, is a failed TLS
// handshake: a certificate that does not verify (unknown authority, wrong
// host name, invalid), TLS spoken to a plain server, or an alert from the
// server (a client certificate it refused). Start fails on it even without
// Config.RequireRedis: it is a misconfigured client, not an outage.
func TLSRefused(err error) bool {
	var (
		verify   *tls.CertificateVerificationError
		header   tls.RecordHeaderError
		alert    tls.AlertError
		unknown  x509.UnknownAuthorityError
		hostname x509.HostnameError
		invalid  x509.CertificateInvalidError
	)
	return errors.As(err, &verify) || errors.As(err, &header) || errors.As(err, &alert) ||
		errors.As(err, &unknown) || errors.As(err, &hostname) || errors.As(err, &invalid)
}

// AuthRefused reports whether err, from a call to Redis, is Redis refusing
// the credentials or asking for some (WRONGPASS, NOAUTH, NOPERM...). Start
// fails on it even without Config.RequireRedis.
func AuthRefused(err error) bool {
	var rerr redis.Error
	if !errors.As(err, &rerr) {
		return false
	}
	for _, prefix := range []string{"WRONGPASS", "NOAUTH", "NOPERM", "ERR AUTH", "ERR invalid password", "ERR Client sent AUTH"} {
		if strings.HasPrefix(rerr.Error(), prefix) {
			return true
		}
	}
	return false
}

// breakerChanged logs the changes of the breaker around Redis: an opening
// from closed at warn level, a return to closed at info, and the probes of
// an outage (half-open, and back to open after a failed probe) at debug.
func (c *Cache) breakerChanged(from, to l2.BreakerState, cause error) {
	switch {
	case to == l2.BreakerOpen && from == l2.BreakerClosed:
		c.log.Warn("tiercache: redis failing: circuit open, calls skip redis", "cool_down", c.cfg.Breaker.CoolDown, "err", cause)
	case to == l2.BreakerClosed:
		c.log.Info("tiercache: redis answers again: circuit closed")
	default:
		c.log.Debug("tiercache: redis circuit "+to.String(), "err", cause)
	}
}

// Stop stops the keyspaces' background jobs and finishes their work (the
// write-behind and counter flushes), stops the bus, cancels and waits for
// the loads in flight, and closes every keyspace's L1. Calls made after Stop
// return ErrClosed. Stop is safe to call more than once; it returns
// ctx.Err() if ctx ends before the wait does.
func (c *Cache) Stop(ctx context.Context) error {
	if c.closed.Swap(true) {
		return nil
	}
	err := c.jobs.stop(ctx)
	c.stopLoad()
	err = errors.Join(err, c.sub.Stop(ctx))
	if werr := c.flights.closeAndWait(ctx); werr != nil {
		err = errors.Join(err, werr)
	}
	c.mu.Lock()
	for _, ks := range c.keyspaces {
		ks.close()
	}
	c.mu.Unlock()
	err = errors.Join(err, c.meters.close())
	if err != nil {
		return fmt.Errorf("tiercache: stop: %w", err)
	}
	return nil
}

// Healthy reports whether the invalidation bus is subscribed and answering,
// which is when L1 may serve reads.
func (c *Cache) Healthy() bool { return c.sub.Healthy() }

// Stats returns the counters of every keyspace and of the bus. It walks
// every L1 to count its entries (KeyspaceStats.L1Entries), so it costs
// O(entries): take it every few seconds (a scrape, a heartbeat), not per
// request. After Stop, the counters keep their last values and L1 is empty.
func (c *Cache) Stats() Stats {
	// Walk the L1s outside mu: the dispatcher takes it to apply each
	// invalidation, and a waiting writer (NewKeyspace) would hold it up.
	c.mu.RLock()
	kss := maps.Clone(c.keyspaces)
	c.mu.RUnlock()
	s := Stats{
		InstanceID: c.cfg.InstanceID,
		Bus:        c.sub.Stats(),
		Breaker:    c.store.Breaker(),
		Replay:     c.replay.stats(),
		ProofAge:   c.sub.ProofAge(),
		Keyspaces:  make(map[string]KeyspaceStats, len(kss)),
	}
	if t := c.lastInv.Load(); t != 0 {
		s.LastInvalidation = time.Unix(0, t)
	}
	for name, ks := range kss {
		s.Keyspaces[name] = ks.stats()
	}
	return s
}

// register adds ks under name, refusing duplicates and a stopped cache.
func (c *Cache) register(name string, ks keyspace) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed.Load() {
		return ErrClosed
	}
	if _, dup := c.keyspaces[name]; dup {
		return fmt.Errorf("%w: %q", ErrDuplicateKeyspace, name)
	}
	c.keyspaces[name] = ks
	if w, ok := ks.(warmer); ok && c.warming && w.hasWarmer() {
		c.startWarm(w)
	}
	return nil
}

// handle applies one invalidation from the bus. It runs on the bus's
// dispatcher goroutine and only bumps generations, deletes from L1 and wakes
// lease waiters, so it never blocks for long. Messages of this replica's own
// origin are applied too: the writer evicted its entries after a write that
// returned, but a write that timed out may have reached Redis later, and
// only its echo then evicts what a read filled meanwhile. InvalidateTags
// names its tags in a message of their own, marked KeysFollow, which makes
// the keyspace's later loads start anew rather than share one begun before
// (see flightEpochs), then publishes the keys it deleted; a message naming
// tags without KeysFollow (another publisher's) flushes its keyspace, since
// replicas keep no local tag index.
func (c *Cache) handle(m bus.Message) {
	if m.Canary != "" {
		// Evicts nothing: noted, and told at once through presence.
		c.canary.Store(&canarySeen{id: m.Canary, at: time.Now()})
		select {
		case c.canaryBeat <- struct{}{}:
		default:
		}
		return
	}
	c.lastInv.Store(time.Now().UnixNano())
	flush := m.Flush || (len(m.Tags) > 0 && !m.KeysFollow)
	if c.onInv != nil {
		defer c.onInv(Invalidation{Origin: m.Origin, Keyspace: m.Keyspace, Keys: m.Keys, Tags: m.Tags, Flush: flush, Filled: m.Filled})
	}
	c.mu.RLock()
	defer c.mu.RUnlock()
	if m.Gen != 0 && m.Flush {
		field := m.Keyspace
		if field == "" {
			field = "*"
		}
		c.raiseGen(field, m.Gen)
	}
	if m.Keyspace == "" {
		if flush {
			for _, ks := range c.keyspaces {
				ks.flush()
			}
		}
		return
	}
	ks, ok := c.keyspaces[m.Keyspace]
	if !ok {
		return // a keyspace this replica does not use
	}
	switch {
	case flush:
		ks.flush()
	case len(m.Tags) > 0:
		ks.tagged()
	case m.Filled:
		// A lease holder stored what it loaded where Redis held nothing:
		// nothing was replaced, so nothing is evicted (not even the
		// holder's own fill); the loads waiting for the keys wake.
		ks.filled(m.Keys)
		return
	}
	if len(m.Keys) > 0 {
		ks.invalidate(m.Keys)
	}
}

// flushAll evicts every L1 entry of every keyspace. The bus calls it on every
// (re)subscription and after any possible message loss.
func (c *Cache) flushAll() {
	c.flushL1()
	c.flushed()
}

// flushL1 evicts every keyspace's L1 (flushAll without the hook).
func (c *Cache) flushL1() {
	c.lastInv.Store(time.Now().UnixNano())
	c.genEpoch.Add(1) // a Clear may have been lost
	c.mu.RLock()
	for _, ks := range c.keyspaces {
		ks.flush()
	}
	c.mu.RUnlock()
}

// flushed tells the invalidation hook that a reset flushed every L1.
func (c *Cache) flushed() {
	if c.onInv != nil {
		c.onInv(Invalidation{Flush: true, Reset: true})
	}
}

// detach returns a context for a load shared by several callers: it keeps
// ctx's values but not its cancellation, and it is cancelled by Stop.
func (c *Cache) detach(ctx context.Context) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	stop := context.AfterFunc(c.stopCtx, cancel)
	return ctx, func() {
		stop()
		cancel()
	}
}

// tracker counts the loads in flight so Stop can wait for them.
type tracker struct {
	mu     sync.Mutex // protects n, closed, idle
	n      int
	closed bool
	idle   chan struct{} // closed when n drops to 0 after closed is set
}

// enter registers a load; it reports false once the tracker is closed.
func (t *tracker) enter() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return false
	}
	t.n++
	return true
}

func (t *tracker) leave() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.n--
	if t.n == 0 && t.idle != nil {
		close(t.idle)
		t.idle = nil
	}
}

// closeAndWait refuses new loads and waits for the running ones.
func (t *tracker) closeAndWait(ctx context.Context) error {
	t.mu.Lock()
	t.closed = true
	if t.n == 0 {
		t.mu.Unlock()
		return nil
	}
	idle := make(chan struct{})
	t.idle = idle
	t.mu.Unlock()
	select {
	case <-idle:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("waiting for loads in flight: %w", ctx.Err())
	}
}

func newInstanceID() string {
	var b [8]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
