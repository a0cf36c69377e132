package redistest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tiercache/tiercache/internal/slots"
)

// goneAtCleanup returns a func that records the PIDs of servers. Once the
// cleanups registered after this call have run (StartCluster's Stop among
// them), the test fails for each recorded process that still exists.
func goneAtCleanup(t *testing.T) func(...*Server) {
	t.Helper()
	var pids []int
	t.Cleanup(func() {
		for _, pid := range pids {
			if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
				t.Errorf("process %d still exists after cleanup (kill 0 = %v)", pid, err)
			}
		}
	})
	return func(servers ...*Server) {
		for _, s := range servers {
			pids = append(pids, s.PID())
		}
	}
}

func TestClusterSpreadsSlots(t *testing.T) {
	t.Parallel()
	record := goneAtCleanup(t)
	c := StartCluster(t)
	record(c.Nodes...)
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()

	// Every cluster bus link is up when StartCluster returns: a PUBLISH
	// right away reaches every node.
	for i, n := range c.Nodes {
		if err := linksUp(ctx, n.Client(t)); err != nil {
			t.Errorf("node %d right after StartCluster: %v", i, err)
		}
	}

	cc := c.Client(t)
	const keys = 100
	for i := range keys {
		if err := cc.Set(ctx, fmt.Sprintf("key:%d", i), i, 0).Err(); err != nil {
			t.Fatalf("SET key:%d = %v", i, err)
		}
	}
	for i := range keys {
		if got, err := cc.Get(ctx, fmt.Sprintf("key:%d", i)).Result(); err != nil || got != strconv.Itoa(i) {
			t.Errorf("GET key:%d = %q, %v; want %q, nil", i, got, err, strconv.Itoa(i))
		}
	}
	var total int64
	for i, n := range c.Nodes {
		size, err := n.Client(t).DBSize(ctx).Result()
		if err != nil || size == 0 {
			t.Errorf("DBSIZE on node %d = %d, %v; want > 0, nil", i, size, err)
		}
		total += size
	}
	if total != keys {
		t.Errorf("DBSIZE summed over nodes = %d; want %d", total, keys)
	}

	// A message published on one node reaches a subscriber on another.
	const channel, payload = "tiercache:redistest", "hello"
	sub := c.Nodes[0].Client(t).Subscribe(ctx, channel)
	defer sub.Close()
	if v, err := sub.Receive(ctx); err != nil {
		t.Fatalf("Receive = %v", err)
	} else if _, ok := v.(*redis.Subscription); !ok {
		t.Fatalf("Receive = %T; want *redis.Subscription", v)
	}
	if err := c.Nodes[2].Client(t).Publish(ctx, channel, payload).Err(); err != nil {
		t.Fatalf("PUBLISH on node 2 = %v", err)
	}
	msg, err := sub.ReceiveMessage(ctx)
	if err != nil {
		t.Fatalf("ReceiveMessage on node 0 = %v", err)
	}
	if msg.Channel != channel || msg.Payload != payload {
		t.Errorf("message = %s %q; want %s %q", msg.Channel, msg.Payload, channel, payload)
	}

	// Without replicas there is nothing to fail over to: FailMaster
	// refuses, and kills nothing.
	if c.Replicas != nil {
		t.Errorf("NewCluster: Replicas = %v; want nil", c.Replicas)
	}
	if err := c.FailMaster(ctx, 0); err == nil {
		t.Errorf("FailMaster on a cluster without replicas = nil; want an error")
	}
	if err := c.Nodes[0].Ping(ctx); err != nil {
		t.Errorf("PING node 0 after a refused FailMaster = %v", err)
	}
}

