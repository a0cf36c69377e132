package tiercache_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/fx"
	"go.uber.org/fx/fxtest"

	"github.com/tiercache/tiercache"
	"github.com/tiercache/tiercache/internal/redistest"
)

type user struct {
	ID   int64
	Name string
}

// fxReplica is one fx app: a service including tiercache.Module.
type fxReplica struct {
	app   *fxtest.App
	users *tiercache.Keyspace[int64, user]
	inv   chan tiercache.Invalidation // applied invalidations, from the hook
}

func newFxReplica(t *testing.T, srv *redistest.Server) *fxReplica {
	t.Helper()
	r := &fxReplica{inv: make(chan tiercache.Invalidation, 64)}
	cfg := tiercache.Config{
		Namespace: "fx",
		Keyspaces: map[string]tiercache.KeyspaceConfig{"users": {TTL: 10 * time.Minute}},
	}
	hook := tiercache.WithInvalidationHook(func(i tiercache.Invalidation) {
		select {
		case r.inv <- i:
		default: // never block the bus's dispatcher
			t.Errorf("invalidation hook channel full")
		}
	})
	r.app = fxtest.New(t,
		fx.NopLogger,
		fx.Supply(cfg),
		fx.Provide(func(lc fx.Lifecycle) redis.UniversalClient {
			c := redis.NewClient(srv.Options())
			lc.Append(fx.StopHook(c.Close))
			return c
		}),
		fx.Provide(fx.Annotate(func() tiercache.Option { return hook },
			fx.ResultTags(`group:"`+tiercache.OptionGroup+`"`))),
		tiercache.Module,
		tiercache.ProvideKeyspace[int64, user]("users"),
		fx.Invoke(func(ks *tiercache.Keyspace[int64, user]) { r.users = ks }),
	)
	return r
}

// waitKey waits until the app applied an invalidation of users/key.
func (r *fxReplica) waitKey(t *testing.T, key string) {
	t.Helper()
	awaitKeys(t, r.inv, "users", key)
}

// TestModuleThreeAppsInvalidate starts three fx apps on one redis-server; a
// Set and a Delete in one evict the key from the L1 of the two others.
func TestModuleThreeAppsInvalidate(t *testing.T) {
	srv := redistest.Start(t)
	ctx := context.Background()
	apps := make([]*fxReplica, 3)
	for i := range apps {
		apps[i] = newFxReplica(t, srv)
		apps[i].app.RequireStart()
	}
	if got := apps[0].users.Config().TTL; got != 10*time.Minute {
		t.Errorf("keyspace TTL from Config.Keyspaces = %v; want 10m", got)
	}
	if err := apps[0].users.Set(ctx, 42, user{42, "ada"}); err != nil {
		t.Fatal(err)
	}
	apps[0].waitKey(t, "42") // the writer's own echo
	for _, a := range apps[1:] {
		a.waitKey(t, "42")
		waitL1(t, a.users, func() bool {
			before := a.users.Stats().L1Hits
			u, err := a.users.Get(ctx, 42)
			return err == nil && u.Name == "ada" && a.users.Stats().L1Hits > before
		})
	}
	// Both peers now hold "ada" in L1. A Set on app 0 must evict it there.
	if err := apps[0].users.Set(ctx, 42, user{42, "grace"}); err != nil {
		t.Fatal(err)
	}
	apps[0].waitKey(t, "42") // the writer's own echo
	for i, a := range apps[1:] {
		a.waitKey(t, "42")
		if u, err := a.users.Get(ctx, 42); err != nil || u.Name != "grace" {
			t.Errorf("app %d Get(42) after remote Set = %+v, %v; want grace", i+1, u, err)
		}
	}
	// Apps 0 and 1 hold "grace" in L1 before app 2 deletes it.
	for _, a := range apps[:2] {
		waitL1(t, a.users, func() bool {
			before := a.users.Stats().L1Hits
			u, err := a.users.Get(ctx, 42)
			return err == nil && u.Name == "grace" && a.users.Stats().L1Hits > before
		})
	}
	if err := apps[2].users.Delete(ctx, 42); err != nil {
		t.Fatal(err)
	}
	for i, a := range apps[:2] {
		a.waitKey(t, "42")
		if _, err := a.users.Get(ctx, 42); !errors.Is(err, tiercache.ErrNotFound) {
			t.Errorf("app %d Get(42) after remote Delete = %v; want ErrNotFound", i, err)
		}
	}
	for _, a := range apps {
		a.app.RequireStop()
	}
	for i, a := range apps {
		if _, err := a.users.Get(ctx, 42); !errors.Is(err, tiercache.ErrClosed) {
			t.Errorf("app %d Get after stop = %v; want ErrClosed", i, err)
		}
	}
}

