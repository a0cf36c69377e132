package tiercache_test

import (
	"context"
	"fmt"
	"log"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tiercache/tiercache"
	"github.com/tiercache/tiercache/internal/redistest"
)

// exampleRedis is the redis-server the examples talk to, started on first
// use and stopped after the tests (TestMain).
var exampleRedis struct {
	once sync.Once
	srv  *redistest.Server
}

func exampleRedisAddr() string {
	exampleRedis.once.Do(func() {
		srv, err := redistest.New()
		if err != nil {
			log.Fatal(err)
		}
		exampleRedis.srv = srv
	})
	return exampleRedis.srv.Addr
}

func stopExampleRedis() {
	if exampleRedis.srv != nil {
		exampleRedis.srv.Stop()
	}
}

type Product struct {
	ID    int64
	Name  string
	Price float64
}

// A product-detail cache: read through L1 and Redis to the database, and
// write so that every replica drops its copy.
func Example() {
	ctx := context.Background()
	// ContextTimeoutEnabled lets tiercache's per-call budgets bound a slow Redis.
	client := redis.NewClient(&redis.Options{Addr: exampleRedisAddr(), ContextTimeoutEnabled: true})
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
