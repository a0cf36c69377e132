package tiercache_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/tiercache/tiercache"
	"github.com/tiercache/tiercache/internal/redistest"
)

// TestPubSubModeResolved checks what pubsub_mode means for each client:
// auto is sharded on a Cluster client and classic on any other; sharded
// needs a Cluster client and a channel without '{'; anything else is
// refused.
func TestPubSubModeResolved(t *testing.T) {
	plain := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"})
	defer plain.Close()
	cluster := redis.NewClusterClient(&redis.ClusterOptions{Addrs: []string{"127.0.0.1:1"}})
	defer cluster.Close()
	tests := []struct {
		client  redis.UniversalClient
		cfg     tiercache.Config
		want    string
		wantErr string
	}{
		{plain, tiercache.Config{}, tiercache.PubSubClassic, ""},
		{cluster, tiercache.Config{}, tiercache.PubSubSharded, ""},
		{cluster, tiercache.Config{PubSubMode: "classic"}, tiercache.PubSubClassic, ""},
		{plain, tiercache.Config{PubSubMode: "sharded"}, "", "needs a Redis Cluster client"},
		{cluster, tiercache.Config{Channel: "inv{x}"}, "", "holds '{'"},
		{cluster, tiercache.Config{Channel: "inv{x}", PubSubMode: "classic"}, tiercache.PubSubClassic, ""},
		{plain, tiercache.Config{PubSubMode: "fast"}, "", `pubsub_mode "fast"`},
	}
	for _, tt := range tests {
		c, err := tiercache.New(tt.client, tt.cfg)
		switch {
		case tt.wantErr != "":
			if !errors.Is(err, tiercache.ErrInvalidConfig) || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("New(%T, %+v) = %v; want ErrInvalidConfig naming %q", tt.client, tt.cfg, err, tt.wantErr)
			}
		case err != nil:
			t.Errorf("New(%T, %+v): %v", tt.client, tt.cfg, err)
		default:
			if got := c.PubSubMode(); got != tt.want {
				t.Errorf("New(%T, %+v).PubSubMode() = %q; want %q", tt.client, tt.cfg, got, tt.want)
			}
			if got := c.Config().PubSubMode; got != cmpOr(tt.cfg.PubSubMode, tiercache.PubSubAuto) {
				t.Errorf("Config().PubSubMode = %q; want the configured mode", got)
			}
		}
	}
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// TestPubSubShardedNeedsRedis7 runs a Cluster whose masters have no
// sharded pub/sub, as on Redis 6 (SSUBSCRIBE renamed away): Start with
// pubsub_mode auto fails with an error that says to set classic, and a
// Cache with classic starts and carries invalidations.
func TestPubSubShardedNeedsRedis7(t *testing.T) {
	cl := redistest.StartClusterArgs(t, "--rename-command", "SSUBSCRIBE", "")
	ctx := context.Background()
	c, err := tiercache.New(cl.Client(t), tiercache.Config{Namespace: "r6"})
	if err != nil {
		t.Fatal(err)
	}
	err = c.Start(ctx)
	if !errors.Is(err, tiercache.ErrInvalidConfig) || !strings.Contains(err.Error(), `set pubsub_mode "classic"`) {
		t.Fatalf("Start with sharded pub/sub on masters without it = %v; want ErrInvalidConfig saying to set classic", err)
	}
	a := newReplicaOn(t, cl.Client(t), tiercache.Config{Namespace: "r6", PubSubMode: tiercache.PubSubClassic})
	b := newReplicaOn(t, cl.Client(t), tiercache.Config{Namespace: "r6", PubSubMode: tiercache.PubSubClassic})
	ka := mustKeyspace[string, int](t, a.c, "ks", tiercache.KeyspaceConfig{})
	mustKeyspace[string, int](t, b.c, "ks", tiercache.KeyspaceConfig{})
	if err := ka.Set(ctx, "k", 1); err != nil {
		t.Fatal(err)
	}
	b.waitKeys(t, "ks", "k")
}
