package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/tiercache/tiercache"
)

type product struct {
	ID      int64
	Name    string
	Price   float64
	Version int
}

// database is the demo's source of truth: a map that counts its queries.
type database struct {
	mu       sync.Mutex // protects products
	products map[int64]product
	queries  atomic.Int64
}

func (d *database) load(ctx context.Context, id int64) (product, error) {
	d.queries.Add(1)
	d.mu.Lock()
	defer d.mu.Unlock()
	p, ok := d.products[id]
	if !ok {
		return product{}, fmt.Errorf("product %d: %w", id, tiercache.ErrNotFound)
	}
	return p, nil
}

func (d *database) update(id int64, name string, price float64) product {
	d.mu.Lock()
	defer d.mu.Unlock()
	p := d.products[id]
	p.Name, p.Price, p.Version = name, price, p.Version+1
	d.products[id] = p
	return p
}

// demoReplica is one "service replica": its own client and Cache.
type demoReplica struct {
	name     string
	client   *redis.Client
	cache    *tiercache.Cache
	products *tiercache.Keyspace[int64, product]
	inv      chan tiercache.Invalidation
}

func runDemo(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	fs.SetOutput(stderr)
	addr := fs.String("redis", "", "address of a real Redis (host:port); empty starts an embedded one")
	keys := fs.Int("keys", 100, "number of products")
	rounds := fs.Int("rounds", 5, "read rounds over all products, per replica")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: tiercache demo [--redis ADDR] [--keys N] [--rounds N]")
		fmt.Fprintln(stderr, "\nTwo replicas in one process share one Redis. Both read every product")
		fmt.Fprintln(stderr, "several times, then one replica updates a product and the other serves")
		fmt.Fprintln(stderr, "the new value. Prints reads served per tier and the invalidation lag.")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	if fs.NArg() > 0 || *keys < 1 || *rounds < 1 {
		return fmt.Errorf("%w: want --keys >= 1, --rounds >= 1 and no arguments", errUsage)
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()

	if *addr == "" {
		mr, err := miniredis.Run()
		if err != nil {
			return fmt.Errorf("start embedded redis: %w", err)
		}
		defer mr.Close()
		*addr = mr.Addr()
		fmt.Fprintf(stdout, "Redis: embedded (miniredis) at %s; use --redis ADDR for a real one\n", *addr)
	} else {
		fmt.Fprintf(stdout, "Redis: %s\n", *addr)
	}

	db := &database{products: make(map[int64]product, *keys)}
	for i := range int64(*keys) {
		db.products[i] = product{ID: i, Name: fmt.Sprintf("product %d", i), Price: float64(i) + 0.99, Version: 1}
	}

	var reps []*demoReplica
	defer func() {
		for _, r := range reps {
			r.cache.Stop(context.Background())
			r.client.Close()
		}
	}()
	for _, name := range []string{"replica-a", "replica-b"} {
		r, err := startDemoReplica(ctx, name, *addr)
		if err != nil {
			return err
		}
		reps = append(reps, r)
	}
	a, b := reps[0], reps[1]

	fmt.Fprintf(stdout, "\n1. Both replicas read %d products %d times (cache-aside through GetOrLoad).\n", *keys, *rounds)
	for _, r := range reps {
		for range *rounds {
			for id := range int64(*keys) {
				if _, err := r.products.GetOrLoad(ctx, id, db.load); err != nil {
					return fmt.Errorf("%s read %d: %w", r.name, id, err)
				}
			}
			r.products.Wait() // let L1 apply its buffered fills before the next round
		}
	}
	printTiers(stdout, reps, db.queries.Load(), 2**keys**rounds)

	const id = 7
	fmt.Fprintf(stdout, "\n2. %s updates product %d in the database and in the cache.\n", a.name, id)
	before, tier, err := readWithTier(ctx, b, id)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "   %s serves  v%d %q (from %s)\n", b.name, before.Version, before.Name, tier)
	updated := db.update(id, "product 7, now on sale", 5.00)
	start := time.Now()
	if err := a.products.Set(ctx, id, updated); err != nil {
		return err
	}
	if err := waitInvalidation(ctx, b, fmt.Sprint(id)); err != nil {
		return err
	}
	lag := time.Since(start)
	after, tier, err := readWithTier(ctx, b, id)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "   %s evicted product %d from L1 %v after %s called Set\n", b.name, id, lag.Round(time.Microsecond), a.name)
	fmt.Fprintf(stdout, "   %s serves  v%d %q (from %s)\n", b.name, after.Version, after.Name, tier)
	if after.Version != updated.Version {
		return fmt.Errorf("%s served version %d after the invalidation; want %d", b.name, after.Version, updated.Version)
	}
	fmt.Fprintln(stdout, "\nNo replica served the old value after the invalidation arrived.")
	return nil
}