func TestClusterNodeFor(t *testing.T) {
	t.Parallel()
	c := StartCluster(t)
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	cc := c.Client(t)
	nodes := make([]*redis.Client, len(c.Nodes))
	for i, n := range c.Nodes {
		nodes[i] = n.Client(t)
	}

	tests := []struct {
		name string
		give string
	}{
		{"plain key", "foo"},
		{"hash tag", "{user:1}:profile"},
		{"same hash tag", "{user:1}:cart"},
		{"empty tag hashes whole key", "{}user"},
		{"first tag only", "a{b}{c}"},
		{"unclosed brace", "a{bc"},
		{"empty key", ""},
	}
	// Keys on both sides of every boundary between the nodes' slot ranges.
	for _, slot := range []int{0, 5460, 5461, 10921, 10922, 16383} {
		tests = append(tests, struct {
			name string
			give string
		}{"slot " + strconv.Itoa(slot), keyInSlot(t, slot)})
	}

	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got, err := cc.ClusterKeySlot(ctx, tt.give).Result(); err != nil || got != int64(slots.Of(tt.give)) {
				t.Errorf("CLUSTER KEYSLOT %q = %d, %v; want %d, nil", tt.give, got, err, slots.Of(tt.give))
			}
			if err := cc.Set(ctx, tt.give, "v", 0).Err(); err != nil {
				t.Fatalf("SET %q = %v", tt.give, err)
			}
			want := c.NodeFor(tt.give)
			for i, n := range c.Nodes {
				got, err := nodes[i].Get(ctx, tt.give).Result()
				switch {
				case n == want && (err != nil || got != "v"):
					t.Errorf("GET %q on node %d (NodeFor) = %q, %v; want %q, nil", tt.give, i, got, err, "v")
				case n != want && (err == nil || !strings.HasPrefix(err.Error(), "MOVED ")):
					t.Errorf("GET %q on node %d (not NodeFor) = %q, %v; want a MOVED error", tt.give, i, got, err)
				}
			}
		})
	}
}

// keyInSlot returns a key that hashes to slot.
func keyInSlot(t *testing.T, slot int) string {
	t.Helper()
	for i := range 1 << 20 {
		if k := "k" + strconv.Itoa(i); slots.Of(k) == slot {
			return k
		}
	}
	t.Fatalf("no key in slot %d among 2^20 tries", slot)
	return ""
}

func TestNewClusterMissingBinaryNamesInstallCommand(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	if _, err := NewCluster(); !errors.Is(err, ErrNotInstalled) {
		t.Fatalf("NewCluster without redis-server = %v; want ErrNotInstalled", err)
	}
	if _, err := NewClusterWithReplicas(); !errors.Is(err, ErrNotInstalled) {
		t.Fatalf("NewClusterWithReplicas without redis-server = %v; want ErrNotInstalled", err)
	}
}