// TestModuleOwnsClientFromConfig: with no client in the graph the module
// builds one from Config.Redis and closes it on stop.
func TestModuleOwnsClientFromConfig(t *testing.T) {
	srv := redistest.Start(t)
	var c *tiercache.Cache
	app := fxtest.New(t,
		fx.NopLogger,
		fx.Supply(tiercache.Config{Redis: tiercache.RedisConfig{Addrs: []string{srv.Addr}}}),
		tiercache.Module,
		tiercache.ProvideNamedKeyspace[string, string]("a"),
		tiercache.ProvideNamedKeyspace[string, string]("b"),
		fx.Invoke(fx.Annotate(func(cache *tiercache.Cache, a, b *tiercache.Keyspace[string, string]) {
			c = cache
			if a.Name() != "a" || b.Name() != "b" {
				t.Errorf("named keyspaces = %q, %q; want a, b", a.Name(), b.Name())
			}
		}, fx.ParamTags(``, `name:"a"`, `name:"b"`))),
	)
	app.RequireStart()
	if !c.Healthy() {
		t.Error("cache not healthy after fx start")
	}
	app.RequireStop()
}

// countCommands adds to c a hook that counts the commands it sends, and
// returns the count.
func countCommands(c interface{ AddHook(redis.Hook) }) *atomic.Int64 {
	var n atomic.Int64
	c.AddHook(commandCounter{&n})
	return &n
}

// commandCounter is a go-redis hook counting commands, pipelined or not.
type commandCounter struct{ n *atomic.Int64 }

func (h commandCounter) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h commandCounter) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		h.n.Add(1)
		return next(ctx, cmd)
	}
}

func (h commandCounter) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		h.n.Add(int64(len(cmds)))
		return next(ctx, cmds)
	}
}

