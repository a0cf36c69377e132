package bus

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

const (
	// DefaultQueueSize is the default Options.QueueSize, in messages.
	DefaultQueueSize = 8192
	// DefaultPingInterval is the default Options.PingInterval.
	DefaultPingInterval = time.Second
	// DefaultPingTimeout is the default Options.PingTimeout.
	DefaultPingTimeout = time.Second
	// MinMaxStaleness is the least Options.MaxStaleness other than zero.
	// Below it the PINGs that renew the proof (MaxStaleness/5 apart) would
	// cost Redis more than a thousand a second per replica, and a bound
	// shorter than a loaded machine's scheduling delays would keep L1
	// switched off most of the time.
	MinMaxStaleness = 10 * time.Millisecond
)

// proofsPerBound is how many proof PINGs go out per MaxStaleness, so that a
// proof is renewed before it expires even when each takes up to
// MaxStaleness*(proofsPerBound-1)/proofsPerBound to come back.
const proofsPerBound = 5

// noProof is Subscriber.proofAt before the first proof.
const noProof = math.MinInt64

const (
	// minHandshake is the least time a (re)connection may take to dial,
	// say HELLO and send SUBSCRIBE, whatever PingTimeout is.
	minHandshake = time.Second
	// retryBase and retryMax bound the wait between failed connection
	// attempts (doubling, with jitter); the first retry is immediate.
	retryBase = 10 * time.Millisecond
	retryMax  = 2 * time.Second
	// stableAfter is how long a subscription must last for the next failure
	// to be retried at once again rather than after a growing wait.
	stableAfter = 5 * time.Second
)

// Client is the narrow part of go-redis the Subscriber needs;
// redis.UniversalClient satisfies it.
type Client interface {
	Subscribe(ctx context.Context, channels ...string) *redis.PubSub
}

var _ Client = redis.UniversalClient(nil)

// Options configures a Subscriber. Channel and Handler are required.
type Options struct {
	// Channel is the pub/sub channel to subscribe to, e.g.
	// "tiercache:invalidate". Required.
	Channel string `yaml:"channel" json:"channel"`
	// Handler applies one message. It is called from a single dispatcher
	// goroutine, never from the connection's read loop, in arrival order.
	// It may be slow: a full queue drops messages and triggers OnReset, it
	// never blocks the connection. Required.
	Handler func(Message) `yaml:"-" json:"-"`
	// OnReset is called, by the dispatcher, whenever messages may have been
	// lost: after every subscription confirmation, the first included, and
	// after a queue overflow. It must evict everything the messages could
	// have evicted (the cache reads back what it missed from the logs of
	// numbered invalidations in Redis, or flushes every L1 and voids fills
	// in flight).
	// Healthy becomes true only after it returns. Nil means nothing to do.
	OnReset func() `yaml:"-" json:"-"`
	// OnUnreadable, when set, is called by the read loop for a message it
	// could not read that may have been an invalidation (of a newer
	// version, or too large), just before it asks for the reset that
	// follows: an OnReset that reads back what was missed from elsewhere
	// (a log of numbered messages) cannot read that one, and must evict
	// everything. It must not block.
	OnUnreadable func(err error) `yaml:"-" json:"-"`
	// QueueSize is the number of decoded messages waiting for Handler.
	// Zero means DefaultQueueSize (8192 messages).
	QueueSize int `yaml:"queueSize" json:"queueSize"`
	// PingInterval is the time between health PINGs on the pub/sub
	// connection, counted from the previous PING: PINGs are pipelined, a
	// PING never waits for the answer to the one before. With MaxStaleness
	// set they go every min(PingInterval, MaxStaleness/5). Zero means
	// DefaultPingInterval (1s).
	PingInterval time.Duration `yaml:"pingInterval" json:"pingInterval"`
	// PingTimeout is how long the oldest PING may go unanswered before the
	// subscriber marks itself unhealthy and reconnects (on a Cluster, also
	// how long a probe round may take). A PONG queues behind the messages
	// Redis has not delivered yet, so this is also the most the subscriber
	// may lag behind Redis before it drops that backlog and resets. It also
	// bounds a connection handshake, with a floor of one second. Zero means
	// DefaultPingTimeout (1s).
	PingTimeout time.Duration `yaml:"pingTimeout" json:"pingTimeout"`
	// MaxStaleness bounds how long after an invalidation is published
	// Healthy may be true on a subscriber that has not applied it. Healthy
	// then also requires a proof younger than MaxStaleness that the
	// subscriber is caught up: a PING on the subscription whose PONG came
	// back through the read loop and then through the dispatcher queue,
	// behind every message received before it (on a Cluster, a probe round
	// through every master instead, or with Sharded a PING answered on every
	// master's connection), stamped with the time the PING was
	// sent; every reset is a proof too, stamped with the subscription's
	// confirmation (an overflow's, with its start). A proof stamped T keeps
	// Healthy true until T+MaxStaleness; past that, without a newer one,
	// Healthy turns false, and true again at the next proof, with no reset:
	// nothing was lost, the subscriber was only possibly behind. A stalled
	// dispatcher, a throttled or latent connection and a silent one all
	// hold proofs back.
	//
	// PINGs then go every min(PingInterval, MaxStaleness/5): at 500ms, 10
	// a second per replica (with Sharded, on each master's connection; on a
	// Cluster without it, 10 probe rounds too, one PUBLISH
	// per master each), so that a proof is renewed before it expires as
	// long as PINGs come back within 4/5 of the bound. A Redis that stops
	// answering (a pause, a slow command) makes Healthy false from at most
	// MaxStaleness after the last proof until it answers again, and the
	// cache bypasses L1 meanwhile; a stop longer than PingTimeout also
	// reconnects and resets. MaxStaleness needs no relation to
	// PingTimeout: the bound holds whatever PingTimeout is. PingTimeout
	// above it (as with the defaults, 1s and 500ms) lets a lag between the
	// two switch L1 off and back on without a flush; PingTimeout below it
	// answers such a lag with a reconnection and a flush instead.
	//
	// Zero means no proof is required: Healthy depends on the subscription
	// alone, as for a subscriber used without a cache. Otherwise it must be
	// at least MinMaxStaleness (10ms). The cache sets it (default 500ms).
	MaxStaleness time.Duration `yaml:"maxStaleness" json:"maxStaleness"`
	// FollowMaster makes the subscriber follow a *redis.Client (plain or
	// Sentinel failover) to whichever server its data connections go to:
	// when the client dials a server other than the subscription's, as a
	// failover client does after +switch-master, the subscription is
	// abandoned and opened again there, with the usual reset. It adds a
	// dial hook to the client, inert after Stop, and one PING on the data
	// path per PingInterval. Ignored for other clients (Cluster delivers
	// every PUBLISH to every node). This PING goes every PingInterval
	// whatever MaxStaleness is. The cache sets it.
	FollowMaster bool `yaml:"followMaster" json:"followMaster"`
	// Sharded subscribes with Redis 7's sharded pub/sub on a Cluster: one
	// connection per master, with an SSUBSCRIBE to the channel of every
	// slot it serves (Channel followed by a {hash tag} of the slot, see
	// internal/slots), where writers SPUBLISH (l2.Options.Sharded). A
	// message then never crosses the cluster bus, and the PONGs of every
	// master's connection are the proofs (no probe rounds). A slot that
	// migrates, a master that fails or a new master is a reset, as a
	// reconnection is. It needs a *redis.ClusterClient of Redis 7 or later
	// and a Channel without '{'.
	Sharded bool `yaml:"sharded" json:"sharded"`
	// Limits bounds the messages accepted; bigger ones count as malformed.
	Limits Limits `yaml:"limits" json:"limits"`
	// Logger receives state changes (healthy, unhealthy) once per change,
	// and malformed messages (the first at warn level, the rest at debug).
	// Nil means discard.
	Logger *slog.Logger `yaml:"-" json:"-"`
}

