// Package prom exports the counters of a tiercache.Cache to Prometheus,
// without OpenTelemetry: apps that scrape Prometheus depend on
// client_golang only, and apps that use OpenTelemetry
// (tiercache.WithMeterProvider) need not import this package.
//
// Register one Collector per Cache and serve the registry:
//
//	c, err := tiercache.New(client, cfg) // then c.Start(ctx)
//	prometheus.MustRegister(prom.NewCollector(c))
//	http.Handle("/metrics", promhttp.Handler())
//
// Each scrape takes one c.Stats() snapshot (which walks every L1 to count
// its entries) and reports it as constant metrics, so the collector costs
// nothing between scrapes and nothing on an L1 hit.
//
// # Metrics
//
// Names follow the Prometheus conventions: the prefix tiercache_, counters
// ending in _total, base units (seconds, bytes). Labels are keyspace, tier
// (l1, l2, l1_stale, negative), op (set, delete; read, write), reason
// (overflow, malformed) and state (closed, half_open, open); never a key,
// so the number of series is bounded by the number of keyspaces.
//
// The series match the OpenTelemetry instruments of the root package one
// for one (tiercache_hits_total is tiercache.hits, and so on). A process
// with two Caches registers their collectors on two registries, or wraps
// each with prometheus.WrapRegistererWith and a distinguishing label:
// their series would otherwise collide.
package prom