// TestModuleClientTypes proves that the module uses the Redis client the
// graph provides, whichever of the accepted types it is provided as (and
// not Config.Redis, which points nowhere here), and leaves it open on stop:
// its caller owns it.
func TestModuleClientTypes(t *testing.T) {
	srv := redistest.Start(t)
	tests := []struct {
		name    string
		give    func(t *testing.T) redis.UniversalClient // a client the test closes
		provide func(c redis.UniversalClient) fx.Option
	}{
		{
			name: "*redis.Client",
			give: func(t *testing.T) redis.UniversalClient { return srv.Client(t) },
			provide: func(c redis.UniversalClient) fx.Option {
				return fx.Provide(func() *redis.Client { return c.(*redis.Client) })
			},
		},
		{
			name: "*redis.Client from redis.NewFailoverClient",
			give: func(t *testing.T) redis.UniversalClient { return redistest.StartSentinel(t).FailoverClient(t) },
			provide: func(c redis.UniversalClient) fx.Option {
				return fx.Provide(func() *redis.Client { return c.(*redis.Client) })
			},
		},
		{
			name: "*redis.ClusterClient",
			give: func(t *testing.T) redis.UniversalClient { return redistest.StartCluster(t).Client(t) },
			provide: func(c redis.UniversalClient) fx.Option {
				return fx.Provide(func() *redis.ClusterClient { return c.(*redis.ClusterClient) })
			},
		},
		{
			name: "redis.UniversalClient",
			give: func(t *testing.T) redis.UniversalClient { return srv.Client(t) },
			provide: func(c redis.UniversalClient) fx.Option {
				return fx.Provide(func() redis.UniversalClient { return c })
			},
		},
		{
			name: "*redis.Client as itself and as redis.UniversalClient",
			give: func(t *testing.T) redis.UniversalClient { return srv.Client(t) },
			provide: func(c redis.UniversalClient) fx.Option {
				return fx.Provide(fx.Annotate(func() *redis.Client { return c.(*redis.Client) },
					fx.As(fx.Self()), fx.As(new(redis.UniversalClient))))
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			client := tt.give(t)
			sent := countCommands(client.(interface{ AddHook(redis.Hook) }))
			var users *tiercache.Keyspace[int64, user]
			app := fxtest.New(t,
				fx.NopLogger,
				fx.Supply(tiercache.Config{Namespace: "fxclient", Redis: tiercache.RedisConfig{Addrs: []string{"127.0.0.1:1"}}}),
				tt.provide(client),
				tiercache.Module,
				tiercache.ProvideKeyspace[int64, user]("users"),
				fx.Populate(&users),
			)
			app.RequireStart()
			ctx := context.Background()
			before := sent.Load()
			if err := users.Set(ctx, 7, user{7, "ada"}); err != nil {
				t.Fatal(err)
			}
			if sent.Load() == before {
				t.Error("Set sent no command through the client of the graph")
			}
			raw, err := client.Get(ctx, users.RedisKey(7)).Bytes()
			if err != nil || len(raw) == 0 {
				t.Errorf("the graph's client reads %q = %d bytes, %v; want the value Set wrote", users.RedisKey(7), len(raw), err)
			}
			app.RequireStop()
			if err := client.Ping(ctx).Err(); err != nil {
				t.Errorf("Ping after the app stopped = %v; want the caller's client left open", err)
			}
		})
	}
}

// TestModuleWithoutRedisFails: with neither a client in the graph nor an
// address in Config.Redis, the app does not build, and the error names
// every client type the module accepts and the setting.
func TestModuleWithoutRedisFails(t *testing.T) {
	app := fx.New(fx.NopLogger, fx.Supply(tiercache.Config{}), tiercache.Module,
		fx.Invoke(func(*tiercache.Cache) {}))
	err := app.Err()
	if !errors.Is(err, tiercache.ErrInvalidConfig) {
		t.Fatalf("fx app without a client or addresses: %v; want ErrInvalidConfig", err)
	}
	for _, want := range []string{"no Redis client", "*redis.Client", "redis.NewFailoverClient", "*redis.ClusterClient", "redis.UniversalClient", "Config.Redis.Addrs"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not name %q", err, want)
		}
	}
}