// Stats are counters since NewSubscriber.
type Stats struct {
	// Received counts messages read from the channel, well-formed or not.
	Received uint64 `json:"received"`
	// Delivered counts Handler calls that returned.
	Delivered uint64 `json:"delivered"`
	// Malformed counts messages that Unmarshal refused; Handler never sees
	// them.
	Malformed uint64 `json:"malformed"`
	// Overflows counts messages dropped because the queue was full.
	Overflows uint64 `json:"overflows"`
	// Resets counts OnReset calls that returned.
	Resets uint64 `json:"resets"`
	// Reconnects counts subscription confirmations after the first.
	Reconnects uint64 `json:"reconnects"`
	// Moves counts subscriptions abandoned because the client moved to
	// another server (Options.FollowMaster), each followed by a reconnect.
	Moves uint64 `json:"moves"`
	// Proofs counts proofs applied by the dispatcher, each newer than the
	// one before: answered PINGs (probe rounds on a Cluster without Sharded)
	// and resets.
	// They are counted with MaxStaleness zero too.
	Proofs uint64 `json:"proofs"`
	// ProofExpiries counts the times Healthy turned false because the last
	// proof became older than Options.MaxStaleness.
	ProofExpiries uint64 `json:"proofExpiries"`
	// ProofAge is ProofAge() at the time of the call: -1 before the first
	// proof.
	ProofAge time.Duration `json:"proofAge"`
	// Healthy is Healthy() at the time of the call.
	Healthy bool `json:"healthy"`
}

// event is one item of the queue: a message, a reset when reset != 0, or
// a proof when proof is set.
type event struct {
	msg   Message
	reset uint64        // epoch of the subscription confirmation to reset for
	proof bool          // a proof that everything received before it was handled
	at    time.Duration // the stamp of a proof, or of a reset's confirmation (Subscriber.mono)
}

// resetAt asks for a reset for epoch, stamped at (the confirmation's time).
type resetAt struct {
	epoch uint64
	at    time.Duration
}

// pad keeps what different goroutines write off each other's cache lines.
type pad [64]byte

