package tiercache_test

import (
	"context"
	"errors"
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

func TestModuleWithoutRedisFails(t *testing.T) {
	app := fx.New(fx.NopLogger, fx.Supply(tiercache.Config{}), tiercache.Module,
		fx.Invoke(func(*tiercache.Cache) {}))
	if err := app.Err(); !errors.Is(err, tiercache.ErrInvalidConfig) {
		t.Errorf("fx app without a client or addresses: %v; want ErrInvalidConfig", err)
	}
}