// TestModuleTwoClients: two different clients in the graph are an error
// that names both types, whatever the pair.
func TestModuleTwoClients(t *testing.T) {
	newClient := func(t *testing.T) *redis.Client {
		c := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"})
		t.Cleanup(func() { c.Close() })
		return c
	}
	newCluster := func(t *testing.T) *redis.ClusterClient {
		c := redis.NewClusterClient(&redis.ClusterOptions{Addrs: []string{"127.0.0.1:1"}})
		t.Cleanup(func() { c.Close() })
		return c
	}
	tests := []struct {
		name      string
		provide   func(t *testing.T) fx.Option
		wantTypes []string
	}{
		{
			name: "UniversalClient and *Client",
			provide: func(t *testing.T) fx.Option {
				a, b := newClient(t), newClient(t)
				return fx.Provide(func() redis.UniversalClient { return a }, func() *redis.Client { return b })
			},
			wantTypes: []string{"redis.UniversalClient", "*redis.Client"},
		},
		{
			name: "*Client and *ClusterClient",
			provide: func(t *testing.T) fx.Option {
				a, b := newClient(t), newCluster(t)
				return fx.Provide(func() *redis.Client { return a }, func() *redis.ClusterClient { return b })
			},
			wantTypes: []string{"*redis.Client", "*redis.ClusterClient"},
		},
		{
			name: "all three",
			provide: func(t *testing.T) fx.Option {
				a, b, c := newClient(t), newClient(t), newCluster(t)
				return fx.Provide(func() redis.UniversalClient { return a }, func() *redis.Client { return b },
					func() *redis.ClusterClient { return c })
			},
			wantTypes: []string{"3 Redis clients", "redis.UniversalClient", "*redis.Client", "*redis.ClusterClient"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			app := fx.New(fx.NopLogger, fx.Supply(tiercache.Config{}), tt.provide(t), tiercache.Module,
				fx.Invoke(func(*tiercache.Cache) {}))
			err := app.Err()
			if !errors.Is(err, tiercache.ErrInvalidConfig) {
				t.Fatalf("fx app with two clients: %v; want ErrInvalidConfig", err)
			}
			for _, want := range append(tt.wantTypes, "provide one") {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not name %q", err, want)
				}
			}
		})
	}
}

// appDB stands for an app's database in the graph: what keyspace options
// built from the graph write to.
type appDB struct {
	mu     sync.Mutex // protects users, counts
	users  map[int64]user
	counts map[string]map[int64]int64 // by counter keyspace
}

func newAppDB() *appDB {
	return &appDB{users: map[int64]user{}, counts: map[string]map[int64]int64{}}
}

func (db *appDB) writeUser(_ context.Context, id int64, u user) error {
	db.mu.Lock()
	defer db.mu.Unlock()
	db.users[id] = u
	return nil
}

func (db *appDB) adder(keyspace string) tiercache.CounterFlusher[int64] {
	return func(_ context.Context, deltas map[int64]int64) error {
		db.mu.Lock()
		defer db.mu.Unlock()
		if db.counts[keyspace] == nil {
			db.counts[keyspace] = map[int64]int64{}
		}
		for k, d := range deltas {
			db.counts[keyspace][k] += d
		}
		return nil
	}
}

// counterParams are the dependencies of the options of the counter
// keyspaces, an fx.In struct.
type counterParams struct {
	fx.In

	DB *appDB `name:"primary"`
}