// Subscriber receives invalidations on one channel and hands them to a
// Handler, from its own goroutines: a read loop that owns the pub/sub
// connection and never blocks, a dispatcher that calls Handler and OnReset,
// a pinger that checks the connection and sends the PINGs that prove the
// subscriber caught up, and, with Options.FollowMaster, one that touches the
// client's data path. Use NewSubscriber, then Start and Stop; its methods
// are safe for concurrent use.
type Subscriber struct {
	client  Client
	opts    Options // defaults applied
	log     *slog.Logger
	timeout time.Duration // handshake bound
	cadence time.Duration // time between PINGs

	// clock is the time of the pinger, of proofs and of their expiry, and
	// base the origin of proof stamps (mono). Tests set both before Start.
	clock clock
	base  time.Time

	queue      chan event
	wake       chan struct{} // cap 1: resetReq was set
	pong       chan struct{} // cap 1: pongSeq advanced, or a probe arrived
	probeReq   chan resetAt  // cap 1: a Cluster subscription confirmed: the reset to queue after its first round
	stop       chan struct{} // closed by Stop
	firstReset chan struct{} // closed by the dispatcher when the first OnReset returned

	readDone, dispatchDone, pingDone, touchDone chan struct{} // closed by each goroutine as it returns

	// onHealth, when set (by tests, before Start), is called on every
	// change of Healthy, under stateMu, in order. It must not block.
	onHealth func(bool)
	// afterReceive, when set (by tests, before Start), is called by the
	// read loop after it has handled each message of the channel.
	afterReceive func()
	// onPong, when set (by tests, before Start), is called by the read loop
	// with the sequence number of each PONG it matched to a PING, once its
	// proof is queued.
	onPong func(seq uint64)
	// onPing, when set (by tests, before Start), is called by the pinger
	// with the sequence number of each PING it wrote.
	onPing func(seq uint64)
	// onProof, when set (by tests, before Start), is called by the
	// dispatcher with the stamp of each proof (reset included) it handled,
	// once Healthy reflects it.
	onProof func(at time.Duration)

	mu       sync.Mutex // protects started, stopping, ps, cancel
	started  bool
	stopping bool
	ps       subscription // the subscription the pinger checks; nil between connections
	cancel   context.CancelFunc

	// stateMu protects epoch, closed, subscribed, fresh, expiry and the
	// changes of healthy and proofAt. Healthy is the conjunction of the
	// first three (and of fresh only with MaxStaleness set).
	stateMu    sync.Mutex
	epoch      uint64  // incremented at every sign of possible loss
	closed     bool    // Stop was called: never healthy again
	subscribed bool    // a reset for the current epoch has returned
	fresh      bool    // proofAt + MaxStaleness is still ahead
	expiry     stopper // clears fresh when the last proof runs out; nil when fresh is false

	cluster      *redis.ClusterClient // the client, if a Cluster one: probed through every master
	probing      bool                 // a classic subscription on a Cluster: probe rounds are its proofs
	chansOnce    sync.Once            // makes chans, with Options.Sharded
	chans        []string             // every slot's sharded channel, by slot
	probeChannel string               // this subscriber's own probe channel, on a Cluster
	probe        probeState

	followed *redis.Client // the client FollowMaster probes and hooks; nil if none
	routeMu  sync.Mutex    // protects subAddr, dataAddr
	subAddr  string        // remote address of the last subscription dial
	dataAddr string        // remote address of the client's last other dial

	resetReq atomic.Uint64 // epoch an overflow asks the dispatcher to reset for; 0 = none
	pongSeq  atomic.Uint64 // highest PING sequence answered
	firstLog atomic.Bool   // a malformed message was logged at warn level
	proofAt  atomic.Int64  // stamp (mono) of the last proof applied; noProof before the first

	_       pad
	healthy atomic.Bool // read by every cache read: alone on its line
	_       pad

	// Written by the read loop (moves also by the client's dials).
	received, malformed, overflows, reconnects, moves atomic.Uint64
	_                                                 pad

	// Written by the dispatcher (proofExpiries by the expiry timer).
	delivered, resets, proofs, proofExpiries atomic.Uint64
}

