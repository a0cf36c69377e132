package main

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
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