// TestModuleKeyspaceOptionsFromGraph proves that keyspace options can be
// built from the graph: a write-through writer from a plain constructor,
// counter flushers of two keyspaces of the same types from an fx.In struct
// and from an fx.Annotate'd constructor; each keyspace gets its own.
func TestModuleKeyspaceOptionsFromGraph(t *testing.T) {
	srv := redistest.Start(t)
	db := newAppDB()
	var (
		users       *tiercache.Keyspace[int64, user]
		views, like *tiercache.Keyspace[int64, int64]
		calls       atomic.Int64
	)
	app := fxtest.New(t,
		fx.NopLogger,
		fx.Supply(tiercache.Config{Namespace: "fxopts", Redis: tiercache.RedisConfig{Addrs: []string{srv.Addr}}}),
		fx.Provide(fx.Annotate(func() *appDB { return db }, fx.ResultTags(`name:"primary"`))),
		fx.Provide(func() *appDB { return newAppDB() }), // another database, which the options must not get
		tiercache.Module,
		tiercache.ProvideKeyspaceWith[int64, user]("users",
			fx.Annotate(func(db *appDB) []tiercache.KeyspaceOption[int64, user] {
				calls.Add(1)
				return []tiercache.KeyspaceOption[int64, user]{tiercache.WithWriter(db.writeUser)}
			}, fx.ParamTags(`name:"primary"`))),
		tiercache.ProvideNamedKeyspaceWith[int64, int64]("views", func(p counterParams) ([]tiercache.KeyspaceOption[int64, int64], error) {
			calls.Add(1)
			return []tiercache.KeyspaceOption[int64, int64]{tiercache.WithCounter[int64, int64](p.DB.adder("views"))}, nil
		}),
		tiercache.ProvideNamedKeyspaceWith[int64, int64]("likes", func(p counterParams) []tiercache.KeyspaceOption[int64, int64] {
			calls.Add(1)
			return []tiercache.KeyspaceOption[int64, int64]{tiercache.WithCounter[int64, int64](p.DB.adder("likes"))}
		}),
		fx.Invoke(fx.Annotate(func(u *tiercache.Keyspace[int64, user], v, l *tiercache.Keyspace[int64, int64]) {
			users, views, like = u, v, l
		}, fx.ParamTags(``, `name:"views"`, `name:"likes"`))),
	)
	app.RequireStart()
	if got := calls.Load(); got != 3 {
		t.Errorf("options constructors called %d times; want once per keyspace, 3", got)
	}
	if views.Name() != "views" || like.Name() != "likes" {
		t.Errorf("named keyspaces = %q, %q; want views, likes", views.Name(), like.Name())
	}
	ctx := context.Background()
	if err := users.Write(ctx, 1, user{1, "ada"}); err != nil {
		t.Fatalf("Write through the writer from the graph: %v", err)
	}
	for range 3 {
		if _, err := views.Incr(ctx, 9, 1); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := like.Incr(ctx, 9, 5); err != nil {
		t.Fatal(err)
	}
	app.RequireStop() // flushes the counters

	db.mu.Lock()
	defer db.mu.Unlock()
	if got := db.users[1]; got.Name != "ada" {
		t.Errorf("database user 1 = %+v; want the one written through", got)
	}
	if v, l := db.counts["views"][9], db.counts["likes"][9]; v != 3 || l != 5 {
		t.Errorf("database counts of 9: views %d, likes %d; want 3 and 5", v, l)
	}
}

// TestModuleKeyspaceOptionsRefused: an options constructor of the wrong
// shape or types fails the app's build, saying what was expected.
func TestModuleKeyspaceOptionsRefused(t *testing.T) {
	tests := []struct {
		name string
		give fx.Option
		want []string
	}{
		{
			name: "other value type",
			give: tiercache.ProvideKeyspaceWith[int64, user]("users", func() []tiercache.KeyspaceOption[int64, string] { return nil }),
			want: []string{`ProvideKeyspaceWith[int64, tiercache_test.user]("users")`, "want it to return []tiercache.KeyspaceOption[int64, tiercache_test.user]"},
		},
		{
			name: "not a function",
			give: tiercache.ProvideNamedKeyspaceWith[int64, user]("users", []tiercache.KeyspaceOption[int64, user]{}),
			want: []string{"ProvideNamedKeyspaceWith", "want a function returning"},
		},
		{
			name: "nil",
			give: tiercache.ProvideKeyspaceWith[int64, user]("users", nil),
			want: []string{"nil options constructor"},
		},
		{
			name: "error first",
			give: tiercache.ProvideKeyspaceWith[int64, user]("users", func() (error, []tiercache.KeyspaceOption[int64, user]) { return nil, nil }),
			want: []string{"want it to return"},
		},
		{
			name: "constructor fails",
			give: tiercache.ProvideKeyspaceWith[int64, user]("users", func() ([]tiercache.KeyspaceOption[int64, user], error) {
				return nil, errors.New("no database")
			}),
			want: []string{"no database"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"})
			defer c.Close()
			app := fx.New(fx.NopLogger, fx.Supply(tiercache.Config{}), fx.Provide(func() *redis.Client { return c }),
				tiercache.Module, tt.give, fx.Invoke(func(*tiercache.Keyspace[int64, user]) {}))
			err := app.Err()
			if err == nil {
				t.Fatal("app built; want an error")
			}
			for _, want := range tt.want {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not hold %q", err, want)
				}
			}
		})
	}
}