// NewSubscriber validates opts and returns a Subscriber that reads from c
// once started. It starts nothing.
func NewSubscriber(c Client, opts Options) (*Subscriber, error) {
	switch {
	case c == nil:
		return nil, errors.New("bus: nil client")
	case opts.Channel == "":
		return nil, errors.New("bus: Options.Channel is empty")
	case opts.Handler == nil:
		return nil, errors.New("bus: Options.Handler is nil")
	case opts.QueueSize < 0:
		return nil, fmt.Errorf("bus: Options.QueueSize %d is negative", opts.QueueSize)
	case opts.PingInterval < 0:
		return nil, fmt.Errorf("bus: Options.PingInterval %v is negative", opts.PingInterval)
	case opts.PingTimeout < 0:
		return nil, fmt.Errorf("bus: Options.PingTimeout %v is negative", opts.PingTimeout)
	case opts.MaxStaleness < 0:
		return nil, fmt.Errorf("bus: Options.MaxStaleness %v is negative", opts.MaxStaleness)
	case opts.MaxStaleness > 0 && opts.MaxStaleness < MinMaxStaleness:
		return nil, fmt.Errorf("bus: Options.MaxStaleness %v is below %v", opts.MaxStaleness, MinMaxStaleness)
	case opts.Sharded && clusterOf(c) == nil:
		return nil, fmt.Errorf("bus: Options.Sharded needs a *redis.ClusterClient, not %T", c)
	case opts.Sharded && strings.Contains(opts.Channel, "{"):
		return nil, fmt.Errorf("bus: Options.Channel %q has a '{': its sharded channels would leave their slots", opts.Channel)
	}
	// MaxStaleness is checked against nothing else. PingTimeout may be
	// shorter or longer: it decides when a lagging or silent connection is
	// abandoned, MaxStaleness when L1 stops being trusted, and the bound
	// holds either way (see Options.MaxStaleness). PingInterval only caps
	// the cadence.
	if err := opts.Limits.validate(); err != nil {
		return nil, err
	}
	if opts.QueueSize == 0 {
		opts.QueueSize = DefaultQueueSize
	}
	if opts.PingInterval == 0 {
		opts.PingInterval = DefaultPingInterval
	}
	if opts.PingTimeout == 0 {
		opts.PingTimeout = DefaultPingTimeout
	}
	cadence := opts.PingInterval
	if opts.MaxStaleness > 0 {
		cadence = min(cadence, opts.MaxStaleness/proofsPerBound)
	}
	opts.Limits = opts.Limits.withDefaults()
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("channel", opts.Channel)
	s := &Subscriber{
		client:       c,
		opts:         opts,
		log:          log,
		timeout:      max(opts.PingTimeout, minHandshake),
		cadence:      cadence,
		clock:        realClock{},
		queue:        make(chan event, opts.QueueSize),
		wake:         make(chan struct{}, 1),
		pong:         make(chan struct{}, 1),
		probeReq:     make(chan resetAt, 1),
		stop:         make(chan struct{}),
		firstReset:   make(chan struct{}),
		readDone:     make(chan struct{}),
		dispatchDone: make(chan struct{}),
		pingDone:     make(chan struct{}),
		touchDone:    make(chan struct{}),
	}
	s.base = s.clock.Now()
	s.proofAt.Store(noProof)
	s.followed = s.follow(c)
	if s.cluster = clusterOf(c); s.cluster != nil && !opts.Sharded {
		s.probing = true
		s.probeChannel = newProbeChannel(opts.Channel)
	}
	return s, nil
}

// Start subscribes and starts the goroutines. It returns nil once Redis has
// confirmed the subscription and the first OnReset has returned, so that a
// message published after Start returns is delivered. If ctx ends first, or
// Stop is called meanwhile, it stops everything it started, waits for it and
// returns an error. Start returns ErrStarted when called again and
// ErrStopped after Stop. While Redis is unreachable it keeps retrying until
// ctx ends.
func (s *Subscriber) Start(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("bus: start: %w", err)
	}
	if err := s.Launch(ctx); err != nil {
		return err
	}
	var err error
	select {
	case <-s.firstReset:
		return nil
	case <-ctx.Done():
		err = fmt.Errorf("bus: start: %w", ctx.Err())
	case <-s.stop:
		err = fmt.Errorf("bus: start: %w", ErrStopped)
	}
	// Stop cannot fail on a context that never ends; every goroutine
	// returns promptly once stopped.
	_ = s.Stop(context.WithoutCancel(ctx))
	return err
}

// Launch is Start without the wait: it starts the goroutines and returns at
// once. The subscription is made in the background, and retried while Redis
// is unreachable; Healthy turns true, and Ready is closed, once it is
// confirmed and the first OnReset has returned. ctx gives its values to the
// goroutines, not its cancellation: only Stop ends them. Launch returns
// ErrStarted when the Subscriber was started already and ErrStopped after
// Stop.
func (s *Subscriber) Launch(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.stopping:
		return ErrStopped
	case s.started:
		return ErrStarted
	}
	s.started = true
	run, cancel := context.WithCancel(context.WithoutCancel(ctx))
	s.cancel = cancel
	go s.read(run)
	go s.dispatch()
	go s.ping(run)
	go s.touch(run)
	return nil
}

// Ready returns a channel closed once the first subscription has been
// confirmed and its OnReset has returned.
func (s *Subscriber) Ready() <-chan struct{} { return s.firstReset }

// Stop closes the subscription, stops every goroutine and waits for them,
// or returns an error wrapping ctx.Err() if ctx ends first (the goroutines
// still stop). Messages still queued are dropped. Healthy is false from the
// moment Stop is called. Stop is safe to call more than once, concurrently,
// and before Start (which then returns ErrStopped).
func (s *Subscriber) Stop(ctx context.Context) error {
	s.mu.Lock()
	started := s.started
	var ps subscription
	if !s.stopping {
		s.stopping = true
		if s.cancel != nil {
			s.cancel() // aborts a dial in progress before ps.Close waits for it
		}
		close(s.stop)
		ps, s.ps = s.ps, nil
	}
	s.mu.Unlock()
	s.loss("stopped", nil, true)
	if ps != nil {
		ps.Close()
	}
	if !started {
		return nil
	}
	for _, done := range []chan struct{}{s.readDone, s.dispatchDone, s.pingDone, s.touchDone} {
		select {
		case <-done:
		case <-ctx.Done():
			return fmt.Errorf("bus: stop: %w", ctx.Err())
		}
	}
	return nil
}

