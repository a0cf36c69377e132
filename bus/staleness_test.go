package bus

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/tiercache/tiercache/internal/redistest"
)

// testMaxStaleness is the bound of the tests below: the cache's default.
const testMaxStaleness = 500 * time.Millisecond

// holdKeyspace marks the message a holdingHandler blocks on.
const holdKeyspace = "hold"

// proofs records, without ever blocking the dispatcher, the stamp of each
// proof it handles.
func proofs(s *Subscriber) <-chan time.Duration {
	ch := make(chan time.Duration, 1<<14)
	s.onProof = func(at time.Duration) {
		select {
		case ch <- at:
		default:
		}
	}
	return ch
}

// awaitProof waits for a proof stamped after after and returns its stamp.
func awaitProof(t *testing.T, ctx context.Context, ch <-chan time.Duration, after time.Duration) time.Duration {
	t.Helper()
	for {
		if at := await(t, ctx, ch, "a proof stamped after "+after.String()); at > after {
			return at
		}
	}
}

// holdingHandler returns a Handler that records into r and blocks on every
// message of holdKeyspace, signalling entered, until release is closed.
func holdingHandler(r *recorder, entered chan<- struct{}, release <-chan struct{}) func(Message) {
	return func(m Message) {
		if m.Keyspace == holdKeyspace {
			entered <- struct{}{}
			<-release
		}
		r.msgs <- m
	}
}

// stall publishes a message that the holdingHandler blocks on, and waits
// until the dispatcher is inside it.
func stall(t *testing.T, ctx context.Context, c *redis.Client, entered <-chan struct{}) {
	t.Helper()
	publish(t, ctx, c, Message{Keyspace: holdKeyspace, Keys: []string{"x"}})
	await(t, ctx, entered, "the dispatcher to enter the held message")
}

// expectHealth waits for the next change of health and checks it.
func expectHealth(t *testing.T, ctx context.Context, r *recorder, want bool) {
	t.Helper()
	if got := await(t, ctx, r.health, map[bool]string{false: "unhealthy", true: "healthy"}[want]); got != want {
		t.Fatalf("health change = %t; want %t", got, want)
	}
}

// steady waits until the subscriber is healthy on a PING's proof, and
// forgets the health changes seen so far (a loaded machine may have delayed
// a proof past the bound); it returns the Stats then.
func steady(t *testing.T, ctx context.Context, s *Subscriber, r *recorder, got <-chan time.Duration) Stats {
	t.Helper()
	for {
		awaitProof(t, ctx, got, s.mono()-1) // sent after this call began
		for len(r.health) > 0 {
			<-r.health
		}
		if st := s.Stats(); st.Healthy {
			return st
		}
	}
}

// proxied returns a client whose connections go through a new proxy in
// front of srv.
func proxied(t *testing.T, srv *redistest.Server) (*redis.Client, *redistest.Proxy) {
	p := redistest.StartProxy(t, srv.Addr)
	o := srv.Options()
	o.Addr = p.Addr
	c := redis.NewClient(o)
	t.Cleanup(func() { c.Close() })
	return c, p
}

