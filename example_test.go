package tiercache_test

import (
	"context"
	"fmt"
	"log"
	"os"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/fx"

	"github.com/tiercache/tiercache"
	"github.com/tiercache/tiercache/internal/redistest"
)

// The examples read the address of Redis from REDIS_ADDR, as an app might
// (empty: localhost:6379). The test binary points REDIS_ADDR at a
// redis-server of its own, started when the binary starts and stopped by
// TestMain, so that the examples print what they would print against yours.
var exampleRedis = startExampleRedis()

func startExampleRedis() *redistest.Server {
	srv, err := redistest.New()
	if err != nil {
		log.Fatal(err)
	}
	if err := os.Setenv("REDIS_ADDR", srv.Addr); err != nil {
		log.Fatal(err)
	}
	return srv
}

func stopExampleRedis() { exampleRedis.Stop() }

type Product struct {
	ID    int64
	Name  string
	Price float64
}

// A product-detail cache: read through L1 and Redis to the database, and
// write so that every replica drops its copy.
func Example() {
	ctx := context.Background()
	// ContextTimeoutEnabled lets tiercache's per-call budgets bound a slow
	// Redis. An empty REDIS_ADDR means localhost:6379.
	client := redis.NewClient(&redis.Options{Addr: os.Getenv("REDIS_ADDR"), ContextTimeoutEnabled: true})
	defer client.Close()

	cache, err := tiercache.New(client, tiercache.Config{Namespace: "shop"})
	if err != nil {
		log.Fatal(err)
	}
	if err := cache.Start(ctx); err != nil { // subscribes to shop:invalidate
		log.Fatal(err)
	}
	defer cache.Stop(ctx)

	products, err := tiercache.NewKeyspace[int64, Product](cache, "products",
		tiercache.KeyspaceConfig{TTL: time.Hour, L1TTL: time.Minute})
	if err != nil {
		log.Fatal(err)
	}

	loadProduct := func(ctx context.Context, id int64) (Product, error) {
		fmt.Println("database read", id) // your SQL here
		return Product{ID: id, Name: "lamp", Price: 20}, nil
	}
	p, _ := products.GetOrLoad(ctx, 7, loadProduct) // miss: loads, fills Redis and L1
	fmt.Println(p.Name)
	p, _ = products.GetOrLoad(ctx, 7, loadProduct) // hit: no database read
	fmt.Println(p.Name)

	// After the database update: write the new value; every replica evicts 7.
	if err := products.Set(ctx, 7, Product{ID: 7, Name: "desk lamp", Price: 25}); err != nil {
		log.Fatal(err)
	}
	p, _ = products.Get(ctx, 7)
	fmt.Println(p.Name)
	// Output:
	// database read 7
	// lamp
	// lamp
	// desk lamp
}

// catalogDB stands for the app's database, which the fx graph provides.
type catalogDB struct{}

func openCatalogDB() *catalogDB { return &catalogDB{} }

// SaveProduct writes a product's row; your SQL here.
func (db *catalogDB) SaveProduct(ctx context.Context, id int64, p Product) error {
	fmt.Println("database write", id, p.Name)
	return nil
}

// AddViews adds counted views to the products' rows; your SQL here.
func (db *catalogDB) AddViews(ctx context.Context, views map[int64]int64) error {
	for id, n := range views {
		fmt.Println("database views of", id, "+", n)
	}
	return nil
}

// Wiring with fx: the app provides its own Redis client (tiercache.Module
// takes a *redis.Client, such as redis.NewClient or redis.NewFailoverClient
// return, a *redis.ClusterClient or a redis.UniversalClient), and a
// write-through keyspace whose writer needs the app's database, taken from
// the graph.
func ExampleModule() {
	var products *tiercache.Keyspace[int64, Product]
	app := fx.New(
		fx.NopLogger,
		fx.Supply(tiercache.Config{
			Namespace: "shop",
			Keyspaces: map[string]tiercache.KeyspaceConfig{"products": {TTL: time.Hour}},
		}),
		fx.Provide(
			func(lc fx.Lifecycle) *redis.Client {
				client := redis.NewClient(&redis.Options{Addr: os.Getenv("REDIS_ADDR"), ContextTimeoutEnabled: true})
				lc.Append(fx.StopHook(client.Close)) // the app owns its client
				return client
			},
			openCatalogDB,
		),
		tiercache.Module,
		tiercache.ProvideKeyspaceWith[int64, Product]("products",
			func(db *catalogDB) []tiercache.KeyspaceOption[int64, Product] {
				return []tiercache.KeyspaceOption[int64, Product]{tiercache.WithWriter(db.SaveProduct)}
			}),
		fx.Populate(&products), // or fx.Invoke your HTTP handlers
	)
	ctx := context.Background()
	if err := app.Start(ctx); err != nil {
		log.Fatal(err)
	}
	defer app.Stop(ctx)

	// The database first, then Redis and every replica's L1.
	if err := products.Write(ctx, 12, Product{ID: 12, Name: "desk lamp", Price: 25}); err != nil {
		log.Fatal(err)
	}
	p, _ := products.Get(ctx, 12)
	fmt.Println(p.Name)
	// Output:
	// database write 12 desk lamp
	// desk lamp
}