// Healthy reports whether every invalidation published so far has been
// received or covered by an OnReset: true from the moment an OnReset that
// followed the last subscription confirmation returns, until the next sign
// that messages may have been lost (a receive error, a PING unanswered for
// PingTimeout, a queue overflow, Stop). With Options.MaxStaleness set it
// also requires the last proof to be younger than MaxStaleness: so Healthy
// is never true later than MaxStaleness after the publication of an
// invalidation the subscriber has not applied. It is false before Start
// and after Stop. It is one atomic load, with no clock read, cheap enough
// for every cache read: timers and the dispatcher change it, not readers.
func (s *Subscriber) Healthy() bool { return s.healthy.Load() }

// ProofAge returns how long ago the PING (on a Cluster, the probe round, or
// for a reset, the subscription's confirmation) of the last proof applied
// was sent, or -1 before the first proof. It keeps growing after Stop.
func (s *Subscriber) ProofAge() time.Duration {
	at := s.proofAt.Load()
	if at == noProof {
		return -1
	}
	return s.mono() - time.Duration(at)
}

// Stats returns the counters. Each is read atomically; together they are
// not a snapshot.
func (s *Subscriber) Stats() Stats {
	return Stats{
		Received:      s.received.Load(),
		Delivered:     s.delivered.Load(),
		Malformed:     s.malformed.Load(),
		Overflows:     s.overflows.Load(),
		Resets:        s.resets.Load(),
		Reconnects:    s.reconnects.Load(),
		Moves:         s.moves.Load(),
		Proofs:        s.proofs.Load(),
		ProofExpiries: s.proofExpiries.Load(),
		ProofAge:      s.ProofAge(),
		Healthy:       s.healthy.Load(),
	}
}

// mono is the time on s.clock since s.base: the scale of proof stamps,
// monotonic with the real clock.
func (s *Subscriber) mono() time.Duration { return s.clock.Now().Sub(s.base) }

// settle sets healthy from its parts and, when it changes, logs it and
// tells onHealth. A fall is logged at level with attrs, or, when the only
// missing part is a fresh proof, counted as a proof expiry and logged at
// warn level with the proof's age. It reports whether healthy changed. The
// caller holds stateMu.
func (s *Subscriber) settle(level slog.Level, attrs ...any) bool {
	h := !s.closed && s.subscribed && (s.opts.MaxStaleness == 0 || s.fresh)
	if h == s.healthy.Load() {
		return false
	}
	if !h && !s.closed && s.subscribed {
		s.proofExpiries.Add(1) // before the fall, for whoever sees it
		level = slog.LevelWarn
		attrs = []any{"reason", "no proof within MaxStaleness", "proof_age", s.mono() - time.Duration(s.proofAt.Load())}
	}
	s.healthy.Store(h)
	if h {
		s.log.Info("bus: healthy")
	} else {
		s.log.Log(context.Background(), level, "bus: unhealthy", attrs...)
	}
	if s.onHealth != nil {
		s.onHealth(h)
	}
	return true
}

// loss records a sign that messages may have been lost: Healthy becomes
// false and only a reset for the returned epoch, or a later one, can make it
// true again. final marks Stop, after which nothing can.
func (s *Subscriber) loss(reason string, err error, final bool) uint64 {
	s.stateMu.Lock()
	defer s.stateMu.Unlock()
	s.epoch++
	s.closed = s.closed || final
	lost := s.subscribed
	s.subscribed = false
	if final && s.expiry != nil {
		s.expiry.Stop()
		s.expiry = nil
	}
	level := slog.LevelWarn
	if final {
		level = slog.LevelInfo
	}
	attrs := []any{"reason", reason}
	if err != nil {
		attrs = append(attrs, "error", err)
	}
	if !s.settle(level, attrs...) && lost {
		// Unhealthy already, for want of a proof: the loss is news all the same.
		s.log.Log(context.Background(), level, "bus: unhealthy", attrs...)
	}
	return s.epoch
}

// recovered makes the subscription healthy after a reset for epoch e,
// unless a loss was signalled since, and applies the reset as a proof
// stamped at. Healthy follows unless the proof is already too old.
func (s *Subscriber) recovered(e uint64, at time.Duration) {
	s.stateMu.Lock()
	defer s.stateMu.Unlock()
	if s.closed || s.epoch != e {
		return
	}
	s.subscribed = true
	s.prove(at)
	_ = s.settle(slog.LevelWarn)
}

// proved applies a proof stamped at that came through the queue.
func (s *Subscriber) proved(at time.Duration) {
	s.stateMu.Lock()
	if !s.closed {
		s.prove(at)
		_ = s.settle(slog.LevelWarn)
	}
	s.stateMu.Unlock()
	if s.onProof != nil {
		s.onProof(at)
	}
}

// prove records a proof stamped at, unless a newer one was recorded, and
// with MaxStaleness set arms the timer that clears fresh when it runs out.
// The caller holds stateMu and settles.
func (s *Subscriber) prove(at time.Duration) {
	if int64(at) <= s.proofAt.Load() {
		return
	}
	s.proofAt.Store(int64(at))
	s.proofs.Add(1)
	if s.opts.MaxStaleness == 0 {
		return
	}
	s.arm(at + s.opts.MaxStaleness - s.mono())
}

// arm sets fresh to whether left is positive and, if it is, replaces the
// expiry timer with one due in left. The caller holds stateMu.
func (s *Subscriber) arm(left time.Duration) {
	if s.expiry != nil {
		s.expiry.Stop()
		s.expiry = nil
	}
	s.fresh = left > 0
	if s.fresh {
		s.expiry = s.clock.AfterFunc(left, s.expire)
	}
}

