package bus

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tiercache/tiercache/internal/redistest"
	"github.com/tiercache/tiercache/internal/slots"
)

// fanoutBatch is the number of invalidations one op of BenchmarkFanout
// publishes, in one pipeline.
const fanoutBatch = 1000

// BenchmarkFanout measures what Redis delivers when one publisher sends
// invalidations to many subscribers, as replicas of one namespace would:
// one op is fanoutBatch one-key messages published in one pipeline and
// received by every subscriber. Subscribers are plain go-redis pub/sub
// connections in this process (the cost of a tiercache subscriber is
// BenchmarkSubscriberThroughput's). With n subscribers:
//
//   - Standalone: n connections SUBSCRIBE to one channel; the server parses
//     every PUBLISH and writes every message to all n.
//   - Cluster: 3 masters, classic pub/sub. The n connections SUBSCRIBE to
//     one channel, spread round-robin over the nodes; the publisher
//     PUBLISHes everything on Nodes[0]. Nodes[0] parses every message and
//     sends each over the cluster bus to both other nodes; every node thus
//     handles every message and writes it to its own n/3 subscribers.
//   - ShardedCluster: 3 masters, Redis 7 sharded pub/sub as the cache uses
//     it. Each subscriber is one replica with one connection per master,
//     each SSUBSCRIBEd to the channel (slots.Channel) of a slot that master
//     serves: slots 0, 5461 and 10922, so 3n connections in all. The
//     publisher SPUBLISHes the batch round-robin over the three channels:
//     each master parses a third of the messages, nothing crosses the
//     cluster bus, and each master writes its third to all n of its
//     connections. Every node writes as many messages as in Cluster
//     (fanoutBatch×n/3 per op) but handles only a third of them and holds n
//     subscriber connections rather than n/3. The publisher is a
//     *redis.ClusterClient, the client the cache's writers hold on a
//     Cluster: go-redis splits the pipeline by the master of each channel's
//     slot and sends the three parts concurrently, one goroutine per master,
//     returning once all three have answered.
//
// In every mode each subscriber receives each message once (on the
// connection of its channel: every connection's count is checked after the
// run), so delivered is published times n. published/s is the publisher's
// rate, delivered/s the messages all subscribers received per second, ns/op
// the time until the last subscriber had the whole batch.
func BenchmarkFanout(b *testing.B) {
	payload, err := Message{Origin: "bench", Keyspace: "users", Keys: []string{"user:1234567"}}.Marshal()
	if err != nil {
		b.Fatal(err)
	}
	b.Run("Standalone", func(b *testing.B) {
		srv := redistest.Start(b)
		fanout(b, fanoutMode{addrs: []string{srv.Addr}}, payload)
	})
	b.Run("Cluster", func(b *testing.B) {
		c := redistest.StartCluster(b)
		fanout(b, fanoutMode{addrs: c.Addrs()}, payload)
	})
	b.Run("ShardedCluster", func(b *testing.B) {
		c := redistest.StartCluster(b)
		m := fanoutMode{addrs: c.Addrs(), slots: []int{0, 5461, 10922}, cluster: c.Options()}
		for j, s := range m.slots {
			if owner := c.NodeFor(slots.Channel("fanout", s)).Addr; owner != m.addrs[j] {
				b.Fatalf("slot %d is served by %s, want %s", s, owner, m.addrs[j])
			}
		}
		fanout(b, m, payload)
	})
}

// fanoutMode says how the subscribers of fanout subscribe and how its
// publisher publishes.
type fanoutMode struct {
	// addrs are the servers: the masters of a Cluster, in the order of
	// their slots. Classic publishing goes to addrs[0].
	addrs []string
	// slots selects sharded pub/sub when set: slots[j] is a slot that
	// addrs[j] serves. Every subscriber then holds one connection to each
	// addrs[j], SSUBSCRIBEd to the channel of slots[j], and the publisher
	// SPUBLISHes through a cluster client of cluster. When nil, each
	// subscriber holds one connection, to addrs[i%len(addrs)], SUBSCRIBEd
	// to one channel, and the publisher PUBLISHes on addrs[0].
	slots   []int
	cluster *redis.ClusterOptions
}

