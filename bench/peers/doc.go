// Package peers benchmarks tiercache beside the libraries a user would pick
// instead, on the same workloads, in one run, so that the ratios between them
// mean something on a noisy machine. Run it all with:
//
//	cd bench/peers && go test -run '^$' -bench . -benchmem -count 10 > peers.txt && benchstat -col /peer peers.txt
//
// (benchstat: go install golang.org/x/perf/cmd/benchstat@latest). Each
// workload is a benchmark with one sub-benchmark per peer, named peer=NAME
// (BenchmarkL1Hit/peer=tiercache, .../peer=gorediscache, .../peer=rueidis,
// .../peer=ristrettoFloor), so that -col /peer puts the peers side by side,
// tiercache first, each compared with it; plain benchstat peers.txt lists
// them one per row. The run takes about five minutes on a 2-core VM.
// Results are in BENCHMARKS.md at the repository root.
//
// It is a Go module of its own, so that the peers' dependencies never reach
// the library's go.mod. The peers:
//
//   - tiercache (this repository, through a replace directive): a ristretto v2
//     L1 per replica, Redis L2, pub/sub invalidation of every L1 on writes;
//   - github.com/go-redis/cache/v9 with its local TinyLFU in front of Redis
//     (no cross-replica invalidation: a replica's local copy lives until its
//     local TTL);
//   - github.com/redis/rueidis client-side caching (DoCache with a TTL over
//     RESP3 server-assisted tracking: Redis pushes invalidations to every
//     connection that cached a key);
//   - raw ristretto v2 (ristrettoFloor) and raw go-redis GET plus a msgpack
//     decode (goredisFloor): the floors under an L1 and an L2 hit.
//
// mgtv-tech/jetcache-go and eko/gocache v4 are not measured: the Go module
// proxy this project builds from does not serve them.
//
// Every peer stores the same Product struct, msgpack-encoded (tiercache's
// codec, go-redis/cache's default marshal, explicit msgpack for rueidis), in
// one real redis-server per benchmark started on loopback with persistence
// off by the project's harness (internal/redistest).
//
// The benchmarks:
//
//   - BenchmarkL1Hit and BenchmarkL1HitParallel: reads served by the local
//     tier (b.Loop, and b.RunParallel);
//   - BenchmarkL2Hit: reads served by Redis with the local tier bypassed;
//   - BenchmarkInterleaved: the same reads, one batch per peer in turn in
//     every iteration, reporting each peer's ns/get and tiercache's time
//     over each peer's (ours/NAME): the steadier ratio on a machine whose
//     load drifts, since the separate benchmarks time each peer a second or
//     more apart;
//   - BenchmarkZipf: two replicas per peer on one redis-server, four
//     goroutines (two per replica) doing 90% reads and 10% writes over 10,000
//     keys drawn from a Zipf distribution; it reports stale-reads (reads that
//     began after a write of version v had returned, on either replica, and
//     saw a version older than v), their rate per 1,000 reads, and the per-op
//     latency p50-µs and p99-µs from recorded samples.
//
// The package test (go test) checks that each peer is wired as claimed: a
// value set through replica 1 is read back on replica 2, and a second write
// is, or for go-redis/cache is not, seen by replica 2's local tier.
//
// The test does not use goleak: rueidis and go-redis/cache (through msgpack's
// Unmarshal, which starts a preallocation goroutine per type) leave
// goroutines that are theirs, not ours.
package peers
