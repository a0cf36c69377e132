// Package catalog is a product-catalog HTTP service built with uber-go/fx
// around tiercache.Module, on SQLite (modernc.org/sqlite, no cgo) as the
// source of truth: the runnable example of the library, and the load behind
// `tiercache demo` (RunDemo).
//
// # The service
//
// A product page (GET /products/{id}) is assembled from nine tables, so an
// uncached request runs DetailQueries statements; with the cache a hit
// runs none. The catalog's keyspaces, configured from Config.Cache.Keyspaces:
//
//   - "product" (int64 -> ProductDetail): cache-aside with GetOrLoad,
//     tagged with its category ("cat-<id>"; tags may not hold ':'), written
//     through on update (tiercache.WithWriter): the row first, with a
//     compare-and-set on its version, then Redis and the invalidation of
//     every replica's L1 in one step. Renaming a category invalidates its
//     products by tag.
//   - "category" (int64 -> Listing): the category page, invalidated by tag
//     whenever one of its products changes.
//   - "views": a view counter (tiercache.WithCounter). Each page view is an
//     Incr in Redis; the counts reach the views column every
//     counter.every views of a product or every counter.interval, and on
//     Stop, so the database is written every N views, not every view.
//
// Leases are on for the product and category keyspaces (DefaultKeyspaces),
// so that a load that read the database before a write can never store its
// old value; and since a load in flight is tagged only when it stores,
// invalidations by tag are followed by a Delete of the keys known, which
// voids such a load's lease.
//
// Config.CacheOff runs the same service without tiercache and without Redis:
// every request goes to SQLite, every view is a write. Every answer carries
// the number of statements it ran (HeaderDBQueries).
//
// # Wiring
//
// Module(cfg) is one replica as an fx option, NewApp(cfg) its app, and
// StartReplica(ctx, cfg) builds and starts it:
//
//	app := catalog.NewApp(catalog.Config{
//		Database: "catalog.db", // seeded by catalog.Seed
//		Addr:     "127.0.0.1:8080",
//		Cache: tiercache.Config{
//			Namespace:  "shop",
//			InstanceID: "replica-1",
//			Redis:      tiercache.RedisConfig{Addrs: []string{"127.0.0.1:6379"}},
//			Keyspaces: map[string]tiercache.KeyspaceConfig{
//				"views": {Counter: tiercache.CounterConfig{Every: 100, Interval: 5 * time.Second}},
//			},
//		},
//	})
//	app.Run()
//
// The database opens on start and closes last on stop, after the cache's
// Stop has flushed the view counts it held; the HTTP server binds on start
// (Server.Addr reports the address, 127.0.0.1:0 picks a free port) and is
// shut down and waited for first on stop.
//
// # The demo
//
// RunDemo starts several replicas in this process, each an fx app with its
// own Redis client and HTTP server on loopback, sharing one SQLite file and
// one Redis, and drives a Zipf load of pages, listings and updates at them,
// with the cache and then without. Its Report counts requests, DB queries
// per request, latency quantiles, reads per tier, the invalidation lag (from
// tiercache.WithInvalidationHook), stale reads, and the view counter's
// writes; WriteText prints it and WriteHTML draws it.
package catalog
