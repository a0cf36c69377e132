package bus

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/redis/go-redis/v9"
	"github.com/tiercache/tiercache/internal/redistest"
	"go.uber.org/goleak"
)

// hostileLimits are the subscriber's limits in TestHostilePayloads: small,
// so that an oversized message is cheap to publish.
var hostileLimits = Limits{MaxBytes: 512, MaxKeys: 64}

// classify returns what a subscriber with hostileLimits does with payload:
// whether it counts it as malformed, and whether it also resets because the
// message might have been an invalidation it cannot read (subscriber.go,
// receive).
func classify(payload []byte) (malformed, reset bool) {
	_, err := Unmarshal(payload, hostileLimits)
	return err != nil, errors.Is(err, ErrVersion) || errors.Is(err, ErrTooLarge)
}

// hostileHarness runs a subscriber with hostileLimits whose Handler accepts
// only the messages the test means to be valid, and records, through the
// read loop's afterReceive hook, whether each payload received was counted
// as malformed.
type hostileHarness struct {
	t   *testing.T
	ctx context.Context
	pub *redis.Client
	r   *recorder
	s   *Subscriber

	sentinels  chan string  // the key of each sentinel message handled
	flushes    atomic.Int64 // storm flush messages handled
	unexpected atomic.Int64 // handled messages the test never published as valid
	// handled counts Handler calls as they begin: unlike Stats.Delivered,
	// which the dispatcher bumps after Handler returns, it is exact when the
	// sentinel's call signals.
	handled atomic.Uint64

	mu          sync.Mutex    // protects malformedAt, lastMalformed
	malformedAt []bool        // per payload received, in order: counted as malformed
	received    chan struct{} // cap 1: malformedAt grew
	// lastMalformed is Stats.Malformed after the previous payload.
	lastMalformed uint64
}

const (
	stormKeyspace    = "storm"
	sentinelKeyspace = "sentinel"
	boundaryKeyspace = "boundary"
)

func newHostileHarness(t *testing.T, ctx context.Context, srv *redistest.Server) *hostileHarness {
	h := &hostileHarness{
		t:         t,
		ctx:       ctx,
		pub:       srv.Client(t),
		r:         newRecorder(),
		sentinels: make(chan string, 16),
		received:  make(chan struct{}, 1),
	}
	opts := h.r.options()
	opts.Limits = hostileLimits
	opts.Handler = func(m Message) {
		h.handled.Add(1)
		switch {
		case m.Keyspace == stormKeyspace && m.Flush && len(m.Keys) == 0:
			h.flushes.Add(1)
		case m.Keyspace == sentinelKeyspace && len(m.Keys) == 1:
			h.sentinels <- m.Keys[0]
		case m.Keyspace == boundaryKeyspace:
		default:
			h.unexpected.Add(1)
		}
	}
	h.s = newSub(t, srv.Client(t), h.r, opts)
	h.s.afterReceive = func() {
		h.mu.Lock()
		n := h.s.malformed.Load()
		h.malformedAt = append(h.malformedAt, n > h.lastMalformed)
		h.lastMalformed = n
		h.mu.Unlock()
		signal(h.received)
	}
	if err := h.s.Start(ctx); err != nil {
		t.Fatalf("Start: %v", err)
	}
	await(t, ctx, h.r.resets, "first reset")
	if ok := await(t, ctx, h.r.health, "healthy"); !ok {
		t.Fatal("first health change = false; want true")
	}
	return h
}

// awaitReceived waits until the read loop has handled n payloads in all and
// returns whether each was counted as malformed.
func (h *hostileHarness) awaitReceived(n int) []bool {
	h.t.Helper()
	for {
		h.mu.Lock()
		got := h.malformedAt
		h.mu.Unlock()
		if len(got) >= n {
			return got[:n:n]
		}
		await(h.t, h.ctx, h.received, fmt.Sprintf("the read loop to receive %d payloads (has %d)", n, len(got)))
	}
}