// TestProofBoundExact drives the clock by hand. After a proof stamped T, and
// with the dispatcher stalled so that no newer one can apply, Healthy is
// true at T+MaxStaleness-1ns and false at T+MaxStaleness, although a PING
// sent meanwhile has been answered: its proof waits behind the stalled
// message. Once the dispatcher drains, that proof makes it true again,
// without a reset. The proof at T is the first reset (stamped at the
// subscription's confirmation) or an answered PING (stamped when sent).
func TestProofBoundExact(t *testing.T) {
	tests := []struct {
		name string
		ping bool // renew the proof with a PING before stalling
	}{
		{name: "reset", ping: false},
		{name: "answered ping", ping: true},
	}
	srv := redistest.Start(t)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := testContext(t)
			c := srv.Client(t)
			clk := newFakeClock()
			r := newRecorder()
			entered, release := make(chan struct{}, 1), make(chan struct{})
			opts := r.options()
			opts.MaxStaleness = testMaxStaleness
			opts.Handler = holdingHandler(r, entered, release)
			s := newSub(t, c, r, opts)
			useClock(s, clk)
			got := proofs(s)
			pongs := make(chan uint64, 64)
			s.onPong = func(seq uint64) { pongs <- seq }
			base := clk.Now()
			if age := s.ProofAge(); age != -1 {
				t.Errorf("ProofAge before Start = %v; want -1", age)
			}
			startSub(t, ctx, s, r)

			proof := await(t, ctx, got, "the first reset's proof")
			if proof != 0 {
				t.Fatalf("first reset's proof stamped %v; want 0, the confirmation's time", proof)
			}
			if tt.ping {
				cadence := testMaxStaleness / proofsPerBound
				clk.awaitTimer(t, ctx, base.Add(cadence)) // the pinger's first PING
				clk.Advance(cadence)
				if proof = awaitProof(t, ctx, got, proof); proof != cadence {
					t.Fatalf("PING proof stamped %v; want %v, when it was sent", proof, cadence)
				}
				await(t, ctx, pongs, "the PONG")
			}
			stall(t, ctx, c, entered)

			clk.AdvanceTo(t, base.Add(proof+testMaxStaleness-1)) // the pinger's next tick is due
			await(t, ctx, pongs, "the PONG of a PING sent during the stall")
			if !s.Healthy() {
				t.Fatalf("Healthy at T+MaxStaleness-1ns = false; want true")
			}
			if age := s.ProofAge(); age != testMaxStaleness-1 {
				t.Errorf("ProofAge at T+MaxStaleness-1ns = %v; want %v", age, testMaxStaleness-1)
			}
			clk.Advance(1)
			if s.Healthy() {
				t.Fatalf("Healthy at T+MaxStaleness = true; want false")
			}
			expectHealth(t, ctx, r, false)
			st := s.Stats()
			if st.ProofExpiries != 1 || st.Healthy || st.ProofAge != testMaxStaleness {
				t.Errorf("Stats at T+MaxStaleness = %+v; want 1 proof expiry, unhealthy, proof age %v", st, testMaxStaleness)
			}

			close(release)
			expectHealth(t, ctx, r, true)
			if st := s.Stats(); st.Resets != 1 || st.Reconnects != 0 || st.ProofExpiries != 1 {
				t.Errorf("Stats after the drain = %+v; want 1 reset, no reconnect, 1 proof expiry", st)
			}
			if n := len(r.resets); n != 0 {
				t.Errorf("%d more OnReset calls; want none: a late proof needs no flush", n)
			}
		})
	}
}

// Without MaxStaleness a stalled dispatcher never makes Healthy false, as
// before proofs existed: the package alone keeps its behaviour. Proofs are
// still applied and counted.
func TestNoMaxStalenessNoGating(t *testing.T) {
	ctx := testContext(t)
	srv := redistest.Start(t)
	c := srv.Client(t)
	clk := newFakeClock()
	r := newRecorder()
	entered, release := make(chan struct{}, 1), make(chan struct{})
	opts := r.options()
	opts.Handler = holdingHandler(r, entered, release)
	s := newSub(t, c, r, opts)
	useClock(s, clk)
	got := proofs(s)
	startSub(t, ctx, s, r)
	base := clk.Now()

	clk.awaitTimer(t, ctx, base.Add(DefaultPingInterval))
	clk.Advance(DefaultPingInterval)
	awaitProof(t, ctx, got, 0)
	stall(t, ctx, c, entered)
	clk.Advance(time.Hour)
	if !s.Healthy() {
		t.Errorf("Healthy an hour into a stall without MaxStaleness = false; want true")
	}
	close(release)
	if st := s.Stats(); st.ProofExpiries != 0 || st.Proofs < 2 || !st.Healthy {
		t.Errorf("Stats = %+v; want no proof expiry, at least 2 proofs, healthy", st)
	}
}

