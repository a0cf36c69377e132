package main

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/tiercache/tiercache"
	"github.com/tiercache/tiercache/internal/redistest"
)

// TestClusterCLI proves that on a Redis Cluster the commands see every
// master: replicas lists the replica, get finds tags whose sets live on
// different masters, invalidate --tag deletes keys spread over every slot
// range and invalidate --all clears the keyspace.
func TestClusterCLI(t *testing.T) {
	t.Parallel()
	cluster := redistest.StartCluster(t)
	client := cluster.Client(t)
	r := startReplica(t, client, "replica-c", false)
	ctx := context.Background()
	all := []*replica{r}
	// Tag sets are keyed by their {keyspace:tag} hash tag: these three
	// land on three masters.
	tags := []string{"red", "green", "blue"}
	nodes := map[string]bool{}
	for _, tag := range tags {
		nodes[cluster.NodeFor("{products:"+tag+"}").Addr] = true
	}
	if len(nodes) < 2 {
		t.Fatalf("the tag sets of %q all live on one master; pick other tags", tags)
	}
	var keys []string
	for i := range 12 {
		k := "p" + string(rune('a'+i))
		set(t, r.products, k, item{ID: int64(i)}, all, tags[i%3], tags[(i+1)%3])
		keys = append(keys, k)
	}
	if err := r.cache.WritePresence(ctx); err != nil {
		t.Fatal(err)
	}
	addr := strings.Join(cluster.Addrs(), ",")

	cli(t, "replicas", "--addr", addr).want(t, exitOK, []string{"replica-c"}, nil)

	for _, give := range [][]string{{"--addr", addr}, {"--cluster", "--addr", cluster.Addrs()[0]}} {
		res := cli(t, append([]string{"get", "products", "pa"}, give...)...)
		res.want(t, exitOK, nil, nil)
		var got struct{ Tags []string }
		if err := json.Unmarshal([]byte(res.stdout), &got); err != nil {
			t.Fatalf("get: %v\n%s", err, res.stdout)
		}
		if want := []string{"green", "red"}; !slices.Equal(got.Tags, want) {
			t.Errorf("get %q: tags = %q; want %q", give, got.Tags, want)
		}
	}

	// Keys tagged blue: i%3 == 2 or (i+1)%3 == 2, that is 8 of the 12.
	cli(t, "invalidate", "products", "--tag", "blue", "--addr", addr).want(t, exitOK, []string{"deleted 8 keys tagged blue"}, nil)
	cli(t, "invalidate", "products", "--all", "--addr", addr).want(t, exitOK, []string{"cleared keyspace \"products\""}, nil)
	r.waitInvalidation(t, "a flush of products", fromCLI(flushOf("products")))
	for _, k := range keys {
		if v, err := r.products.Get(ctx, k); !errors.Is(err, tiercache.ErrNotFound) {
			t.Errorf("Get(%s) after invalidate --all = %+v, %v; want ErrNotFound", k, v, err)
		}
	}
}

// TestClusterShardedCLI proves that the CLI speaks the replicas' sharded
// pub/sub on a Cluster (pubsub_mode auto on both sides): watch prints a
// replica's Set, published with SPUBLISH on the slot's channel of a master
// that watch's first address does not serve; invalidate --l1-only reaches
// the replica; and with --pubsub-mode classic the CLI publishes where a
// sharded replica does not listen.
func TestClusterShardedCLI(t *testing.T) {
	t.Parallel()
	cluster := redistest.StartCluster(t)
	client := cluster.Client(t)
	r := startReplica(t, client, "replica-s", false)
	if m := r.cache.PubSubMode(); m != tiercache.PubSubSharded {
		t.Fatalf("replica pubsub mode %q on a Cluster; want sharded", m)
	}
	ctx := context.Background()
	addr := strings.Join(cluster.Addrs(), ",")

	// Keys on every master, so that watch must hear all three.
	var keys []string
	served := map[string]bool{}
	for i := 0; len(served) < len(cluster.Nodes) && i < 100; i++ {
		k := "w" + strconv.Itoa(i)
		if n := cluster.NodeFor("tiercache:products:" + k).Addr; !served[n] {
			served[n] = true
			keys = append(keys, k)
		}
	}
	if len(served) != len(cluster.Nodes) {
		t.Fatalf("keys %v cover %d masters", keys, len(served))
	}
	w := start(t, "watch", "--count", strconv.Itoa(len(keys)), "--json", "--addr", addr)
	w.waitLine(t, "subscribed to tiercache:invalidate")
	for i, k := range keys {
		if err := r.products.Set(ctx, k, item{ID: int64(i)}); err != nil {
			t.Fatal(err)
		}
	}
	res := w.finish(t)
	res.want(t, exitOK, nil, nil)
	for _, k := range keys {
		if !strings.Contains(res.stdout, `"keys":["`+k+`"]`) {
			t.Errorf("watch did not print the Set of %s:\n%s", k, res.stdout)
		}
	}

	cli(t, "invalidate", "products", "pa", "--l1-only", "--addr", addr).want(t, exitOK, []string{"published 1 invalidation"}, nil)
	r.waitInvalidation(t, "the --l1-only invalidation of pa", fromCLI(keysOf("products", "pa")))

	cli(t, "invalidate", "products", "--all", "--addr", addr, "--pubsub-mode", "nonsense").want(t, exitUsage, nil, []string{"--pubsub-mode"})
}