// ViewParams are what the views keyspace's options need from the graph.
type ViewParams struct {
	fx.In

	DB *catalogDB
}

// Two keyspaces of the same types, told apart by name tags: each counter
// flushes into the app's database, which its options take from the graph
// through an fx.In struct.
func ExampleProvideNamedKeyspaceWith() {
	var views *tiercache.Keyspace[int64, int64]
	app := fx.New(
		fx.NopLogger,
		fx.Supply(tiercache.Config{
			Namespace: "shop",
			Redis:     tiercache.RedisConfig{Addrs: []string{os.Getenv("REDIS_ADDR")}}, // the module owns this client
			Keyspaces: map[string]tiercache.KeyspaceConfig{
				"views": {Counter: tiercache.CounterConfig{Every: 1000, Interval: time.Hour}},
			},
		}),
		fx.Provide(openCatalogDB),
		tiercache.Module,
		tiercache.ProvideNamedKeyspaceWith[int64, int64]("views",
			func(p ViewParams) []tiercache.KeyspaceOption[int64, int64] {
				return []tiercache.KeyspaceOption[int64, int64]{tiercache.WithCounter[int64, int64](p.DB.AddViews)}
			}),
		tiercache.ProvideNamedKeyspace[int64, int64]("likes"),
		fx.Populate(fx.Annotate(&views, fx.ParamTags(`name:"views"`))),
	)
	ctx := context.Background()
	if err := app.Start(ctx); err != nil {
		log.Fatal(err)
	}
	for range 3 {
		if _, err := views.Incr(ctx, 12, 1); err != nil {
			log.Fatal(err)
		}
	}
	if err := app.Stop(ctx); err != nil { // Stop flushes the counts
		log.Fatal(err)
	}
	// Output:
	// database views of 12 + 3
}

// A loader chooses how each value it returns is cached: a product on sale
// lives a minute and carries the "sale" tag; a draft is not cached.
func ExampleAdapt() {
	ctx := context.Background()
	client := redis.NewClient(&redis.Options{Addr: os.Getenv("REDIS_ADDR"), ContextTimeoutEnabled: true})
	defer client.Close()
	cache, err := tiercache.New(client, tiercache.Config{Namespace: "shop-adapt"})
	if err != nil {
		log.Fatal(err)
	}
	if err := cache.Start(ctx); err != nil {
		log.Fatal(err)
	}
	defer cache.Stop(ctx)
	products, err := tiercache.NewKeyspace[int64, Product](cache, "products", tiercache.KeyspaceConfig{TTL: time.Hour})
	if err != nil {
		log.Fatal(err)
	}

	load := func(ctx context.Context, id int64) (Product, error) {
		p := Product{ID: id, Name: "lamp", Price: 20} // your SQL here
		switch id {
		case 1: // on sale
			if err := tiercache.Adapt(ctx, tiercache.Adaptation{TTL: time.Minute, Tags: []string{"sale"}}); err != nil {
				return p, err
			}
		case 2: // a draft
			if err := tiercache.Adapt(ctx, tiercache.Adaptation{NoCache: true}); err != nil {
				return p, err
			}
		}
		return p, nil
	}
	for _, id := range []int64{1, 2} {
		if _, err := products.GetOrLoad(ctx, id, load); err != nil {
			log.Fatal(err)
		}
	}
	ttl := client.PTTL(ctx, products.RedisKey(1)).Val()
	fmt.Println("sale TTL at most a minute:", ttl > 0 && ttl <= time.Minute)
	fmt.Println("draft cached:", client.Exists(ctx, products.RedisKey(2)).Val() == 1)
	if err := products.InvalidateTags(ctx, "sale"); err != nil {
		log.Fatal(err)
	}
	fmt.Println("sale cached after InvalidateTags:", client.Exists(ctx, products.RedisKey(1)).Val() == 1)
	// Output:
	// sale TTL at most a minute: true
	// draft cached: false
	// sale cached after InvalidateTags: false
}