// PINGs go on a fixed cadence without waiting for the answers to the ones
// before; each proof carries its PING's send time, however late the PONG;
// and PingTimeout abandons the connection when the oldest PING has gone
// unanswered for exactly PingTimeout, not before.
func TestPingsPipelined(t *testing.T) {
	const (
		pings       = 5
		pingTimeout = time.Second
		cadence     = testMaxStaleness / proofsPerBound
	)
	ctx := testContext(t)
	srv := redistest.Start(t)
	sc, proxy := proxied(t, srv)
	clk := newFakeClock()
	r := newRecorder()
	opts := r.options()
	opts.MaxStaleness = testMaxStaleness
	opts.PingTimeout = pingTimeout
	var logs *syncBuffer
	opts.Logger, logs = testLogger(t)
	s := newSub(t, sc, r, opts)
	useClock(s, clk)
	got := proofs(s)
	sent := make(chan uint64, 64)
	s.onPing = func(seq uint64) { sent <- seq }
	var answered atomic.Int64
	s.onPong = func(uint64) { answered.Add(1) }
	startSub(t, ctx, s, r)
	await(t, ctx, got, "the first reset's proof")
	base := clk.Now()
	cut := func() {
		t.Helper()
		if n := proxy.Cut(func(string) bool { return true }); n != 1 {
			t.Fatalf("Cut silenced %d connections; want 1, the subscription", n)
		}
	}
	// tick moves the clock to the i-th PING's time and returns the number
	// of the PING sent then.
	tick := func(i int) uint64 {
		t.Helper()
		at := base.Add(time.Duration(i) * cadence)
		clk.awaitTimer(t, ctx, at)
		clk.AdvanceTo(t, at)
		return await(t, ctx, sent, "a PING")
	}

	cut()
	for i := 1; i <= pings; i++ {
		if seq := tick(i); seq != uint64(i) {
			t.Fatalf("PING %d sent at tick %d; want %d", seq, i, i)
		}
	}
	if n := answered.Load(); n != 0 {
		t.Fatalf("%d PONGs through a cut connection; want 0", n)
	}
	expectHealth(t, ctx, r, false) // the reset's proof ran out at MaxStaleness

	proxy.Heal()
	for i := 1; i <= pings; i++ {
		if at, want := await(t, ctx, got, "a proof"), time.Duration(i)*cadence; at != want {
			t.Errorf("proof %d stamped %v; want %v, when its PING was sent", i, at, want)
		}
	}
	expectHealth(t, ctx, r, true)
	if st := s.Stats(); st.Resets != 1 || st.Reconnects != 0 || st.ProofExpiries != 1 || st.Proofs != pings+1 {
		t.Errorf("Stats after Heal = %+v; want 1 reset, no reconnect, 1 proof expiry, %d proofs", st, pings+1)
	}

	cut()
	oldest := base.Add((pings + 1) * cadence)
	if seq := tick(pings + 1); seq != pings+1 {
		t.Fatalf("PING %d sent; want %d", seq, pings+1)
	}
	clk.AdvanceTo(t, oldest.Add(pingTimeout-1))
	// A PING goes out at this tick only if the pinger, checking the oldest
	// PING first, kept the connection.
	if seq := await(t, ctx, sent, "a PING at PingTimeout-1ns"); seq != pings+2 {
		t.Fatalf("PING %d sent; want %d", seq, pings+2)
	}
	if s.current() == nil {
		t.Fatalf("connection abandoned before the oldest PING was PingTimeout old")
	}
	expectHealth(t, ctx, r, false) // the last proof ran out meanwhile
	clk.awaitTimer(t, ctx, oldest.Add(pingTimeout))
	clk.Advance(1)
	expectHealth(t, ctx, r, true) // on a new connection, after its reset
	if st := s.Stats(); st.Reconnects != 1 || st.Resets != 2 || st.ProofExpiries != 2 {
		t.Errorf("Stats = %+v; want 1 reconnect, 2 resets, 2 proof expiries", st)
	}
	if got, want := logs.String(), `reason="ping timeout"`; !strings.Contains(got, want) {
		t.Errorf("logs = %q; want them to contain %q", got, want)
	}
}

