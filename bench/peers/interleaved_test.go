package peers

import (
	"context"
	"runtime"
	"sync"
	"testing"
	"time"
)

// BenchmarkInterleaved measures the same reads as BenchmarkL1Hit,
// BenchmarkL1HitParallel and BenchmarkL2Hit, but interleaved: each
// iteration reads one batch through every peer in turn (the order rotating
// by one each time), so that a machine whose load drifts from one second to
// the next slows every peer alike. On a shared VM this is the steadier
// ratio: the separate benchmarks time each peer a second or more apart.
//
// Reported per peer: NAME-ns/get (time over the reads of that peer) and
// ours/NAME (tiercache's time over that peer's, in the same iterations; below
// 1 is tiercache faster). ns/op is per iteration and means nothing by
// itself.
func BenchmarkInterleaved(b *testing.B) {
	srv := startRedis(b)
	var (
		names     []string
		local, l2 []getter
		keys      [][]string
	)
	for _, m := range peerMakers {
		p := m.make(b, srv)
		ks := p.keys(benchKeys)
		fill(b, p.replicas[0], ks)
		warm(b, srv, p.replicas[1], ks)
		names = append(names, m.name)
		local = append(local, p.replicas[1])
		l2 = append(l2, l2Getter{p.replicas[1]})
		keys = append(keys, ks)
	}
	floorKeys := (&peer{}).keys(benchKeys)
	redisFloorKeys := (&peer{prefix: "floor:"}).keys(benchKeys)
	local = append(local, newRistrettoFloor(b, floorKeys))
	l2 = append(l2, newGoredisFloor(b, srv, redisFloorKeys))
	b.Run("L1Hit", func(b *testing.B) {
		benchInterleaved(b, append(names, "ristrettoFloor"), local, append(keys, floorKeys), 1024, 1)
	})
	b.Run("L1HitParallel", func(b *testing.B) {
		benchInterleaved(b, append(names, "ristrettoFloor"), local, append(keys, floorKeys), 4096, runtime.GOMAXPROCS(0))
	})
	b.Run("L2Hit", func(b *testing.B) {
		benchInterleaved(b, append(names, "goredisFloor"), l2, append(keys, redisFloorKeys), 32, 1)
	})
}

// benchInterleaved reads batch keys through each of gs in turn per
// iteration, from par goroutines (batch/par each), and reports each one's
// time per read and tiercache's (gs[0]) over each other's.
func benchInterleaved(b *testing.B, names []string, gs []getter, keys [][]string, batch, par int) {
	ctx := context.Background()
	total := make([]time.Duration, len(gs))
	cursor := make([]int, len(gs))
	var errs []error
	round := 0
	for b.Loop() {
		for j := range gs {
			i := (round + j) % len(gs)
			start := time.Now()
			if par == 1 {
				for n := range batch {
					if _, err := gs[i].Get(ctx, keys[i][(cursor[i]+n)%len(keys[i])]); err != nil {
						b.Fatal(err)
					}
				}
			} else {
				errs = readParallel(ctx, gs[i], keys[i], cursor[i], batch, par, errs[:0])
				if len(errs) > 0 {
					b.Fatal(errs[0])
				}
			}
			total[i] += time.Since(start)
			cursor[i] += batch
		}
		round++
	}
	reads := float64(b.N * batch)
	for i, name := range names {
		b.ReportMetric(float64(total[i].Nanoseconds())/reads, name+"-ns/get")
		if i > 0 {
			b.ReportMetric(float64(total[0])/float64(total[i]), "ours/"+name)
		}
	}
}

// readParallel reads batch keys of ks, from offset from, through g from par
// goroutines, and appends the errors to errs.
func readParallel(ctx context.Context, g getter, ks []string, from, batch, par int, errs []error) []error {
	var (
		wg sync.WaitGroup
		mu sync.Mutex // protects errs
	)
	for w := range par {
		wg.Go(func() {
			for n := w; n < batch; n += par {
				if _, err := g.Get(ctx, ks[(from+n)%len(ks)]); err != nil {
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
					return
				}
			}
		})
	}
	wg.Wait()
	return errs
}