func TestClusterWithReplicas(t *testing.T) {
	t.Parallel()
	record := goneAtCleanup(t)
	begin := time.Now()
	c := StartClusterWithReplicas(t)
	t.Logf("StartClusterWithReplicas took %v", time.Since(begin))
	record(c.Nodes...)
	record(c.Replicas...)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()

	if len(c.Nodes) != clusterMasters || len(c.Replicas) != clusterMasters {
		t.Fatalf("%d nodes and %d replicas; want %d of each", len(c.Nodes), len(c.Replicas), clusterMasters)
	}
	for i, a := range c.Addrs() {
		if a != c.Nodes[i].Addr {
			t.Errorf("Addrs()[%d] = %s; want the master's address %s", i, a, c.Nodes[i].Addr)
		}
	}
	ids := make([]string, clusterMasters)
	for i, n := range c.Nodes {
		id, err := n.Client(t).Do(ctx, "CLUSTER", "MYID").Text()
		if err != nil {
			t.Fatalf("CLUSTER MYID on node %d = %v", i, err)
		}
		ids[i] = id
	}
	// CLUSTER NODES: "<id> <ip:port@bus> <flags> <master id> ...".
	nodes, err := c.Nodes[1].Client(t).ClusterNodes(ctx).Result()
	if err != nil {
		t.Fatalf("CLUSTER NODES = %v", err)
	}
	lines := strings.Split(strings.TrimSpace(nodes), "\n")
	replicaOf := make(map[string]string) // replica's address -> its master's ID
	for _, l := range lines {
		f := strings.Fields(l)
		if len(f) < 4 {
			t.Fatalf("CLUSTER NODES line %q: too few fields", l)
		}
		if slices.Contains(strings.Split(f[2], ","), "slave") {
			addr, _, _ := strings.Cut(f[1], "@")
			replicaOf[addr] = f[3]
		}
	}
	if len(lines) != 6 || len(replicaOf) != 3 {
		t.Errorf("CLUSTER NODES lists %d nodes, %d of them slaves; want 6 and 3:\n%s", len(lines), len(replicaOf), nodes)
	}
	for i, r := range c.Replicas {
		if replicaOf[r.Addr] != ids[i] {
			t.Errorf("CLUSTER NODES: replica %d (%s) replicates %q; want node %d's ID %s", i, r.Addr, replicaOf[r.Addr], i, ids[i])
		}
	}

	cc := redis.NewClusterClient(c.Options())
	defer cc.Close()
	key := keyInSlot(t, 100) // in Nodes[0]'s range
	if c.NodeFor(key) != c.Nodes[0] {
		t.Fatalf("NodeFor(%q) is not node 0", key)
	}
	if err := cc.Set(ctx, key, "v1", 0).Err(); err != nil {
		t.Fatalf("SET %s v1 = %v", key, err)
	}
	if got, err := cc.Get(ctx, key).Result(); err != nil || got != "v1" {
		t.Fatalf("GET %s = %q, %v; want v1, nil", key, got, err)
	}
	// WAIT counts the replicas that acknowledged the writes made on its own
	// connection, so the SET for it goes on one connection too.
	conn := c.Nodes[0].Client(t).Conn()
	defer conn.Close()
	if err := conn.Set(ctx, key, "v2", 0).Err(); err != nil {
		t.Fatalf("SET %s v2 on node 0 = %v", key, err)
	}
	if n, err := conn.Wait(ctx, 1, 5*time.Second).Result(); err != nil || n != 1 {
		t.Fatalf("WAIT 1 on node 0 = %d, %v; want 1, nil", n, err)
	}

	old, promoted := c.Nodes[0], c.Replicas[0]
	start := time.Now()
	if err := c.FailMaster(ctx, 0); err != nil {
		t.Fatalf("FailMaster(0) = %v", err)
	}
	t.Logf("FailMaster(0) took %v", time.Since(start))
	if c.Nodes[0] != promoted || c.Replicas[0] != old {
		t.Fatalf("after FailMaster(0), Nodes[0] = %s and Replicas[0] = %s; want %s and %s",
			c.Nodes[0].Addr, c.Replicas[0].Addr, promoted.Addr, old.Addr)
	}
	if pid := old.PID(); pid != 0 {
		t.Errorf("old master PID = %d; want 0 (killed)", pid)
	}
	if role, err := replicationInfo(ctx, c.Nodes[0].Client(t)); err != nil || role["role"] != "master" {
		t.Errorf("INFO replication on Nodes[0] = role:%s, %v; want role:master, nil", role["role"], err)
	}
	if c.NodeFor(key) != promoted {
		t.Errorf("NodeFor(%q) = %s; want the promoted server %s", key, c.NodeFor(key).Addr, promoted.Addr)
	}

	// The client made before the failover still routes the slot to the
	// killed master: go-redis re-reads CLUSTER SLOTS on MOVED or ASK, or
	// every ClusterStateReloadInterval (60 s), but not when a node refuses
	// connections (redis/go-redis#3979). So ask it to reload, and retry,
	// bounded in time: the reload runs in the background.
	rctx, rcancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer rcancel()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	var tries int
	for {
		tries++
		cc.ReloadState(rctx)
		got, err := cc.Get(rctx, key).Result()
		if err == nil {
			if got != "v2" {
				t.Fatalf("GET %s after failover = %q; want v2 (acknowledged by the replica)", key, got)
			}
			if err = cc.Set(rctx, key, "v3", 0).Err(); err == nil {
				got, err = cc.Get(rctx, key).Result()
				if err == nil && got != "v3" {
					t.Fatalf("GET %s after SET v3 = %q; want v3", key, got)
				}
			}
		}
		if err == nil {
			break
		}
		select {
		case <-rctx.Done():
			t.Fatalf("SET/GET %s through the cluster client after failover: %v (last: %v)", key, rctx.Err(), err)
		case <-tick.C:
		}
	}
	t.Logf("the cluster client served %s again after %d tries", key, tries)
	// A client made now from Options, which names the promoted server,
	// needs no reload.
	fresh := c.Client(t)
	if got, err := fresh.Get(ctx, key).Result(); err != nil || got != "v3" {
		t.Errorf("GET %s through a new cluster client = %q, %v; want v3, nil", key, got, err)
	}
	if got, err := c.Nodes[0].Client(t).Get(ctx, key).Result(); err != nil || got != "v3" {
		t.Errorf("GET %s on the promoted server = %q, %v; want v3, nil", key, got, err)
	}

	// Restarted, the old master keeps its node ID and becomes a replica of
	// the server that took over.
	if err := c.Replicas[0].Restart(); err != nil {
		t.Fatalf("Restart old master = %v", err)
	}
	record(c.Replicas[0])
	if err := c.Replicas[0].WaitReplicaOf(ctx, c.Nodes[0].Addr); err != nil {
		t.Fatalf("old master after Restart: %v", err)
	}
	if id, err := c.Replicas[0].Client(t).Do(ctx, "CLUSTER", "MYID").Text(); err != nil || id != ids[0] {
		t.Errorf("CLUSTER MYID on the restarted old master = %q, %v; want its old ID %s", id, err, ids[0])
	}
	t.Logf("the old master replicated the new one %v after the failover began", time.Since(start))
}