// A subscription that a partition silences turns unhealthy within
// MaxStaleness of the cut, long before PingTimeout would notice, and healthy
// again when the partition heals, without a reset. Real time: the figure is
// logged, and the assertion leaves a loaded machine 250ms of slack.
func TestProofExpiresWhenCut(t *testing.T) {
	const slack = 250 * time.Millisecond
	ctx := testContext(t)
	srv := redistest.Start(t)
	sc, proxy := proxied(t, srv)
	r := newRecorder()
	opts := r.options()
	opts.MaxStaleness = testMaxStaleness
	s := newSub(t, sc, r, opts)
	got := proofs(s)
	startSub(t, ctx, s, r)
	before := steady(t, ctx, s, r, got)

	cut := time.Now()
	if n := proxy.Cut(func(string) bool { return true }); n != 1 {
		t.Fatalf("Cut silenced %d connections; want 1, the subscription", n)
	}
	expectHealth(t, ctx, r, false)
	elapsed := time.Since(cut)
	t.Logf("unhealthy %v after the cut (MaxStaleness %v, PingTimeout %v)", elapsed, testMaxStaleness, opts.PingTimeout)
	if elapsed > testMaxStaleness+slack {
		t.Errorf("unhealthy %v after the cut; want at most MaxStaleness+%v = %v", elapsed, slack, testMaxStaleness+slack)
	}
	if st := s.Stats(); st.ProofExpiries != before.ProofExpiries+1 || st.Reconnects != 0 {
		t.Errorf("Stats = %+v; want one more proof expiry (%d) and no reconnect: the proof ran out, no PING timed out", st, before.ProofExpiries+1)
	}

	proxy.Heal()
	expectHealth(t, ctx, r, true)
	if st := s.Stats(); st.Resets != 1 || st.Reconnects != 0 {
		t.Errorf("Stats after Heal = %+v; want 1 reset, no reconnect", st)
	}
	want := Message{Keyspace: "users", Keys: []string{"after-heal"}}
	publish(t, ctx, srv.Client(t), want)
	expect(t, ctx, r, want)
}

// A connection slower than MaxStaleness (each way) turns the subscriber
// unhealthy, and the PONGs that do come back, too old, cannot make it
// healthy; once the latency is gone it is healthy again without a reset.
func TestProofExpiresWithLatency(t *testing.T) {
	const latency = testMaxStaleness + 200*time.Millisecond
	ctx := testContext(t)
	srv := redistest.Start(t)
	sc, proxy := proxied(t, srv)
	r := newRecorder()
	opts := r.options()
	opts.MaxStaleness = testMaxStaleness
	s := newSub(t, sc, r, opts)
	got := proofs(s)
	startSub(t, ctx, s, r)
	before := steady(t, ctx, s, r, got)

	slowFrom := s.mono()
	proxy.SetLatency(latency)
	expectHealth(t, ctx, r, false)
	at := awaitProof(t, ctx, got, slowFrom) // a PING sent through the latency, answered
	if s.Healthy() {
		t.Errorf("Healthy after a proof %v old = true; want false", s.mono()-at)
	}
	if st := s.Stats(); st.ProofExpiries != before.ProofExpiries+1 || st.Reconnects != 0 {
		t.Errorf("Stats = %+v; want one more proof expiry (%d), no reconnect", st, before.ProofExpiries+1)
	}

	proxy.SetLatency(0)
	expectHealth(t, ctx, r, true)
	if st := s.Stats(); st.Resets != 1 || st.Reconnects != 0 {
		t.Errorf("Stats after the latency = %+v; want 1 reset, no reconnect", st)
	}
}

