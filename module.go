package tiercache

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/redis/go-redis/v9"
	"go.opentelemetry.io/otel/metric"
	"go.uber.org/fx"
)

// Module provides a *Cache whose Start and Stop run on the fx lifecycle.
//
// It needs a Config in the graph (e.g. fx.Supply(tiercache.Config{...}) or
// one decoded from the app's YAML). It uses the redis.UniversalClient of the
// graph when there is one, and the caller keeps owning it; otherwise it builds
// one from Config.Redis, owns it and closes it on stop. An optional
// *slog.Logger in the graph becomes the cache's logger, and an optional
// metric.MeterProvider its meter (WithMeterProvider).
var Module = fx.Module("tiercache", fx.Provide(NewFromParams))

// Params are the dependencies of the Cache provided by Module.
type Params struct {
	fx.In

	Lifecycle fx.Lifecycle
	Config    Config
	Client    redis.UniversalClient `optional:"true"`
	Logger    *slog.Logger          `optional:"true"`
	// MeterProvider, when in the graph, receives the Cache's metrics
	// (WithMeterProvider).
	MeterProvider metric.MeterProvider `optional:"true"`

	// Options are extra options for New, provided to the value group
	// "tiercache.options" (e.g. a WithInvalidationHook).
	Options []Option `group:"tiercache.options"`
}

// OptionGroup is the fx value group whose Options the Module passes to New:
//
//	fx.Provide(fx.Annotate(func() tiercache.Option { return tiercache.WithInvalidationHook(h) },
//		fx.ResultTags(`group:"`+tiercache.OptionGroup+`"`)))
const OptionGroup = "tiercache.options"

// Result is what Module provides.
type Result struct {
	fx.Out

	Cache *Cache
}

// NewFromParams builds the Cache of Module and appends its Start and Stop to
// the lifecycle. It is exported for apps that wire fx by hand.
func NewFromParams(p Params) (Result, error) {
	client, owned := p.Client, false
	if client == nil {
		if len(p.Config.Redis.Addrs) == 0 {
			return Result{}, fmt.Errorf("%w: no redis.UniversalClient in the graph and no Config.Redis.Addrs", ErrInvalidConfig)
		}
		opts, err := p.Config.Redis.ClientOptions()
		if err != nil {
			return Result{}, err
		}
		client, owned = redis.NewUniversalClient(opts), true
	}
	opts := []Option{WithLogger(p.Logger)}
	if p.MeterProvider != nil {
		opts = append(opts, WithMeterProvider(p.MeterProvider))
	}
	c, err := New(client, p.Config, append(opts, p.Options...)...)
	if err != nil {
		if owned {
			client.Close()
		}
		return Result{}, err
	}
	closeOwned := func() error {
		if !owned {
			return nil
		}
		if err := client.Close(); err != nil {
			return fmt.Errorf("tiercache: close redis client: %w", err)
		}
		return nil
	}
	p.Lifecycle.Append(fx.Hook{
		OnStart: func(ctx context.Context) error {
			if err := c.Start(ctx); err != nil {
				// A failed Start has stopped the Cache already; fx will not
				// call OnStop for a hook whose OnStart failed, so close the
				// client we own here.
				return errors.Join(err, closeOwned())
			}
			return nil
		},
		OnStop: func(ctx context.Context) error {
			return errors.Join(c.Stop(ctx), closeOwned())
		},
	})
	return Result{Cache: c}, nil
}

// ProvideKeyspace provides a *Keyspace[K, V] called name, configured from
// Config.Keyspaces[name] (defaults when absent), with opts (a tagger, a
// warmer). Use ProvideNamedKeyspace when two keyspaces share the same K and
// V types.
func ProvideKeyspace[K Key, V any](name string, opts ...KeyspaceOption[K, V]) fx.Option {
	return fx.Provide(keyspaceConstructor[K, V](name, opts))
}

// ProvideNamedKeyspace is ProvideKeyspace with the result tagged
// `name:"<name>"`, for apps with several keyspaces of the same types.
func ProvideNamedKeyspace[K Key, V any](name string, opts ...KeyspaceOption[K, V]) fx.Option {
	return fx.Provide(fx.Annotate(keyspaceConstructor[K, V](name, opts), fx.ResultTags(`name:"`+name+`"`)))
}

func keyspaceConstructor[K Key, V any](name string, opts []KeyspaceOption[K, V]) func(*Cache) (*Keyspace[K, V], error) {
	return func(c *Cache) (*Keyspace[K, V], error) {
		return NewKeyspace[K, V](c, name, c.cfg.Keyspaces[name], opts...)
	}
}
