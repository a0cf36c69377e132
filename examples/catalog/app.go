package catalog

import (
	"context"
	"fmt"
	"log/slog"

	"go.uber.org/fx"

	"github.com/tiercache/tiercache"
)

// Module returns one replica of the catalog service as an fx option: the
// database (opened on start, closed on stop), tiercache.Module with the
// catalog's three keyspaces (unless cfg.CacheOff), the Service, and its
// HTTP server on cfg.Addr (started and stopped on the lifecycle).
//
// It supplies cfg.Cache as the tiercache.Config of the graph, so the app
// must not supply another. tiercache.Module uses the app's Redis client
// when the graph has one (a *redis.Client, a *redis.ClusterClient or a
// redis.UniversalClient), and builds its own from cfg.Cache.Redis
// otherwise. Optional in the graph: Hooks, a *slog.Logger,
// and tiercache Options in the group tiercache.OptionGroup (see
// WithInvalidationHook). It provides *DB, *Service and *Server, and with
// the cache *tiercache.Cache and the keyspaces, tagged by name:
//
//	Products *tiercache.Keyspace[int64, ProductDetail] `name:"product"`
//	Listings *tiercache.Keyspace[int64, Listing]       `name:"category"`
//	Views    *tiercache.Keyspace[int64, int64]         `name:"views"`
//
// On stop, the server stops first, then the cache (which flushes the view
// counts it holds into the database), then the database.
func Module(cfg Config) fx.Option {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return fx.Error(err)
	}
	opts := []fx.Option{
		fx.Supply(cfg),
		fx.Provide(newDBOnLifecycle, newServiceFromParams, newServerOnLifecycle),
		// The database comes first, so that its close hook runs last,
		// after the cache's Stop has flushed the view counts into it.
		fx.Invoke(func(*DB) {}),
	}
	if !cfg.CacheOff {
		opts = append(opts,
			fx.Supply(cfg.Cache),
			tiercache.Module,
			// The product and views keyspaces take the database, for their
			// writer and their flusher, from the graph.
			tiercache.ProvideNamedKeyspaceWith[int64, ProductDetail](KeyspaceProduct, ProductOptions),
			tiercache.ProvideNamedKeyspace[int64, Listing](KeyspaceCategory, ListingOptions()...),
			tiercache.ProvideNamedKeyspaceWith[int64, int64](KeyspaceViews, viewOptionsFromParams),
		)
	}
	opts = append(opts, fx.Invoke(func(*Server) {}))
	return fx.Module("catalog", opts...)
}

// NewApp returns the fx app of one replica: Module(cfg) and opts, with fx's
// own log off (pass fx.WithLogger in opts to see it).
func NewApp(cfg Config, opts ...fx.Option) *fx.App {
	return fx.New(append([]fx.Option{fx.NopLogger, Module(cfg)}, opts...)...)
}

// WithInvalidationHook returns an fx option that gives the replica's Cache
// tiercache.WithInvalidationHook(fn), through tiercache.OptionGroup.
func WithInvalidationHook(fn func(tiercache.Invalidation)) fx.Option {
	return fx.Provide(fx.Annotate(
		func() tiercache.Option { return tiercache.WithInvalidationHook(fn) },
		fx.ResultTags(`group:"`+tiercache.OptionGroup+`"`)))
}

func newDBOnLifecycle(lc fx.Lifecycle, cfg Config) *DB {
	d := &DB{latency: cfg.QueryLatency}
	lc.Append(fx.Hook{
		OnStart: func(context.Context) error { return d.open(cfg.Database) },
		OnStop:  func(context.Context) error { return d.Close() },
	})
	return d
}

// viewOptionsParams are what the views keyspace's options take from the
// graph.
type viewOptionsParams struct {
	fx.In

	DB    *DB
	Hooks Hooks `optional:"true"`
}

func viewOptionsFromParams(p viewOptionsParams) []tiercache.KeyspaceOption[int64, int64] {
	return ViewOptions(p.DB, p.Hooks.OnViewsFlushed)
}

type serviceParams struct {
	fx.In

	DB       *DB
	Cache    *tiercache.Cache                          `optional:"true"`
	Products *tiercache.Keyspace[int64, ProductDetail] `name:"product" optional:"true"`
	Listings *tiercache.Keyspace[int64, Listing]       `name:"category" optional:"true"`
	Views    *tiercache.Keyspace[int64, int64]         `name:"views" optional:"true"`
	Hooks    Hooks                                     `optional:"true"`
	Logger   *slog.Logger                              `optional:"true"`
}

func newServiceFromParams(p serviceParams) (*Service, error) {
	return NewService(p.DB, p.Cache, Keyspaces{Products: p.Products, Listings: p.Listings, Views: p.Views}, p.Hooks, p.Logger)
}

func newServerOnLifecycle(lc fx.Lifecycle, cfg Config, s *Service) *Server {
	srv := NewServer(cfg.Addr, s.Handler())
	lc.Append(fx.Hook{OnStart: srv.Start, OnStop: srv.Stop})
	return srv
}

// Replica is one running replica of the catalog service: its fx app, its
// Service and its HTTP server.
type Replica struct {
	app     *fx.App
	service *Service
	server  *Server
}

// StartReplica builds the app of one replica (NewApp(cfg, opts...)) and
// starts it: the database is open, the cache subscribed and the server
// bound when it returns. A failed start stops what had started.
func StartReplica(ctx context.Context, cfg Config, opts ...fx.Option) (*Replica, error) {
	r := &Replica{}
	app := NewApp(cfg, append(opts, fx.Populate(&r.service, &r.server))...)
	if err := app.Err(); err != nil {
		return nil, fmt.Errorf("catalog: build replica: %w", err)
	}
	if err := app.Start(ctx); err != nil {
		return nil, fmt.Errorf("catalog: start replica: %w", err)
	}
	r.app = app
	return r, nil
}

// Stop stops the replica: the server (waiting for requests in flight
// until ctx ends), the cache (flushing its view counts) and the database.
func (r *Replica) Stop(ctx context.Context) error {
	if err := r.app.Stop(ctx); err != nil {
		return fmt.Errorf("catalog: stop replica %s: %w", r.server.Addr(), err)
	}
	return nil
}

// Service returns the replica's Service.
func (r *Replica) Service() *Service { return r.service }

// Addr returns the address the replica's server is bound to.
func (r *Replica) Addr() string { return r.server.Addr() }

// URL returns the replica's base URL.
func (r *Replica) URL() string { return r.server.URL() }