// fanoutConn is one subscriber connection of fanout.
type fanoutConn struct {
	node     int          // index in fanoutMode.addrs
	channel  int          // index in the channels of the sub-benchmark
	received atomic.Int64 // messages it received
}

// fanout runs the sub-benchmarks of 10, 50 and 100 subscribers in mode m.
func fanout(b *testing.B, m fanoutMode, payload []byte) {
	sharded := m.slots != nil
	subscribe, numSub := (*redis.Client).Subscribe, (*redis.Client).PubSubNumSub
	publish := redis.Pipeliner.Publish
	if sharded {
		subscribe, numSub = (*redis.Client).SSubscribe, (*redis.Client).PubSubShardNumSub
		publish = redis.Pipeliner.SPublish
	}
	for _, n := range []int{10, 50, 100} {
		b.Run(fmt.Sprintf("subs=%d", n), func(b *testing.B) {
			ctx := b.Context()
			base := fmt.Sprintf("fanout-%d", n)
			var channels []string
			conns := make([][]*fanoutConn, n) // conns[i]: subscriber i's
			if sharded {
				for _, s := range m.slots {
					channels = append(channels, slots.Channel(base, s))
				}
				for i := range conns {
					for j := range m.addrs {
						conns[i] = append(conns[i], &fanoutConn{node: j, channel: j})
					}
				}
			} else {
				channels = []string{base}
				for i := range conns {
					conns[i] = []*fanoutConn{{node: i % len(m.addrs)}}
				}
			}
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
			want := make([]int64, len(m.addrs)) // connections per node
			for i, cs := range conns {
				for _, fc := range cs {
					want[fc.node]++
					c := redis.NewClient(&redis.Options{Addr: m.addrs[fc.node]})
					ps := subscribe(c, ctx, channels[fc.channel])
					clients, subs = append(clients, c), append(subs, ps)
					if _, err := ps.Receive(ctx); err != nil { // the confirmation
						b.Fatalf("subscriber %d on %s: %v", i, m.addrs[fc.node], err)
					}
					wg.Go(func() {
						for {
							if _, err := ps.ReceiveMessage(ctx); err != nil {
								return // closed
							}
							fc.received.Add(1)
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
			}
			var pub redis.Cmdable
			if sharded {
				cc := redis.NewClusterClient(m.cluster)
				b.Cleanup(func() { cc.Close() })
				// Load the slot map and dial every master before the clock.
				if err := cc.ForEachMaster(ctx, func(ctx context.Context, c *redis.Client) error {
					return c.Ping(ctx).Err()
				}); err != nil {
					b.Fatal(err)
				}
				pub = cc
			} else {
				c := redis.NewClient(&redis.Options{Addr: m.addrs[0]})
				b.Cleanup(func() { c.Close() })
				pub = c
			}
			// Every node must have every subscriber of its channel before
			// the clock starts.
			for j, addr := range m.addrs {
				ch := channels[0]
				if sharded {
					ch = channels[j]
				}
				c := redis.NewClient(&redis.Options{Addr: addr})
				got, err := numSub(c, ctx, ch).Result()
				c.Close()
				if err != nil || got[ch] != want[j] {
					b.Fatalf("subscribers of %s on %s = %v, %v; want %d", ch, addr, got, err, want[j])
				}
			}

			began := time.Now()
			for op := range b.N {
				mu.Lock()
				target = int64(op+1) * fanoutBatch * int64(n)
				done := received.Load() >= target
				mu.Unlock()
				if _, err := pub.Pipelined(ctx, func(p redis.Pipeliner) error {
					for k := range fanoutBatch {
						publish(p, ctx, channels[k%len(channels)], payload)
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
			// Each connection had each message of its channel once.
			for i, cs := range conns {
				for _, fc := range cs {
					per := int64(0) // messages per op on its channel
					for k := range fanoutBatch {
						if k%len(channels) == fc.channel {
							per++
						}
					}
					if got := fc.received.Load(); got != int64(b.N)*per {
						b.Fatalf("subscriber %d on %s received %d messages of %s, want %d",
							i, m.addrs[fc.node], got, channels[fc.channel], int64(b.N)*per)
					}
				}
			}
			b.ReportMetric(float64(b.N*fanoutBatch)/elapsed, "published/s")
			b.ReportMetric(float64(b.N*fanoutBatch*n)/elapsed, "delivered/s")
		})
	}
}
