package bus

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strconv"
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
)

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
	// have evicted (the cache flushes every L1 and voids fills in flight).
	// Healthy becomes true only after it returns. Nil means nothing to do.
	OnReset func() `yaml:"-" json:"-"`
	// QueueSize is the number of decoded messages waiting for Handler.
	// Zero means DefaultQueueSize (8192 messages).
	QueueSize int `yaml:"queueSize" json:"queueSize"`
	// PingInterval is the time between health PINGs on the pub/sub
	// connection, counted from the answer to the previous one. Zero means
	// DefaultPingInterval (1s).
	PingInterval time.Duration `yaml:"pingInterval" json:"pingInterval"`
	// PingTimeout is how long a PING may go unanswered before the
	// subscriber marks itself unhealthy and reconnects. A PONG queues
	// behind the messages Redis has not delivered yet, so this is also the
	// most the subscriber may lag behind Redis before it drops that backlog
	// and resets. It also bounds a connection handshake, with a floor of
	// one second. Zero means DefaultPingTimeout (1s).
	PingTimeout time.Duration `yaml:"pingTimeout" json:"pingTimeout"`
	// FollowMaster makes the subscriber follow a *redis.Client (plain or
	// Sentinel failover) to whichever server its data connections go to:
	// when the client dials a server other than the subscription's, as a
	// failover client does after +switch-master, the subscription is
	// abandoned and opened again there, with the usual reset. It adds a
	// dial hook to the client, inert after Stop, and one PING on the data
	// path per PingInterval. Ignored for other clients (Cluster delivers
	// every PUBLISH to every node). The cache sets it.
	FollowMaster bool `yaml:"followMaster" json:"followMaster"`
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
	// Healthy is Healthy() at the time of the call.
	Healthy bool `json:"healthy"`
}

// event is one item of the queue: a message, or a reset when reset != 0.
type event struct {
	msg   Message
	reset uint64 // epoch of the subscription confirmation to reset for
}

// pad keeps what different goroutines write off each other's cache lines.
type pad [64]byte

