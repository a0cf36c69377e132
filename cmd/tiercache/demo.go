package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/tiercache/tiercache/examples/catalog"
	"github.com/tiercache/tiercache/internal/redistest"
)

// runDemo is the main job shown for real: the catalog service of
// examples/catalog, three replicas on loopback ports over one SQLite
// database and one Redis, under a Zipf load with updates, once with the
// cache and once without, and the report of what the cache changed.
func runDemo(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newCommandFlags("demo", []string{"demo [flags]"}, `
Starts the catalog service of examples/catalog three times on loopback
ports, sharing one SQLite database and one Redis, drives a Zipf load of
product pages, category listings and updates with the cache on, then the
same load with it off, and prints: DB queries per request and latency with
and without the cache (the updates' p99 and DB queries per update among
them), hit ratio per tier, invalidation lag, stale reads (must be 0), and
view-counter DB writes against views. With --db-outage the database fails
for that long mid-run, a third run has fail-safe on, and the report shows
each run's errors and fail-safe reads. Progress goes to stderr, the report
to stdout; --html also writes it as a page with charts.

demo takes no connection flags and reads no TIERCACHE_ variable: it uses
the Redis at --redis, or starts its own (redis-server when it is on PATH,
else an embedded one), and writes only under a namespace of its own,
"catalogdemo-<random>", which it deletes at the end. A stale read with the
cache on makes it exit 1.`, false)
	addr := fs.String("redis", "", "`host:port` of a Redis to use; empty starts redis-server on a free loopback port when it is on PATH, else an embedded Redis")
	embedded := fs.Bool("embedded", false, "use the embedded Redis (miniredis) even when redis-server is on PATH")
	replicas := fs.Int("replicas", 3, "replicas of the catalog service")
	products := fs.Int("products", 1000, "products in the catalog")
	duration := fs.Duration("duration", 10*time.Second, "length of each run (cache on, then cache off)")
	workers := fs.Int("workers", 8, "concurrent clients")
	updates := fs.Float64("update-share", 0.05, "share of requests that update a product")
	dbLatency := fs.Duration("db-latency", 300*time.Microsecond, "wait added to every SQL statement, as a database across the network costs; 0 for SQLite in-process")
	killAt := fs.Duration("kill-pubsub-at", 0, "send CLIENT KILL TYPE pubsub this long into the run with the cache, and report the L1 hit ratio in the 5s on each side of it; 0: no kill")
	noReplay := fs.Bool("no-replay", false, "turn replay off on the replicas: every resubscription flushes their L1")
	htmlOut := fs.String("html", "", "also write the report as an HTML page with charts to this `file`")
	seed := fs.Uint64("seed", 1, "seed of the load's random choices")
	outage := fs.Duration("db-outage", 0, "make the database fail for this long in the middle of each run, and add a run with fail-safe on; products and listings then live 1s in the cache; 0: no outage")
	rest, err := fs.parse(args, stdout)
	if err != nil {
		return err
	}
	switch {
	case len(rest) > 0:
		return usageErrorf("no arguments expected, got %q", rest)
	case *replicas < 2 || *products < 10 || *workers < 1 || *duration <= 0:
		return usageErrorf("want --replicas >= 2, --products >= 10, --workers >= 1 and a positive --duration")
	case *updates < 0 || *updates > 1 || *dbLatency < 0:
		return usageErrorf("want --update-share in [0, 1] and --db-latency >= 0")
	case *outage < 0 || (*outage > 0 && *outage >= *duration):
		return usageErrorf("want --db-outage >= 0 and shorter than --duration")
	}
	// Two runs (three with an outage), the set-up of each and the final
	// flushes: bounded in all.
	ctx, cancel := context.WithTimeout(ctx, 3**duration+2*time.Minute)
	defer cancel()

	redisAddr, stop, err := demoRedis(*addr, *embedded, stdout)
	if err != nil {
		return err
	}
	defer stop()

	rep, err := catalog.RunDemo(ctx, catalog.DemoOptions{
		RedisAddr:    redisAddr,
		Replicas:     *replicas,
		Products:     *products,
		Duration:     *duration,
		Workers:      *workers,
		UpdateShare:  *updates,
		QueryLatency: *dbLatency,
		KillPubSubAt: *killAt,
		NoReplay:     *noReplay,
		Seed:         *seed,
		DBOutage:     *outage,
	}, stderr)
	if err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	if err := rep.WriteText(stdout); err != nil {
		return err
	}
	if *htmlOut != "" {
		if err := writeHTMLReport(*htmlOut, rep); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "\nHTML report: %s\n", *htmlOut)
	}
	if n := rep.Cached.StaleReads; n > 0 {
		return fmt.Errorf("demo: %d stale reads with the cache on", n)
	}
	if rep.FailSafe != nil && rep.FailSafe.StaleReads > 0 {
		return fmt.Errorf("demo: %d stale reads with the cache and fail-safe on", rep.FailSafe.StaleReads)
	}
	return nil
}

// demoRedis returns the address of the Redis the demo uses, and how to stop
// it: addr when given; else a redis-server of its own on a free loopback
// port (persistence off) when one is on PATH and embedded is false; else
// an embedded miniredis.
func demoRedis(addr string, embedded bool, stdout io.Writer) (string, func(), error) {
	if addr != "" {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		c := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1, DialTimeout: 2 * time.Second})
		defer c.Close()
		if err := c.Ping(ctx).Err(); err != nil {
			return "", nil, fmt.Errorf("cannot reach Redis at %s: %w: is Redis reachable? omit --redis for one of the demo's own", addr, err)
		}
		fmt.Fprintf(stdout, "Redis: %s\n", addr)
		return addr, func() {}, nil
	}
	if _, err := exec.LookPath("redis-server"); err == nil && !embedded {
		srv, err := redistest.New()
		if err != nil {
			return "", nil, fmt.Errorf("start redis-server: %w", err)
		}
		fmt.Fprintf(stdout, "Redis: redis-server started at %s (stopped at the end)\n", srv.Addr)
		return srv.Addr, func() { srv.Stop() }, nil
	}
	mr, err := miniredis.Run()
	if err != nil {
		return "", nil, fmt.Errorf("start embedded redis: %w", err)
	}
	fmt.Fprintf(stdout, "Redis: embedded (miniredis) at %s; install redis-server or pass --redis ADDR for a real one\n", mr.Addr())
	return mr.Addr(), mr.Close, nil
}

func writeHTMLReport(path string, rep catalog.Report) error {
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("html report: %w", err)
	}
	if err := rep.WriteHTML(f); err != nil {
		f.Close()
		return fmt.Errorf("html report: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("html report: %w", err)
	}
	return nil
}
