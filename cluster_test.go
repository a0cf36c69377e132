package tiercache_test

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/tiercache/tiercache"
	"github.com/tiercache/tiercache/internal/redistest"
)

// TestClusterSetEvictsOtherReplicas runs three replicas on a 3-master Redis
// Cluster. Keys spread over every master: a Set's script runs on the key's
// master and its PUBLISH reaches the subscribers on other masters, so every
// other replica evicts its L1 copy; GetMany pipelines across the masters.
func TestClusterSetEvictsOtherReplicas(t *testing.T) {
	cl := redistest.StartCluster(t)
	ctx := context.Background()
	var (
		reps []*replica
		kss  []*tiercache.Keyspace[string, int]
	)
	for range 3 {
		r := newReplicaOn(t, cl.Client(t), tiercache.Config{Namespace: "cl"})
		ks, err := tiercache.NewKeyspace[string, int](r.c, "ks", tiercache.KeyspaceConfig{})
		if err != nil {
			t.Fatal(err)
		}
		reps, kss = append(reps, r), append(kss, ks)
	}
	// One key per master, found by asking the harness where each lands.
	byNode := map[*redistest.Server]string{}
	for i := 0; len(byNode) < 3 && i < 1000; i++ {
		k := fmt.Sprintf("key-%d", i)
		if n := cl.NodeFor("cl:ks:" + k); byNode[n] == "" {
			byNode[n] = k
		}
	}
	if len(byNode) != 3 {
		t.Fatalf("keys found on %d masters; want 3", len(byNode))
	}
	keys := make([]string, 0, 3)
	for _, k := range byNode {
		keys = append(keys, k)
	}

	for _, k := range keys {
		if err := kss[0].Set(ctx, k, 1); err != nil {
			t.Fatalf("Set(%s) on a cluster: %v", k, err)
		}
		for _, r := range reps {
			r.waitKeys(t, "ks", k) // every replica, the writer's echo included
		}
	}
	// Replicas 1 and 2 hold every key in L1, read with one GetMany.
	for _, ks := range kss[1:] {
		waitL1(t, ks, func() bool {
			before := ks.Stats().L1Hits
			m, err := ks.GetMany(ctx, keys, nil)
			return err == nil && len(m) == 3 && ks.Stats().L1Hits-before == 3
		})
	}
	for _, k := range keys {
		if err := kss[0].Set(ctx, k, 2); err != nil {
			t.Fatal(err)
		}
	}
	for i, r := range reps[1:] {
		r.waitKeys(t, "ks", keys...)
		for _, k := range keys {
			if v, err := kss[i+1].Get(ctx, k); err != nil || v != 2 {
				t.Errorf("replica %d Get(%s) after Set on the cluster = %d, %v; want 2", i+1, k, v, err)
			}
		}
	}
	// Replica 0 (the writer) consumes its echoes and reads keys[0] into L1;
	// then replica 2 deletes it.
	reps[0].waitKeys(t, "ks", keys...)
	waitL1(t, kss[0], func() bool {
		before := kss[0].Stats().L1Hits
		v, err := kss[0].Get(ctx, keys[0])
		return err == nil && v == 2 && kss[0].Stats().L1Hits > before
	})
	// One Delete of keys on all three masters: one script per slot.
	if err := kss[2].Delete(ctx, keys...); err != nil {
		t.Fatalf("Delete of keys on three masters: %v", err)
	}
	reps[0].waitKeys(t, "ks", keys...)
	for _, k := range keys {
		if _, err := kss[0].Get(ctx, k); !errors.Is(err, tiercache.ErrNotFound) {
			t.Errorf("Get(%s) after Delete on the cluster = %v; want ErrNotFound", k, err)
		}
	}
}
