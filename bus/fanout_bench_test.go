package bus

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tiercache/tiercache/internal/redistest"
)

// fanoutBatch is the number of invalidations one op of BenchmarkFanout
// publishes, in one pipeline.
const fanoutBatch = 1000

// BenchmarkFanout measures what Redis delivers when one publisher sends
// invalidations to many subscriber connections, as replicas of one
// namespace would: one op is fanoutBatch one-key messages published in one
// pipeline and received by every subscriber. Subscribers are plain go-redis
// pub/sub connections in this process (the cost of a tiercache subscriber
// is BenchmarkSubscriberThroughput's), spread round-robin over the nodes.
// On a standalone server every message is written to each subscriber; on a
// 3-master Cluster, classic PUBLISH also crosses the cluster bus to every
// other node, which writes it to its own subscribers. published/s is the
// publisher's rate, delivered/s the messages all subscribers received per
// second, ns/op the time until the last subscriber had the whole batch.
func BenchmarkFanout(b *testing.B) {
	payload, err := Message{Origin: "bench", Keyspace: "users", Keys: []string{"user:1234567"}}.Marshal()
	if err != nil {
		b.Fatal(err)
	}
	b.Run("Standalone", func(b *testing.B) {
		srv := redistest.Start(b)
		fanout(b, []string{srv.Addr}, payload)
	})
	b.Run("Cluster", func(b *testing.B) {
		c := redistest.StartCluster(b)
		fanout(b, c.Addrs(), payload)
	})
}

// fanout runs the sub-benchmarks of 10, 50 and 100 subscribers over the
// servers at addrs, publishing through the first.
func fanout(b *testing.B, addrs []string, payload []byte) {
	for _, n := range []int{10, 50, 100} {
		b.Run(fmt.Sprintf("subs=%d", n), func(b *testing.B) {
			ctx := b.Context()
			channel := fmt.Sprintf("fanout-%d", n)
			var (
				received atomic.Int64
				mu       sync.Mutex
				target   int64
				reached  = make(chan struct{}, 1)
			)
			var (
				wg      sync.WaitGroup
				clients []*redis.Client
				subs    []*redis.PubSub
			)
			// Close every subscription before waiting for any reader.
			b.Cleanup(func() {
				for _, ps := range subs {
					ps.Close()
				}
				wg.Wait()
				for _, c := range clients {
					c.Close()
				}
			})
			for i := range n {
				c := redis.NewClient(&redis.Options{Addr: addrs[i%len(addrs)]})
				ps := c.Subscribe(ctx, channel)
				clients, subs = append(clients, c), append(subs, ps)
				if _, err := ps.Receive(ctx); err != nil { // the confirmation
					b.Fatalf("subscriber %d: %v", i, err)
				}
				wg.Go(func() {
					for {
						if _, err := ps.ReceiveMessage(ctx); err != nil {
							return // closed
						}
						got := received.Add(1)
						mu.Lock()
						if got == target {
							select {
							case reached <- struct{}{}:
							default:
							}
						}
						mu.Unlock()
					}
				})
			}
			pub := redis.NewClient(&redis.Options{Addr: addrs[0]})
			b.Cleanup(func() { pub.Close() })
			// Every node must have every subscriber before the clock starts.
			for _, addr := range addrs {
				c := redis.NewClient(&redis.Options{Addr: addr})
				want := int64(0)
				for i := range n {
					if addrs[i%len(addrs)] == addr {
						want++
					}
				}
				got, err := c.PubSubNumSub(ctx, channel).Result()
				c.Close()
				if err != nil || got[channel] != want {
					b.Fatalf("PUBSUB NUMSUB on %s = %v, %v; want %d", addr, got, err, want)
				}
			}

			began := time.Now()
			for op := range b.N {
				mu.Lock()
				target = int64(op+1) * fanoutBatch * int64(n)
				done := received.Load() >= target
				mu.Unlock()
				if _, err := pub.Pipelined(ctx, func(p redis.Pipeliner) error {
					for range fanoutBatch {
						p.Publish(ctx, channel, payload)
					}
					return nil
				}); err != nil {
					b.Fatal(err)
				}
				if !done {
					select {
					case <-reached:
					case <-time.After(time.Minute):
						b.Fatalf("%d of %d messages received after a minute", received.Load(), target)
					}
				}
			}
			elapsed := time.Since(began).Seconds()
			b.ReportMetric(float64(b.N*fanoutBatch)/elapsed, "published/s")
			b.ReportMetric(float64(b.N*fanoutBatch*n)/elapsed, "delivered/s")
		})
	}
}