// dropProbes is a go-redis hook that, while on, drops the probe PUBLISHes
// sent to one node, as a broken cluster-bus link from that master would
// lose them, and reports success.
type dropProbes struct {
	addr string
	on   *atomic.Bool
}

func (h dropProbes) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h dropProbes) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		args := cmd.Args()
		if h.on.Load() && cmd.Name() == "publish" && len(args) > 1 {
			if ch, _ := args[1].(string); strings.Contains(ch, ":probe:") {
				return nil
			}
		}
		return next(ctx, cmd)
	}
}

func (h dropProbes) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

// On a Cluster the proofs are probe rounds, and they go through the
// dispatcher queue: a stalled dispatcher makes the subscriber unhealthy and
// its drain healthy again, without a reset. A master whose probes are lost
// makes it unhealthy within MaxStaleness while the subscription's node
// keeps answering PINGs (a PONG proves nothing there), and its late round
// then abandons the subscription.
func TestClusterProofsAreProbeRounds(t *testing.T) {
	const pingTimeout = 3 * time.Second
	ctx := testContext(t)
	cluster := redistest.StartCluster(t)
	var drop atomic.Bool
	victim := cluster.Addrs()[0]
	o := cluster.Options()
	o.NewClient = func(o *redis.Options) *redis.Client {
		c := redis.NewClient(o)
		if o.Addr == victim {
			c.AddHook(dropProbes{addr: victim, on: &drop})
		}
		return c
	}
	cc := redis.NewClusterClient(o)
	t.Cleanup(func() { cc.Close() })
	pub := redis.NewClient(&redis.Options{Addr: victim})
	t.Cleanup(func() { pub.Close() })

	r := newRecorder()
	entered, release := make(chan struct{}, 1), make(chan struct{})
	opts := r.options()
	opts.MaxStaleness = testMaxStaleness
	opts.PingTimeout = pingTimeout
	opts.Handler = holdingHandler(r, entered, release)
	s := newSub(t, cc, r, opts)
	got := proofs(s)
	var pongs atomic.Int64
	pong := make(chan struct{}, 1)
	s.onPong = func(uint64) { pongs.Add(1); signal(pong) }
	startSub(t, ctx, s, r)
	first := awaitProof(t, ctx, got, -1)
	for at := first; at < first+3*testMaxStaleness/proofsPerBound; {
		at = awaitProof(t, ctx, got, at) // probe rounds, stamped at their start
	}
	before := steady(t, ctx, s, r, got)

	stall(t, ctx, pub, entered)
	expectHealth(t, ctx, r, false)
	close(release)
	expectHealth(t, ctx, r, true)
	if st := s.Stats(); st.Resets != 1 || st.ProofExpiries != before.ProofExpiries+1 || st.Reconnects != 0 {
		t.Fatalf("Stats after the stall = %+v; want 1 reset, one more proof expiry, no reconnect", st)
	}
	before = steady(t, ctx, s, r, got)

	drop.Store(true)
	dropped := time.Now()
	expectHealth(t, ctx, r, false)
	t.Logf("unhealthy %v after the probes of %s were lost", time.Since(dropped), victim)
	answered := pongs.Load()
	for pongs.Load() < answered+2 {
		await(t, ctx, pong, "PONGs while the probes are lost")
	}
	if s.Healthy() {
		t.Errorf("Healthy on PONGs alone = true; want false")
	}
	if st := s.Stats(); st.ProofExpiries != before.ProofExpiries+1 || st.Reconnects != 0 {
		t.Errorf("Stats with the probes lost = %+v; want one more proof expiry, no reconnect yet", st)
	}
	drop.Store(false)
	await(t, ctx, r.resets, "the reset after the late round abandoned the subscription")
	expectHealth(t, ctx, r, true)
	if st := s.Stats(); st.Reconnects != 1 {
		t.Errorf("Stats after the late round = %+v; want 1 reconnect", st)
	}
}
