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
// client speaks RESP2 and RESP3 in turn. Issue #3 targets 100k msgs/s on
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
