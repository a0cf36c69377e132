package bus

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/tiercache/tiercache/internal/redistest"
)

const (
	// floodBatch messages go in one pipeline.
	floodBatch = 1000
	// floodWindow is how many batches the publisher may run ahead of the
	// handler; floodWindow*floodBatch is below DefaultQueueSize, so a
	// subscriber that keeps up never overflows.
	floodWindow = 4
)

// counter is a Handler that counts messages and reports progress.
type counter struct {
	total    int64
	n        atomic.Int64
	progress chan struct{} // one token per floodBatch messages handled
	finished chan struct{} // closed when total messages were handled
}

func newCounter(total int) *counter {
	return &counter{
		total:    int64(total),
		progress: make(chan struct{}, total/floodBatch+1),
		finished: make(chan struct{}),
	}
}

func (c *counter) handle(Message) {
	n := c.n.Add(1)
	if n%floodBatch == 0 {
		c.progress <- struct{}{}
	}
	if n == c.total {
		close(c.finished)
	}
}

// flood publishes c.total copies of payload in pipelines, at most
// floodWindow batches ahead of c, and waits until c has handled them all.
// It reports false when that takes longer than patience.
func flood(tb testing.TB, ctx context.Context, pub *redis.Client, c *counter, payload []byte, patience time.Duration) bool {
	tb.Helper()
	timeout := time.NewTimer(patience)
	defer timeout.Stop()
	total := int(c.total)
	handled := 0 // batches known handled
	for sent := 0; sent < total; {
		for ; handled < sent/floodBatch-floodWindow+1; handled++ {
			select {
			case <-c.progress:
			case <-timeout.C:
				return false
			}
		}
		n := min(floodBatch, total-sent)
		_, err := pub.Pipelined(ctx, func(p redis.Pipeliner) error {
			for range n {
				p.Publish(ctx, testChannel, payload)
			}
			return nil
		})
		if err != nil {
			tb.Fatalf("pipelined PUBLISH: %v", err)
		}
		sent += n
	}
	select {
	case <-c.finished:
		return true
	case <-timeout.C:
		return false
	}
}

// BenchmarkSubscriberThroughput measures how many messages per second one
// subscriber absorbs from a pipelined publisher without overflowing: the
// publisher keeps at most floodWindow batches ahead of the handler, fewer
// than the queue holds, so the figure is the subscriber's sustained rate
// (or Redis's, whichever is lower). One op is one message; the subscriber's
// client speaks RESP2 and RESP3 in turn. The target is 100k msgs/s on
// loopback.
func BenchmarkSubscriberThroughput(b *testing.B) {
	for _, proto := range []struct {
		name     string
		protocol int
	}{{"RESP2", 2}, {"RESP3", 3}} {
		b.Run(proto.name, func(b *testing.B) {
			ctx := b.Context()
			srv := redistest.Start(b)
			pub := srv.Client(b)
			opt := srv.Options()
			opt.Protocol = proto.protocol
			sc := redis.NewClient(opt)
			b.Cleanup(func() { sc.Close() })
			payload, err := Message{Origin: "bench", Keyspace: "users", Keys: []string{"user:1234567"}}.Marshal()
			if err != nil {
				b.Fatal(err)
			}
			c := newCounter(b.N)
			s, err := NewSubscriber(sc, Options{Channel: testChannel, Handler: c.handle})
			if err != nil {
				b.Fatal(err)
			}
			if err := s.Start(ctx); err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				if err := s.Stop(ctx); err != nil {
					b.Errorf("Stop: %v", err)
				}
			})

			b.ResetTimer()
			began := time.Now()
			if !flood(b, ctx, pub, c, payload, time.Minute) {
				b.Fatalf("%d of %d messages handled after a minute: %+v", c.n.Load(), b.N, s.Stats())
			}
			elapsed := time.Since(began)
			b.StopTimer()

			b.ReportMetric(float64(b.N)/elapsed.Seconds(), "msgs/s")
			if st := s.Stats(); st.Overflows != 0 || st.Malformed != 0 {
				b.Errorf("Stats = %+v; want no overflow and nothing malformed", st)
			}
		})
	}
}

// healthySink keeps the compiler from dropping the loads measured.
var healthySink atomic.Bool

// BenchmarkHealthy measures the check every L1 hit makes, on a subscriber
// proving itself caught up at the cache's default bound (a PING every
// 100ms, its proof applied and its expiry timer re-armed by the
// dispatcher), beside its floor: a bare atomic.Bool load. Healthy reads no
// clock; the proofs write the flag only when it changes.
func BenchmarkHealthy(b *testing.B) {
	srv := redistest.Start(b)
	s, err := NewSubscriber(srv.Client(b), Options{
		Channel:      testChannel,
		Handler:      func(Message) {},
		MaxStaleness: 500 * time.Millisecond,
	})
	if err != nil {
		b.Fatal(err)
	}
	pong := make(chan struct{}, 1)
	s.onPong = func(uint64) { signal(pong) }
	if err := s.Start(b.Context()); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := s.Stop(ctx); err != nil {
			b.Errorf("Stop: %v", err)
		}
	})
	// Measure Healthy as it is in service: kept true by PING proofs, the
	// first of which comes a fifth of MaxStaleness after Start.
	select {
	case <-pong:
	case <-time.After(10 * time.Second):
		b.Fatal("no PONG within 10s")
	}
	var floor atomic.Bool
	floor.Store(true)
	b.Run("Subscriber/Serial", func(b *testing.B) {
		b.ReportAllocs()
		var h bool
		for b.Loop() {
			h = s.Healthy()
		}
		healthySink.Store(h)
	})
	b.Run("Subscriber/Parallel", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			var h bool
			for pb.Next() {
				h = s.Healthy()
			}
			healthySink.Store(h)
		})
	})
	b.Run("Floor/Serial", func(b *testing.B) {
		b.ReportAllocs()
		var h bool
		for b.Loop() {
			h = floor.Load()
		}
		healthySink.Store(h)
	})
	b.Run("Floor/Parallel", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			var h bool
			for pb.Next() {
				h = floor.Load()
			}
			healthySink.Store(h)
		})
	})
	if st := s.Stats(); !st.Healthy {
		b.Errorf("Stats after the run = %+v; want healthy on PING proofs", st)
	}
}