// expire is the expiry timer: it clears fresh once the last proof is
// MaxStaleness old, which makes Healthy false until the next proof.
func (s *Subscriber) expire() {
	s.stateMu.Lock()
	defer s.stateMu.Unlock()
	if s.closed || !s.fresh {
		return
	}
	age := s.mono() - time.Duration(s.proofAt.Load())
	if left := s.opts.MaxStaleness - age; left > 0 {
		s.arm(left) // a newer proof came while this call waited for the lock
		return
	}
	s.expiry = nil
	s.fresh = false
	_ = s.settle(slog.LevelWarn)
}

// current returns the subscription to ping, or nil.
func (s *Subscriber) current() subscription {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.ps
}

// install makes ps the current subscription, unless Stop was called.
func (s *Subscriber) install(ps subscription) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopping {
		return false
	}
	s.ps = ps
	return true
}

// fail abandons ps if it is still the current subscription: it is closed
// (which ends a Receive in progress) and a loss is recorded; the read loop
// then opens a new one. A ps already abandoned, or Stop, makes it a no-op,
// so that each failure is handled once; fail reports whether it abandoned ps.
func (s *Subscriber) fail(ps subscription, reason string, err error) bool {
	s.mu.Lock()
	if s.ps != ps || s.stopping {
		s.mu.Unlock()
		return false
	}
	s.ps = nil
	s.mu.Unlock()
	s.loss(reason, err, false)
	ps.Close()
	return true
}

// read is the read loop. It owns every subscription it opens: it opens one,
// receives until an error, and opens the next after a wait. It never blocks
// on anything but Redis: messages go to the queue without waiting.
func (s *Subscriber) read(ctx context.Context) {
	defer close(s.readDone)
	dec := newDecoder()
	defer dec.release()
	var (
		ps        subscription
		attempt   int       // failed attempts since the last stable subscription
		confirmed time.Time // when ps's subscription was confirmed; zero before
		first     = true    // no subscription confirmed yet
	)
	for {
		if ps == nil {
			if !s.wait(retryDelay(attempt)) {
				return
			}
			if s.opts.Sharded {
				ps = s.subscribeSharded(ctx)
			} else {
				ps = s.subscribe(ctx)
			}
			if ps == nil {
				if ctx.Err() != nil {
					return
				}
				attempt++
				continue
			}
			confirmed = time.Time{}
		}
		msg, err := ps.Receive(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return // Stop closed ps
			}
			s.fail(ps, "receive", err)
			if !confirmed.IsZero() && time.Since(confirmed) > stableAfter {
				attempt = 0
			}
			attempt++
			ps = nil
			continue
		}
		switch msg := msg.(type) {
		case *redis.Message:
			switch msg.Channel {
			case s.opts.Channel:
				s.receive(dec, msg.Payload)
				if s.afterReceive != nil {
					s.afterReceive()
				}
			case s.probeChannel:
				s.probed(msg.Payload)
			}
		case *redis.Pong:
			s.pinged(msg.Payload)
		case *redis.Subscription:
			if msg.Kind == "subscribe" && msg.Channel == s.probeChannel && s.probeChannel != "" {
				continue
			}
			if msg.Kind != "subscribe" || msg.Channel != s.opts.Channel {
				s.fail(ps, "unexpected "+msg.Kind+" "+msg.Channel, nil)
				attempt++
				ps = nil
				continue
			}
			confirmed = time.Now()
			if !first {
				s.reconnects.Add(1)
			}
			first = false
			s.confirmed(s.mono())
			s.checkRoute()
		}
	}
}

// subscribe opens a new subscription and sends SUBSCRIBE, within the
// handshake bound. It returns nil on failure or Stop.
func (s *Subscriber) subscribe(ctx context.Context) subscription {
	ps := s.client.Subscribe(ctx) // no channel: no I/O yet
	hctx, cancel := context.WithTimeout(context.WithValue(ctx, subscriptionDial{}, s), s.timeout)
	channels := []string{s.opts.Channel}
	if s.probeChannel != "" {
		channels = append(channels, s.probeChannel) // one SUBSCRIBE: both at once
	}
	err := ps.Subscribe(hctx, channels...) // dials: the mark tells FollowMaster's hook
	cancel()
	if err != nil {
		ps.Close()
		if ctx.Err() == nil {
			s.log.Debug("bus: subscribe failed", "error", err)
			s.loss("subscribe", err, false)
		}
		return nil
	}
	if !s.install(ps) {
		ps.Close()
		return nil
	}
	return ps
}

// wait waits d, or until Stop; it reports false on Stop.
func (s *Subscriber) wait(d time.Duration) bool {
	if d <= 0 {
		select {
		case <-s.stop:
			return false
		default:
			return true
		}
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-s.stop:
		return false
	}
}

// retryDelay is the wait before connection attempt n+1 after n failures:
// none after the first, then doubling from retryBase up to retryMax, each
// with jitter in [d/2, d) so that replicas do not reconnect in step.
func retryDelay(failures int) time.Duration {
	if failures <= 1 {
		return 0
	}
	d := retryMax
	if shift := failures - 2; shift < 16 {
		d = min(retryBase<<shift, retryMax)
	}
	return d/2 + rand.N(d/2)
}