func startDemoReplica(ctx context.Context, name, addr string) (*demoReplica, error) {
	r := &demoReplica{name: name, inv: make(chan tiercache.Invalidation, 1024)}
	r.client = redis.NewClient(&redis.Options{Addr: addr, DialTimeout: 2 * time.Second, ContextTimeoutEnabled: true})
	pingCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := r.client.Ping(pingCtx).Err(); err != nil {
		r.client.Close()
		return nil, fmt.Errorf("%s: cannot reach Redis at %s: %w (is Redis reachable?)", name, addr, err)
	}
	var err error
	r.cache, err = tiercache.New(r.client, tiercache.Config{Namespace: "demo", InstanceID: name},
		tiercache.WithInvalidationHook(func(i tiercache.Invalidation) {
			select {
			case r.inv <- i:
			default: // the demo only waits for one; never block the bus
			}
		}))
	if err != nil {
		r.client.Close()
		return nil, err
	}
	if err := r.cache.Start(pingCtx); err != nil {
		r.client.Close()
		return nil, fmt.Errorf("%s: %w (is Redis reachable?)", name, err)
	}
	r.products, err = tiercache.NewKeyspace[int64, product](r.cache, "products",
		tiercache.KeyspaceConfig{TTL: 10 * time.Minute, L1TTL: time.Minute})
	if err != nil {
		r.cache.Stop(ctx)
		r.client.Close()
		return nil, err
	}
	return r, nil
}

// readWithTier reads id on r and says which tier served it, from r's
// counters (the demo reads from one goroutine, so the difference is this read).
func readWithTier(ctx context.Context, r *demoReplica, id int64) (product, string, error) {
	before := r.products.Stats()
	p, err := r.products.Get(ctx, id)
	if err != nil {
		return p, "", fmt.Errorf("%s read %d: %w", r.name, id, err)
	}
	after := r.products.Stats()
	switch {
	case after.L1Hits > before.L1Hits:
		return p, "L1", nil
	case after.L2Hits > before.L2Hits:
		return p, "Redis", nil
	}
	return p, "unknown tier", nil
}

func waitInvalidation(ctx context.Context, r *demoReplica, key string) error {
	for {
		select {
		case i := <-r.inv:
			for _, k := range i.Keys {
				if i.Keyspace == "products" && k == key {
					return nil
				}
			}
		case <-ctx.Done():
			return fmt.Errorf("%s: no invalidation of %s: %w", r.name, key, ctx.Err())
		}
	}
}

func printTiers(w io.Writer, reps []*demoReplica, dbQueries int64, reads int) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "\treplica\tL1 hits\tRedis hits\tDB loads\t")
	for _, r := range reps {
		s := r.products.Stats()
		fmt.Fprintf(tw, "\t%s\t%d\t%d\t%d\t\n", r.name, s.L1Hits, s.L2Hits, s.Loads)
	}
	tw.Flush()
	fmt.Fprintf(w, "   %d reads, %d database queries (%.1f%% of reads)\n", reads, dbQueries, 100*float64(dbQueries)/float64(reads))
}