// Subscriber receives invalidations on one channel and hands them to a
// Handler, from its own goroutines: a read loop that owns the pub/sub
// connection and never blocks, a dispatcher that calls Handler and OnReset,
// and a pinger that checks the connection. Use NewSubscriber, then Start and
// Stop; its methods are safe for concurrent use.
type Subscriber struct {
	client  Client
	opts    Options // defaults applied
	log     *slog.Logger
	timeout time.Duration // handshake bound

	queue      chan event
	wake       chan struct{} // cap 1: resetReq was set
	pong       chan struct{} // cap 1: pongSeq advanced, or a probe arrived
	probeReq   chan uint64   // cap 1: a Cluster subscription confirmed, for the epoch to reset
	stop       chan struct{} // closed by Stop
	firstReset chan struct{} // closed by the dispatcher when the first OnReset returned

	readDone, dispatchDone, pingDone chan struct{} // closed by each goroutine as it returns

	// onHealth, when set (by tests, before Start), is called on every
	// change of Healthy, under stateMu, in order. It must not block.
	onHealth func(bool)
	// afterReceive, when set (by tests, before Start), is called by the
	// read loop after it has handled each message of the channel.
	afterReceive func()
	// onPong, when set (by tests, before Start), is called by the read loop
	// with the sequence number of each PONG it matched to a PING.
	onPong func(seq uint64)

	mu       sync.Mutex // protects started, stopping, ps, cancel
	started  bool
	stopping bool
	ps       *redis.PubSub // the subscription the pinger checks; nil between connections
	cancel   context.CancelFunc

	stateMu sync.Mutex // protects epoch, closed and the changes of healthy
	epoch   uint64     // incremented at every sign of possible loss
	closed  bool       // Stop was called: never healthy again

	cluster      *redis.ClusterClient // the client, if a Cluster one: probed through every master
	probeChannel string               // this subscriber's own probe channel, on a Cluster
	probe        probeState

	followed *redis.Client // the client FollowMaster probes and hooks; nil if none
	routeMu  sync.Mutex    // protects subAddr, dataAddr
	subAddr  string        // remote address of the last subscription dial
	dataAddr string        // remote address of the client's last other dial

	resetReq atomic.Uint64 // epoch an overflow asks the dispatcher to reset for; 0 = none
	pongSeq  atomic.Uint64 // highest PING sequence answered
	firstLog atomic.Bool   // a malformed message was logged at warn level

	_       pad
	healthy atomic.Bool // read by every cache read: alone on its line
	_       pad

	// Written by the read loop (moves also by the client's dials).
	received, malformed, overflows, reconnects, moves atomic.Uint64
	_                                                 pad

	// Written by the dispatcher.
	delivered, resets atomic.Uint64
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
	}
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
		queue:        make(chan event, opts.QueueSize),
		wake:         make(chan struct{}, 1),
		pong:         make(chan struct{}, 1),
		probeReq:     make(chan uint64, 1),
		stop:         make(chan struct{}),
		firstReset:   make(chan struct{}),
		readDone:     make(chan struct{}),
		dispatchDone: make(chan struct{}),
		pingDone:     make(chan struct{}),
	}
	s.followed = s.follow(c)
	if s.cluster = clusterOf(c); s.cluster != nil {
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
	var ps *redis.PubSub
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
	for _, done := range []chan struct{}{s.readDone, s.dispatchDone, s.pingDone} {
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
// PingTimeout, a queue overflow, Stop). It is false before Start. It is one
// atomic load, cheap enough for every cache read.
func (s *Subscriber) Healthy() bool { return s.healthy.Load() }

// Stats returns the counters. Each is read atomically; together they are
// not a snapshot.
func (s *Subscriber) Stats() Stats {
	return Stats{
		Received:   s.received.Load(),
		Delivered:  s.delivered.Load(),
		Malformed:  s.malformed.Load(),
		Overflows:  s.overflows.Load(),
		Resets:     s.resets.Load(),
		Reconnects: s.reconnects.Load(),
		Moves:      s.moves.Load(),
		Healthy:    s.healthy.Load(),
	}
}

// loss records a sign that messages may have been lost: Healthy becomes
// false and only a reset for the returned epoch, or a later one, can make it
// true again. final marks Stop, after which nothing can.
func (s *Subscriber) loss(reason string, err error, final bool) uint64 {
	s.stateMu.Lock()
	defer s.stateMu.Unlock()
	s.epoch++
	s.closed = s.closed || final
	if s.healthy.Load() {
		s.healthy.Store(false)
		level := slog.LevelWarn
		if final {
			level = slog.LevelInfo
		}
		attrs := []any{"reason", reason}
		if err != nil {
			attrs = append(attrs, "error", err)
		}
		s.log.Log(context.Background(), level, "bus: unhealthy", attrs...)
		if s.onHealth != nil {
			s.onHealth(false)
		}
	}
	return s.epoch
}

// recovered makes Healthy true after a reset for epoch e, unless a loss was
// signalled since.
func (s *Subscriber) recovered(e uint64) {
	s.stateMu.Lock()
	defer s.stateMu.Unlock()
	if s.closed || s.epoch != e || s.healthy.Load() {
		return
	}
	s.healthy.Store(true)
	s.log.Info("bus: healthy")
	if s.onHealth != nil {
		s.onHealth(true)
	}
}

// current returns the subscription to ping, or nil.
func (s *Subscriber) current() *redis.PubSub {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.ps
}

// install makes ps the current subscription, unless Stop was called.
func (s *Subscriber) install(ps *redis.PubSub) bool {
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
func (s *Subscriber) fail(ps *redis.PubSub, reason string, err error) bool {
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
		ps        *redis.PubSub
		attempt   int       // failed attempts since the last stable subscription
		confirmed time.Time // when ps's subscription was confirmed; zero before
		first     = true    // no subscription confirmed yet
	)
	for {
		if ps == nil {
			if !s.wait(retryDelay(attempt)) {
				return
			}
			ps = s.subscribe(ctx)
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
			s.subscribed()
			s.checkRoute()
		}
	}
}

// subscribe opens a new subscription and sends SUBSCRIBE, within the
// handshake bound. It returns nil on failure or Stop.
func (s *Subscriber) subscribe(ctx context.Context) *redis.PubSub {
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

// subscribed handles a subscription confirmation: messages published before
// it may have been missed, so a reset is queued behind the messages already
// received and ahead of those that follow. On a Cluster the pinger queues
// it, once every master's probe has arrived.
func (s *Subscriber) subscribed() {
	e := s.loss("subscribed", nil, false)
	if s.cluster == nil {
		s.queueReset(e)
		return
	}
	select { // only the read loop sends: after the drain there is room
	case <-s.probeReq:
	default:
	}
	s.probeReq <- e
}

// queueReset queues a reset for epoch e behind what is queued.
func (s *Subscriber) queueReset(e uint64) {
	select {
	case s.queue <- event{reset: e}:
	default:
		s.overflow()
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
			if ev.reset != 0 {
				s.reset(ev.reset, &first)
			} else {
				s.opts.Handler(ev.msg)
				s.delivered.Add(1)
			}
		case <-s.wake:
		}
		if e := s.resetReq.Swap(0); e != 0 {
			s.reset(e, &first)
		}
	}
}

func (s *Subscriber) reset(e uint64, first *bool) {
	if s.opts.OnReset != nil {
		s.opts.OnReset()
	}
	s.resets.Add(1)
	s.recovered(e)
	if *first {
		*first = false
		close(s.firstReset)
	}
}

// ping is the pinger: every PingInterval it sends a numbered PING on the
// current subscription and waits PingTimeout for the read loop to see the
// matching PONG; if it does not, the subscription is abandoned, which makes
// the read loop reconnect. On a Cluster it also runs the probe rounds.
func (s *Subscriber) ping(ctx context.Context) {
	defer close(s.pingDone)
	t := time.NewTimer(s.opts.PingInterval)
	defer t.Stop()
	var seq uint64
	for {
		var reset uint64 // a Cluster subscription to make healthy, by its epoch
		select {
		case <-s.stop:
			return
		case <-t.C:
		case reset = <-s.probeReq:
		}
		if ps := s.current(); ps != nil {
			seq++
			if reset == 0 {
				if !s.pingOnce(ctx, ps, seq) {
					return
				}
				s.touchData(ctx)
			}
			if s.cluster != nil && s.current() == ps && s.probeRound(ctx, ps, seq) && reset != 0 {
				s.queueReset(reset)
			}
		}
		t.Reset(s.opts.PingInterval)
	}
}

// pingOnce reports false on Stop.
func (s *Subscriber) pingOnce(ctx context.Context, ps *redis.PubSub, seq uint64) bool {
	pctx, cancel := context.WithTimeout(ctx, s.opts.PingTimeout)
	err := ps.Ping(pctx, strconv.FormatUint(seq, 10))
	cancel()
	if err != nil {
		s.fail(ps, "ping", err)
		return true
	}
	_, stopped := s.awaitRead(ps, func() bool { return s.pongSeq.Load() >= seq }, "ping timeout")
	return !stopped
}

// awaitRead waits up to PingTimeout for done to hold, re-checking it each
// time the read loop signals s.pong. When time runs out it abandons ps,
// giving reason. It reports whether done held, and whether Stop came first.
func (s *Subscriber) awaitRead(ps *redis.PubSub, done func() bool, reason string) (ok, stopped bool) {
	deadline := time.NewTimer(s.opts.PingTimeout)
	defer deadline.Stop()
	for !done() {
		select {
		case <-s.pong:
		case <-deadline.C:
			s.fail(ps, reason, nil)
			return false, false
		case <-s.stop:
			return false, true
		}
	}
	return true, false
}

// pinged records a PONG seen by the read loop.
func (s *Subscriber) pinged(payload string) {
	seq, err := strconv.ParseUint(payload, 10, 64)
	if err != nil || seq <= s.pongSeq.Load() {
		return // not one of ours, or late
	}
	s.pongSeq.Store(seq) // the read loop is the only writer
	if s.onPong != nil {
		s.onPong(seq)
	}
	signal(s.pong)
}
