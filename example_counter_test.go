package tiercache_test

import (
	"context"
	"fmt"
	"log"
	"os"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tiercache/tiercache"
)

// viewsDB stands for a SQL database with two tables:
//
//	page_views (page text PRIMARY KEY, views bigint)
//	counter_batches (id text PRIMARY KEY)
type viewsDB struct {
	mu      sync.Mutex // a transaction
	views   map[string]int64
	batches map[string]bool
}

// addViews is a CounterFlusher that counts each batch once, in one
// transaction:
//
//	BEGIN;
//	INSERT INTO counter_batches (id) VALUES ($1);  -- a duplicate: ROLLBACK, return nil
//	UPDATE page_views SET views = views + $3 WHERE page = $2;  -- each page
//	COMMIT;
func (db *viewsDB) addViews(ctx context.Context, deltas map[string]int64) error {
	id := tiercache.CounterBatchID(ctx)
	db.mu.Lock()
	defer db.mu.Unlock()
	if db.batches[id] {
		return nil // committed before the replica died: acknowledge it, add nothing
	}
	db.batches[id] = true
	for page, n := range deltas {
		db.views[page] += n
	}
	return nil
}

// A view counter whose database counts each view once, even when a replica
// dies between its flusher's commit and the acknowledgement in Redis, and
// another replica hands the same batch to its flusher: the flusher records
// the batch's id in the same transaction as the counts, and skips a batch
// whose id it has recorded.
func ExampleCounterBatchID() {
	ctx := context.Background()
	client := redis.NewClient(&redis.Options{Addr: os.Getenv("REDIS_ADDR"), ContextTimeoutEnabled: true})
	defer client.Close()

	cache, err := tiercache.New(client, tiercache.Config{Namespace: "site"})
	if err != nil {
		log.Fatal(err)
	}
	if err := cache.Start(ctx); err != nil {
		log.Fatal(err)
	}

	db := &viewsDB{views: map[string]int64{}, batches: map[string]bool{}}
	pages, err := tiercache.NewKeyspace[string, struct{}](cache, "pages", tiercache.KeyspaceConfig{
		Counter: tiercache.CounterConfig{Every: 100, Interval: 10 * time.Second},
	}, tiercache.WithCounter[string, struct{}](db.addViews))
	if err != nil {
		log.Fatal(err)
	}
	for range 3 {
		if _, err := pages.Incr(ctx, "/home", 1); err != nil {
			log.Fatal(err)
		}
	}
	if err := cache.Stop(ctx); err != nil { // flushes what is pending
		log.Fatal(err)
	}
	fmt.Println("/home:", db.views["/home"], "views in", len(db.batches), "batch")
	// Output: /home: 3 views in 1 batch
}