// confirmed handles a subscription confirmation read at at: messages
// published before it may have been missed, so a reset is queued behind the
// messages already received and ahead of those that follow. On a Cluster
// the pinger queues it, once every master's probe has arrived.
func (s *Subscriber) confirmed(at time.Duration) {
	r := resetAt{epoch: s.loss("subscribed", nil, false), at: at}
	if !s.probing {
		s.queueReset(r)
		return
	}
	select { // only the read loop sends: after the drain there is room
	case <-s.probeReq:
	default:
	}
	s.probeReq <- r
}

// queueReset queues r behind what is queued.
func (s *Subscriber) queueReset(r resetAt) {
	select {
	case s.queue <- event{reset: r.epoch, at: r.at}:
	default:
		s.overflow()
	}
}

// queueProof queues a proof stamped at behind what is queued. A full queue
// drops it: nothing was lost, the proof only comes later.
func (s *Subscriber) queueProof(at time.Duration) {
	select {
	case s.queue <- event{proof: true, at: at}:
	default:
	}
}

// receive decodes one payload and queues it without waiting.
func (s *Subscriber) receive(dec *decoder, payload string) {
	s.received.Add(1)
	var (
		m   Message
		err error
	)
	if len(payload) > s.opts.Limits.MaxBytes {
		err = fmt.Errorf("%w: %d bytes, more than %d", ErrTooLarge, len(payload), s.opts.Limits.MaxBytes)
	} else {
		m, err = dec.decode(payload, s.opts.Limits)
	}
	if err != nil {
		s.malformed.Add(1)
		if s.firstLog.CompareAndSwap(false, true) {
			s.log.Warn("bus: malformed message ignored; further ones are logged at debug level", "error", err)
		} else {
			s.log.Debug("bus: malformed message ignored", "error", err)
		}
		if errors.Is(err, ErrVersion) || errors.Is(err, ErrTooLarge) {
			// It may have been an invalidation this replica cannot read:
			// evict everything rather than risk serving what it named.
			if s.opts.OnUnreadable != nil {
				s.opts.OnUnreadable(err)
			}
			s.requestReset("unreadable message", err)
		}
		return
	}
	select {
	case s.queue <- event{msg: m}:
	default:
		s.overflow()
	}
}

// overflow drops a message: Healthy becomes false at once and the
// dispatcher is asked to reset after the item it is handling.
func (s *Subscriber) overflow() {
	s.overflows.Add(1)
	s.requestReset("queue overflow", nil)
}

// requestReset records a loss and asks the dispatcher to reset for it
// after the item it is handling.
func (s *Subscriber) requestReset(reason string, err error) {
	s.resetReq.Store(s.loss(reason, err, false))
	signal(s.wake)
}

