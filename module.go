package tiercache

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"strconv"
	"strings"

	"github.com/redis/go-redis/v9"
	"go.opentelemetry.io/otel/metric"
	"go.uber.org/fx"
)

// Module provides a *Cache whose Start and Stop run on the fx lifecycle.
//
// It needs a Config in the graph (e.g. fx.Supply(tiercache.Config{...}) or
// one decoded from the app's YAML). It uses the Redis client of the graph
// when there is one, and the caller keeps owning it: a *redis.Client (what
// redis.NewClient and redis.NewFailoverClient return), a
// *redis.ClusterClient, or a redis.UniversalClient; at most one of them.
// Otherwise it builds one from Config.Redis, owns it and closes it on stop;
// with neither, the app fails to build, naming what to provide. An
// optional *slog.Logger in the graph becomes the cache's logger, and an
// optional metric.MeterProvider its meter (WithMeterProvider).
var Module = fx.Module("tiercache", fx.Provide(NewFromParams))

// Params are the dependencies of the Cache provided by Module.
type Params struct {
	fx.In

	Lifecycle fx.Lifecycle
	Config    Config

	// Client, RedisClient and ClusterClient are the Redis clients the
	// Cache may use, whichever the graph provides; at most one of them
	// (one value provided under several of these types counts once).
	// Without any, Module builds a client from Config.Redis.
	Client redis.UniversalClient `optional:"true"`
	// RedisClient is a standalone or Sentinel client: redis.NewClient and
	// redis.NewFailoverClient return one.
	RedisClient *redis.Client `optional:"true"`
	// ClusterClient is a Redis Cluster client (redis.NewClusterClient).
	ClusterClient *redis.ClusterClient `optional:"true"`

	Logger *slog.Logger `optional:"true"`
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

// graphClient returns the one Redis client of p, nil when it has none, or
// an error when it has several.
func (p Params) graphClient() (redis.UniversalClient, error) {
	type provided struct {
		typ    string
		client redis.UniversalClient
	}
	var found []provided
	add := func(typ string, c redis.UniversalClient) {
		for _, f := range found {
			if f.client == c { // one client provided under two types
				return
			}
		}
		found = append(found, provided{typ, c})
	}
	if p.Client != nil {
		add("redis.UniversalClient", p.Client)
	}
	if p.RedisClient != nil {
		add("*redis.Client", p.RedisClient)
	}
	if p.ClusterClient != nil {
		add("*redis.ClusterClient", p.ClusterClient)
	}
	switch len(found) {
	case 0:
		return nil, nil
	case 1:
		return found[0].client, nil
	}
	types := make([]string, len(found))
	for i, f := range found {
		types[i] = f.typ
	}
	return nil, fmt.Errorf("%w: the fx graph provides %d Redis clients, a %s: provide one (tiercache.Module uses the client it finds under any of these types)",
		ErrInvalidConfig, len(found), strings.Join(types, " and a "))
}

// NewFromParams builds the Cache of Module and appends its Start and Stop to
// the lifecycle. It is exported for apps that wire fx by hand.
func NewFromParams(p Params) (Result, error) {
	client, err := p.graphClient()
	if err != nil {
		return Result{}, err
	}
	owned := false
	if client == nil {
		if len(p.Config.Redis.Addrs) == 0 {
			return Result{}, fmt.Errorf("%w: no Redis client: provide a *redis.Client (redis.NewClient, redis.NewFailoverClient), "+
				"a *redis.ClusterClient or a redis.UniversalClient to the fx graph, or set Config.Redis.Addrs (redis.addrs) "+
				"for tiercache.Module to build its own", ErrInvalidConfig)
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
// Config.Keyspaces[name] (defaults when absent), with opts (WithTags,
// WithWarmer, WithWriter, WithWriteBehind, WithCounter). Use
// ProvideKeyspaceWith when the options need something from the graph, such
// as the app's database, and ProvideNamedKeyspace when two keyspaces share
// the same K and V types.
func ProvideKeyspace[K Key, V any](name string, opts ...KeyspaceOption[K, V]) fx.Option {
	return fx.Provide(keyspaceConstructor[K, V](name, opts))
}

// ProvideNamedKeyspace is ProvideKeyspace with the result tagged
// `name:"<name>"`, for apps with several keyspaces of the same types.
func ProvideNamedKeyspace[K Key, V any](name string, opts ...KeyspaceOption[K, V]) fx.Option {
	return fx.Provide(fx.Annotate(keyspaceConstructor[K, V](name, opts), fx.ResultTags(nameTag(name))))
}

// ProvideKeyspaceWith is ProvideKeyspace with the options that newOptions
// returns, for options that need something from the graph, such as a
// write-through Writer or a CounterFlusher that needs the app's database.
//
// newOptions is a constructor, as fx.Provide takes one: a function whose
// parameters fx fills from the graph (plain types, an fx.In struct, or a
// function wrapped in fx.Annotate for tagged parameters) and that returns
// []KeyspaceOption[K, V], and optionally an error:
//
//	tiercache.ProvideKeyspaceWith[int64, Product]("products",
//		func(db *sql.DB) []tiercache.KeyspaceOption[int64, Product] {
//			return []tiercache.KeyspaceOption[int64, Product]{tiercache.WithWriter(saveProduct(db))}
//		})
//
// fx calls it once, when the keyspace is built. Its options stay private to
// the keyspace: they are not provided to the rest of the graph, so several
// keyspaces of the same types can each have theirs. A newOptions that is
// not such a function fails the app's build, saying why.
func ProvideKeyspaceWith[K Key, V any](name string, newOptions any) fx.Option {
	return keyspaceWith[K, V]("ProvideKeyspaceWith", name, newOptions, false)
}

// ProvideNamedKeyspaceWith is ProvideKeyspaceWith with the result tagged
// `name:"<name>"`, as ProvideNamedKeyspace.
func ProvideNamedKeyspaceWith[K Key, V any](name string, newOptions any) fx.Option {
	return keyspaceWith[K, V]("ProvideNamedKeyspaceWith", name, newOptions, true)
}

// keyspaceWith returns a module of its own holding newOptions, provided
// privately, and the keyspace's constructor, which takes its result.
func keyspaceWith[K Key, V any](fn, name string, newOptions any, named bool) fx.Option {
	if err := checkOptionsConstructor[K, V](newOptions); err != nil {
		return fx.Error(fmt.Errorf("tiercache: %s[%s, %s](%q): %w", fn, typeName[K](), typeName[V](), name, err))
	}
	build := func(c *Cache, opts []KeyspaceOption[K, V]) (*Keyspace[K, V], error) {
		return NewKeyspace[K, V](c, name, c.cfg.Keyspaces[name], opts...)
	}
	var provide fx.Option = fx.Provide(build)
	if named {
		provide = fx.Provide(fx.Annotate(build, fx.ResultTags(nameTag(name))))
	}
	return fx.Module("tiercache.keyspace."+name, fx.Provide(newOptions, fx.Private), provide)
}

// checkOptionsConstructor refuses a newOptions that is not a function
// returning []KeyspaceOption[K, V], and optionally an error. Functions
// wrapped in fx.Annotate are left to fx, which checks them as it builds
// the graph.
func checkOptionsConstructor[K Key, V any](newOptions any) error {
	want := reflect.TypeFor[[]KeyspaceOption[K, V]]()
	wantName := "[]tiercache.KeyspaceOption[" + typeName[K]() + ", " + typeName[V]() + "]"
	t := reflect.TypeOf(newOptions)
	switch {
	case newOptions == nil:
		return fmt.Errorf("nil options constructor")
	case t.Kind() != reflect.Func:
		if t.PkgPath() == "go.uber.org/fx" { // fx.Annotate's result
			return nil
		}
		return fmt.Errorf("options constructor is a %v; want a function returning %s", t, wantName)
	case reflect.ValueOf(newOptions).IsNil():
		return fmt.Errorf("nil options constructor")
	}
	errType := reflect.TypeFor[error]()
	if ok := t.NumOut() == 1 && t.Out(0) == want || t.NumOut() == 2 && t.Out(0) == want && t.Out(1) == errType; !ok {
		return fmt.Errorf("options constructor is a %v; want it to return %s, or (%[2]s, error)", t, wantName)
	}
	return nil
}

// typeName names T as Go source would, for error messages.
func typeName[T any]() string { return reflect.TypeFor[T]().String() }

// nameTag is the fx tag `name:"<name>"` of a named keyspace.
func nameTag(name string) string { return "name:" + strconv.Quote(name) }

func keyspaceConstructor[K Key, V any](name string, opts []KeyspaceOption[K, V]) func(*Cache) (*Keyspace[K, V], error) {
	return func(c *Cache) (*Keyspace[K, V], error) {
		return NewKeyspace[K, V](c, name, c.cfg.Keyspaces[name], opts...)
	}
}