// sentinel returns the payload of the valid message that closes a phase.
func sentinel(t *testing.T, name string) []byte {
	t.Helper()
	b, err := Message{Keyspace: sentinelKeyspace, Keys: []string{name}}.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// phase publishes payloads, in order, then a sentinel message, and waits
// until the sentinel has been handled, which the read loop and dispatcher
// do in order, and the read loop's hook has run for it. It then checks
// that each payload was counted as malformed exactly when Unmarshal refuses
// it, the counters, and, when the payloads include a message the subscriber
// cannot read, that a reset followed and the subscriber is healthy again.
// It returns the Stats before and after.
func (h *hostileHarness) phase(name string, payloads [][]byte) (before, after Stats) {
	t := h.t
	t.Helper()
	h.mu.Lock()
	start := len(h.malformedAt)
	h.mu.Unlock()
	before = h.s.Stats()
	handled0 := h.handled.Load()
	var wantMalformed, wantValid uint64
	var wantReset bool
	for _, p := range payloads {
		malformed, reset := classify(p)
		if malformed {
			wantMalformed++
		} else {
			wantValid++
		}
		wantReset = wantReset || reset
	}

	_, err := h.pub.Pipelined(h.ctx, func(p redis.Pipeliner) error {
		for _, b := range payloads {
			p.Publish(h.ctx, testChannel, b)
		}
		p.Publish(h.ctx, testChannel, sentinel(t, name))
		return nil
	})
	if err != nil {
		t.Fatalf("%s: pipelined PUBLISH: %v", name, err)
	}
	if got := await(t, h.ctx, h.sentinels, name+" sentinel"); got != name {
		t.Fatalf("%s: sentinel %q handled; want %q", name, got, name)
	}
	got := h.awaitReceived(start + len(payloads) + 1)[start:]
	for i, p := range payloads {
		if want, _ := classify(p); got[i] != want {
			t.Errorf("%s: payload %d %x counted as malformed = %t; want %t", name, i, p, got[i], want)
		}
	}
	if got[len(payloads)] {
		t.Errorf("%s: sentinel counted as malformed", name)
	}
	if wantReset {
		// The reset was asked for before the sentinel was read, and the
		// dispatcher runs it after the item it is handling: either before
		// the sentinel or right after it.
		await(t, h.ctx, h.r.resets, name+": reset after an unreadable message")
		if ok := await(t, h.ctx, h.r.health, name+": unhealthy"); ok {
			t.Fatalf("%s: health change = true; want false", name)
		}
		if ok := await(t, h.ctx, h.r.health, name+": healthy again"); !ok {
			t.Fatalf("%s: health change = false; want true", name)
		}
	}
	select {
	case ok := <-h.r.health:
		t.Errorf("%s: unexpected health change to %t", name, ok)
	default:
	}

	after = h.s.Stats()
	if got, want := after.Received-before.Received, uint64(len(payloads)+1); got != want {
		t.Errorf("%s: Received grew by %d; want %d", name, got, want)
	}
	if got := after.Malformed - before.Malformed; got != wantMalformed {
		t.Errorf("%s: Malformed grew by %d; want %d", name, got, wantMalformed)
	}
	if got, want := h.handled.Load()-handled0, wantValid+1; got != want {
		t.Errorf("%s: Handler called %d times; want %d (the valid payloads and the sentinel)", name, got, want)
	}
	if got, want := after.Resets-before.Resets, map[bool]uint64{false: 0, true: 1}[wantReset]; got != want {
		t.Errorf("%s: Resets grew by %d; want %d", name, got, want)
	}
	if after.Overflows != 0 || after.Reconnects != 0 || !after.Healthy {
		t.Errorf("%s: Stats = %+v; want no overflow, no reconnect, healthy", name, after)
	}
	if n := h.unexpected.Load(); n != 0 {
		t.Fatalf("%s: Handler got %d messages the test did not publish as valid", name, n)
	}
	return before, after
}

// garbage returns n payloads from a seeded PRNG: half of them random bytes,
// half random bytes behind a map header, which reach further into the
// decoder. Each is 0 to 64 bytes long.
func garbage(n int) [][]byte {
	rng := rand.New(rand.NewPCG(5, 6))
	out := make([][]byte, n)
	for i := range out {
		b := make([]byte, rng.IntN(65))
		for j := range b {
			b[j] = byte(rng.Uint32())
		}
		if i%2 == 1 && len(b) > 0 {
			b[0] = 0x80 | b[0]&0x0f // fixmap
		}
		out[i] = b
	}
	return out
}

// wrongShapes are well-formed msgpack that is not an invalidation.
func wrongShapes(t *testing.T) []struct {
	name string
	give []byte
} {
	return []struct {
		name string
		give []byte
	}{
		{"nil", mp(t, nil)},
		{"int", mp(t, 42)},
		{"string", mp(t, "invalidate users 42")},
		{"bin", mp(t, []byte("users:42"))},
		{"array", mp(t, []any{1, "", "users", []string{"42"}})},
		{"empty map", mp(t, map[string]any{})},
		{"integer field names", mp(t, map[int]any{1: 1, 2: "users"})},
		{"version as string", mp(t, map[string]any{"v": "1", "ks": "users", "k": []string{"42"}})},
		{"version as float", mp(t, map[string]any{"v": 1.5, "ks": "users", "k": []string{"42"}})},
		{"version as map", mp(t, map[string]any{"v": map[string]int{"major": 1}, "ks": "users", "k": []string{"42"}})},
		{"no version", mp(t, map[string]any{"ks": "users", "k": []string{"42"}})},
		{"keyspace as int", mp(t, map[string]any{"v": 1, "ks": 7, "k": []string{"42"}})},
		{"keys as string", mp(t, map[string]any{"v": 1, "ks": "users", "k": "42"})},
		{"keys as ints", mp(t, map[string]any{"v": 1, "ks": "users", "k": []int{1, 2}})},
		{"keys as map", mp(t, map[string]any{"v": 1, "ks": "users", "k": map[string]int{"42": 1}})},
		{"nested keys", mp(t, map[string]any{"v": 1, "ks": "users", "k": [][]string{{"42"}}})},
		{"tags as bool", mp(t, map[string]any{"v": 1, "ks": "users", "t": true})},
		{"flush as string", mp(t, map[string]any{"v": 1, "ks": "users", "f": "yes"})},
		{"nothing to evict", mp(t, map[string]any{"v": 1, "ks": "users"})},
		{"empty keys", mp(t, map[string]any{"v": 1, "ks": "users", "k": []string{}})},
		{"keys without keyspace", mp(t, map[string]any{"v": 1, "k": []string{"42"}})},
		{"trailing bytes", cat(mp(t, map[string]any{"v": 1, "ks": "users", "k": []string{"42"}}), []byte{0x00})},
		{"two messages", bytes.Repeat(mp(t, map[string]any{"v": 1, "ks": "users", "k": []string{"42"}}), 2)},
		{"map claiming 15 entries", []byte{0x8f, 0xa1, 'v', 0x01}},
		{"array16 of keys claiming 60 in 3 bytes", []byte{0x81, 0xa1, 'k', 0xdc, 0x00, 60, 0xa0, 0xa0, 0xa0}},
		{"str32 keyspace claiming 4 GiB", []byte{0x82, 0xa1, 'v', 0x01, 0xa2, 'k', 's', 0xdb, 0xff, 0xff, 0xff, 0xff}},
		{"unknown field of 400 nested arrays, unterminated", cat([]byte{0x84, 0xa1, 'v', 0x01, 0xa2, 'k', 's', 0xa1, 'u', 0xa1, 'k', 0x91, 0xa1, 'a', 0xa1, 'x'}, bytes.Repeat([]byte{0x91}, 400))},
		{"ext", []byte{0xd4, 0x01, 0x01}},
		{"never-used code", []byte{0xc1}},
	}
}

// truncations returns every proper prefix of valid messages, the empty one
// included.
func truncations(t *testing.T) [][]byte {
	var out [][]byte
	for _, m := range []Message{
		{Origin: "node-1", Keyspace: "users", Keys: []string{"42", "a b", "line\nbreak"}, Tags: []string{"cat:7"}},
		{Keyspace: "users", Flush: true},
		{Flush: true},
	} {
		b, err := m.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		for n := range len(b) {
			out = append(out, b[:n])
		}
	}
	return out
}

// unreadable are messages a subscriber cannot read but that may have been
// invalidations: each is malformed and resets.
func unreadable(t *testing.T) []struct {
	name string
	give []byte
} {
	over, err := Message{Keyspace: "users", Keys: []string{strings.Repeat("x", hostileLimits.MaxBytes)}}.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return []struct {
		name string
		give []byte
	}{
		{"over MaxBytes", over},
		{"4 billion keys in 5 bytes", []byte{0x81, 0xa1, 'k', 0xdd, 0xff, 0xff, 0xff, 0xff}},
		{"4 billion keys after a valid head", cat([]byte{0x83, 0xa1, 'v', 0x01, 0xa2, 'k', 's', 0xa5}, []byte("users"), []byte{0xa1, 'k', 0xdd, 0xff, 0xff, 0xff, 0xff})},
		{"4 billion tags", []byte{0x81, 0xa1, 't', 0xdd, 0xff, 0xff, 0xff, 0xff}},
		{"more keys than MaxKeys", mp(t, map[string]any{"v": 1, "ks": "users", "k": manyKeys(hostileLimits.MaxKeys+1, "k")})},
		{"unknown version", mp(t, map[string]any{"v": 2, "ks": "users", "k": []string{"42"}})},
		{"unknown version of another shape", mp(t, map[string]any{"v": 99, "ks": 7, "k": "42"})},
		{"negative version", mp(t, map[string]any{"v": -1, "ks": "users", "k": []string{"42"}})},
	}
}

// exactlyMaxBytes returns a valid message of exactly MaxBytes bytes.
func exactlyMaxBytes(t *testing.T) []byte {
	for n := hostileLimits.MaxBytes - 64; n < hostileLimits.MaxBytes; n++ {
		b, err := Message{Keyspace: boundaryKeyspace, Keys: []string{strings.Repeat("x", n)}}.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		if len(b) == hostileLimits.MaxBytes {
			return b
		}
	}
	t.Fatalf("no message of exactly %d bytes", hostileLimits.MaxBytes)
	return nil
}

// TestHostilePayloads publishes garbage, wrong shapes, truncations,
// unreadable messages and a storm of flushes with a raw client: the
// subscriber never panics, hands only valid messages to Handler, counts
// exactly the malformed ones, resets after exactly the ones that may have
// been invalidations, ends healthy, and leaks no goroutine.
func TestHostilePayloads(t *testing.T) {
	ctx := testContext(t)
	srv := redistest.Start(t)
	ignore := goleak.IgnoreCurrent()
	h := newHostileHarness(t, ctx, srv)

	t.Run("garbage", func(t *testing.T) {
		payloads := garbage(2000)
		for i, p := range payloads {
			if malformed, reset := classify(p); !malformed || reset {
				t.Fatalf("garbage %d %x: malformed %t, reset %t; want a malformed message without reset (pick another seed)", i, p, malformed, reset)
			}
		}
		h.phase("garbage", payloads)
	})

	t.Run("wrong shape", func(t *testing.T) {
		var payloads [][]byte
		for _, tt := range wrongShapes(t) {
			if malformed, reset := classify(tt.give); !malformed || reset {
				t.Errorf("%s: malformed %t, reset %t; want a malformed message without reset", tt.name, malformed, reset)
			}
			payloads = append(payloads, tt.give)
		}
		h.phase("wrong shape", payloads)
	})

	t.Run("truncated", func(t *testing.T) {
		payloads := truncations(t)
		for _, p := range payloads {
			if malformed, reset := classify(p); !malformed || reset {
				t.Errorf("truncation %x: malformed %t, reset %t; want a malformed message without reset", p, malformed, reset)
			}
		}
		h.phase("truncated", payloads)
	})

	t.Run("exactly MaxBytes", func(t *testing.T) {
		give := exactlyMaxBytes(t)
		if malformed, _ := classify(give); malformed {
			t.Fatalf("a valid message of exactly MaxBytes is malformed")
		}
		h.phase("exactly MaxBytes", [][]byte{give})
	})

	for _, tt := range unreadable(t) {
		t.Run(tt.name, func(t *testing.T) {
			if malformed, reset := classify(tt.give); !malformed || !reset {
				t.Fatalf("malformed %t, reset %t; want a malformed message that resets", malformed, reset)
			}
			h.phase(tt.name, [][]byte{tt.give})
		})
	}

	t.Run("flush storm", func(t *testing.T) {
		const storm = 5000
		flush, err := Message{Keyspace: stormKeyspace, Flush: true}.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		payloads := make([][]byte, storm)
		for i := range payloads {
			payloads[i] = flush
		}
		before := h.flushes.Load()
		h.phase("flush storm", payloads)
		if got := h.flushes.Load() - before; got != storm {
			t.Errorf("flush messages handled = %d; want %d", got, storm)
		}
	})

	st := h.s.Stats()
	t.Logf("Stats after every phase: %+v", st)
	if !st.Healthy || st.Overflows != 0 || st.Reconnects != 0 {
		t.Errorf("Stats = %+v; want healthy, no overflow, no reconnect", st)
	}
	if err := h.s.Stop(ctx); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	goleak.VerifyNone(t, ignore)
}