// signal wakes the goroutine waiting on ch, a channel of capacity 1,
// without blocking: a wake already pending covers this one.
func signal(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// dispatch is the dispatcher: it calls Handler and OnReset in queue order,
// and OnReset again after the current item when an overflow asked for it.
func (s *Subscriber) dispatch() {
	defer close(s.dispatchDone)
	first := true
	for {
		select {
		case <-s.stop:
			return
		case ev := <-s.queue:
			switch {
			case ev.reset != 0:
				s.reset(resetAt{epoch: ev.reset, at: ev.at}, &first)
			case ev.proof:
				s.proved(ev.at)
			default:
				s.opts.Handler(ev.msg)
				s.delivered.Add(1)
			}
		case <-s.wake:
		}
		if e := s.resetReq.Swap(0); e != 0 {
			// Stamped before OnReset: its flush covers whatever was
			// published before it, received or not.
			s.reset(resetAt{epoch: e, at: s.mono()}, &first)
		}
	}
}

// reset calls OnReset for r, then makes the subscription healthy if no loss
// came since r's, with r's stamp as a proof.
func (s *Subscriber) reset(r resetAt, first *bool) {
	if s.opts.OnReset != nil {
		s.opts.OnReset()
	}
	s.resets.Add(1)
	s.recovered(r.epoch, r.at)
	if s.onProof != nil {
		s.onProof(r.at)
	}
	if *first {
		*first = false
		close(s.firstReset)
	}
}

// sentPing is a PING written and not yet known answered.
type sentPing struct {
	seq uint64
	at  time.Time // on s.clock, read before the write
}

// pinger is the state of the pinger goroutine: the PINGs in flight on one
// subscription and, on a Cluster, its probe round.
type pinger struct {
	s     *Subscriber
	ps    subscription // the subscription the PINGs and the round are on; nil if none
	seq   uint64       // the last PING's number, on any subscription
	sent  []sentPing   // PINGs on ps not known answered, oldest first
	next  time.Time    // when the next PING is due
	round probeRound   // the probe round in progress, on a Cluster
	n     uint64       // the last probe round's number
}

// probeRound is a probe round in progress (probe.go).
type probeRound struct {
	active  bool
	start   time.Time // before the first PUBLISH
	masters int64     // probes to wait for
	reset   resetAt   // queued when the round completes; zero epoch if none
}

// ping is the pinger. Every cadence (PingInterval, or MaxStaleness/5 if
// shorter) it writes a PING on the current subscription, numbered and
// stamped with its send time, without waiting for the answer to the
// previous one; the read loop matches each PONG and queues it as a proof.
// When the oldest PING has gone unanswered for PingTimeout the subscription
// is abandoned, which makes the read loop reconnect. On a Cluster it also
// runs probe rounds at the same cadence, one at a time: they, not PONGs,
// are the proofs there, and the first after a confirmation queues its reset.
func (s *Subscriber) ping(ctx context.Context) {
	defer close(s.pingDone)
	p := &pinger{s: s, next: s.clock.Now().Add(s.cadence)}
	wake := make(chan struct{}, 1)
	var pending resetAt // a Cluster confirmation waiting for its round
	for {
		now := s.clock.Now()
		if ps := s.current(); ps != p.ps {
			p.ps, p.sent = ps, p.sent[:0]
			p.endRound()
		}
		if p.ps != nil && !p.check(now) {
			continue // abandoned: start again with the next subscription
		}
		if pending.epoch != 0 {
			r := pending
			pending = resetAt{}
			if p.ps != nil && !p.startRound(ctx, now, r) {
				continue
			}
		}
		if !now.Before(p.next) {
			p.next = now.Add(s.cadence)
			if p.ps != nil && (!p.send(ctx, now) || s.probing && !p.round.active && !p.startRound(ctx, now, resetAt{})) {
				continue
			}
		}

		due := p.next
		if len(p.sent) > 0 {
			due = minTime(due, p.sent[0].at.Add(s.opts.PingTimeout))
		}
		if p.round.active {
			due = minTime(due, p.round.start.Add(s.opts.PingTimeout))
		}
		t := s.clock.AfterFunc(due.Sub(s.clock.Now()), func() { signal(wake) })
		select {
		case <-s.stop:
			t.Stop()
			return
		case <-wake:
		case <-s.pong:
		case pending = <-s.probeReq:
			p.endRound() // a round begun before the confirmation proves nothing of it
		}
		t.Stop()
	}
}

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

// check forgets the PINGs answered and completes the probe round if its
// probes all arrived; it abandons the subscription, and reports false, when
// the oldest PING or the round is PingTimeout old.
func (p *pinger) check(now time.Time) bool {
	s := p.s
	answered := s.pongSeq.Load()
	i := 0
	for i < len(p.sent) && p.sent[i].seq <= answered {
		i++
	}
	p.sent = p.sent[i:]
	if len(p.sent) > 0 && now.Sub(p.sent[0].at) >= s.opts.PingTimeout {
		s.fail(p.ps, "ping timeout", nil)
		return false
	}
	if !p.round.active {
		return true
	}
	if s.probe.seen.Load() >= p.round.masters {
		if p.round.reset.epoch != 0 {
			s.queueReset(p.round.reset)
		}
		s.queueProof(p.round.start.Sub(s.base))
		p.endRound()
		return true
	}
	if now.Sub(p.round.start) >= s.opts.PingTimeout {
		s.fail(p.ps, "cluster probe timeout: a master's broadcasts do not reach this node", nil)
		return false
	}
	return true
}

// send writes the next PING on p.ps, stamped now. It abandons the
// subscription, and reports false, when the write fails.
func (p *pinger) send(ctx context.Context, now time.Time) bool {
	s := p.s
	p.seq++
	payload := strconv.FormatUint(p.seq, 10) + ":" + strconv.FormatInt(int64(now.Sub(s.base)), 10)
	pctx, cancel := context.WithTimeout(ctx, s.opts.PingTimeout)
	err := p.ps.Ping(pctx, payload)
	cancel()
	if err != nil {
		s.fail(p.ps, "ping", err)
		return false
	}
	p.sent = append(p.sent, sentPing{seq: p.seq, at: now})
	if s.onPing != nil {
		s.onPing(p.seq)
	}
	return true
}

// pinged records a PONG seen by the read loop: its payload is the PING's
// number and stamp. Outside a Cluster it queues the proof.
func (s *Subscriber) pinged(payload string) {
	num, stamp, ok := strings.Cut(payload, ":")
	seq, err := strconv.ParseUint(num, 10, 64)
	if !ok || err != nil || seq <= s.pongSeq.Load() {
		return // not one of ours, or late
	}
	at, err := strconv.ParseInt(stamp, 10, 64)
	if err != nil {
		return
	}
	s.pongSeq.Store(seq) // the read loop is the only writer
	if !s.probing {
		// On a Cluster the node's answer says nothing of what the other
		// masters broadcast: probe rounds are the proofs there.
		s.queueProof(time.Duration(at))
	}
	if s.onPong != nil {
		s.onPong(seq)
	}
	signal(s.pong)
}

// touch is the goroutine of Options.FollowMaster: every PingInterval it
// touches the client's data path (touchData). Without a followed client it
// returns at once.
func (s *Subscriber) touch(ctx context.Context) {
	defer close(s.touchDone)
	if s.followed == nil {
		return
	}
	wake := make(chan struct{}, 1)
	for {
		t := s.clock.AfterFunc(s.opts.PingInterval, func() { signal(wake) })
		select {
		case <-s.stop:
			t.Stop()
			return
		case <-wake:
		}
		s.touchData(ctx)
	}
}
