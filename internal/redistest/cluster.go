package redistest

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// clusterSlots is the number of hash slots of a Redis Cluster.
const clusterSlots = 16384

// clusterMasters is how many masters NewCluster starts.
const clusterMasters = 3

// clusterNodeTimeout is cluster-node-timeout in milliseconds. A master
// reports cluster_state:ok no sooner than 2 s after it started (a delay fixed
// in Redis), and a master that saw itself in a minority while the nodes met
// waits up to this long more: NewCluster takes 2 to 4 s. Much lower would
// risk a node being marked as failing on a machine loaded by -race tests.
const clusterNodeTimeout = "2000"

// setupTimeout bounds how long NewCluster and NewSentinel wait for the
// servers they started to agree on their roles.
const setupTimeout = 20 * time.Second

// Cluster is a Redis Cluster of 3 masters (no replicas) on loopback, every
// node announcing 127.0.0.1. Nodes[i] starts with the i-th of three equal
// slot ranges; its slots move only when a test moves them (MoveSlot,
// Reshard).
type Cluster struct {
	// Nodes are the masters in the order of their first slots: Nodes[0]
	// starts with slots 0-5460, Nodes[1] 5461-10921 and Nodes[2]
	// 10922-16383.
	Nodes []*Server

	first    []int // first[i] is the first slot Nodes[i] started with
	busPorts []int // busPorts[i] is the cluster bus port of Nodes[i]

	mu    sync.Mutex
	moved map[int]int // slot -> index in Nodes, for slots moved since the start
}

// NewCluster starts three cluster-enabled redis-server processes, gives each
// a third of the slots, joins them, and returns once every node reports
// cluster_state:ok and knows all three nodes (waiting at most 20 s). Each node
// keeps its cluster config file in its own dir. The caller must call Stop.
func NewCluster() (*Cluster, error) {
	if _, err := Binary(); err != nil {
		return nil, err
	}
	c := &Cluster{}
	for i := range clusterMasters {
		var bus int // the bus port of the attempt that started
		s, err := newServer(spec{prepare: func(s *Server) ([]string, error) {
			nodes := filepath.Join(s.dir, "nodes.conf")
			// A failed attempt may have left its node identity behind.
			if err := removeIfExists(nodes); err != nil {
				return nil, err
			}
			p, err := freePortOtherThan(s.Port)
			if err != nil {
				return nil, err
			}
			bus = p
			return []string{
				"--cluster-enabled", "yes",
				"--cluster-config-file", nodes,
				"--cluster-node-timeout", clusterNodeTimeout,
				"--cluster-port", strconv.Itoa(bus),
				"--cluster-announce-ip", "127.0.0.1",
			}, nil
		}})
		if err != nil {
			c.Stop()
			return nil, fmt.Errorf("redistest: cluster node %d: %w", i, err)
		}
		c.Nodes = append(c.Nodes, s)
		c.first = append(c.first, i*clusterSlots/clusterMasters)
		c.busPorts = append(c.busPorts, bus)
	}
	ctx, cancel := context.WithTimeout(context.Background(), setupTimeout)
	defer cancel()
	if err := c.join(ctx); err != nil {
		return nil, errors.Join(err, c.Stop())
	}
	return c, nil
}

// join assigns the slots, introduces the nodes to each other and waits until
// all of them see a healthy cluster of every node.
func (c *Cluster) join(ctx context.Context) error {
	clients := make([]*redis.Client, len(c.Nodes))
	for i, n := range c.Nodes {
		clients[i] = redis.NewClient(n.Options())
		defer clients[i].Close()
	}
	for i, cl := range clients {
		lo, hi := c.slotRange(i)
		if err := cl.Do(ctx, "CLUSTER", "ADDSLOTSRANGE", lo, hi).Err(); err != nil {
			return fmt.Errorf("redistest: cluster addslotsrange %d %d on %s: %w", lo, hi, c.Nodes[i].Addr, err)
		}
	}
	for i := 1; i < len(c.Nodes); i++ {
		if err := clients[0].Do(ctx, "CLUSTER", "MEET", "127.0.0.1", c.Nodes[i].Port, c.busPorts[i]).Err(); err != nil {
			return fmt.Errorf("redistest: cluster meet %s: %w", c.Nodes[i].Addr, err)
		}
	}
	want := strconv.Itoa(len(c.Nodes))
	return waitUntil(ctx, "cluster_state:ok on every node", func(ctx context.Context) error {
		for i, cl := range clients {
			info, err := cl.ClusterInfo(ctx).Result()
			if err != nil {
				return err
			}
			f := parseInfo(info)
			if f["cluster_state"] != "ok" || f["cluster_known_nodes"] != want {
				return fmt.Errorf("%s: cluster_state:%s cluster_known_nodes:%s",
					c.Nodes[i].Addr, f["cluster_state"], f["cluster_known_nodes"])
			}
		}
		return nil
	})
}

// slotRange returns the first and last slot served by Nodes[i].
func (c *Cluster) slotRange(i int) (lo, hi int) {
	lo, hi = c.first[i], clusterSlots-1
	if i+1 < len(c.first) {
		hi = c.first[i+1] - 1
	}
	return lo, hi
}

// StartCluster is NewCluster for tests: it fails tb at once when the cluster
// cannot start and stops every node in tb.Cleanup.
func StartCluster(tb testing.TB) *Cluster {
	tb.Helper()
	c, err := NewCluster()
	return started(tb, c, err, "cluster")
}

// Addrs returns the host:port of every node, in the order of Nodes.
func (c *Cluster) Addrs() []string {
	addrs := make([]string, len(c.Nodes))
	for i, n := range c.Nodes {
		addrs[i] = n.Addr
	}
	return addrs
}

// Options returns go-redis cluster options that reach c.
func (c *Cluster) Options() *redis.ClusterOptions {
	return &redis.ClusterOptions{Addrs: c.Addrs()}
}

// Client returns a go-redis cluster client for c that is closed in
// tb.Cleanup.
func (c *Cluster) Client(tb testing.TB) *redis.ClusterClient {
	tb.Helper()
	cc := redis.NewClusterClient(c.Options())
	tb.Cleanup(func() { cc.Close() })
	return cc
}

// NodeFor returns the node that serves key's hash slot, computed as Redis
// does (CRC16 of the key, or of its {hash tag}, modulo 16384).
func (c *Cluster) NodeFor(key string) *Server {
	return c.Nodes[c.owner(keySlot(key))]
}

// owner returns the index in Nodes of the node that serves slot.
func (c *Cluster) owner(slot int) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	if i, ok := c.moved[slot]; ok {
		return i
	}
	i := len(c.first) - 1
	for i > 0 && slot < c.first[i] {
		i--
	}
	return i
}

// Stop stops every node by PID, waits for them and removes their dirs. It is
// safe to call more than once.
func (c *Cluster) Stop() error {
	var errs []error
	for _, n := range c.Nodes {
		errs = append(errs, n.Stop())
	}
	return errors.Join(errs...)
}

// keySlot returns the cluster hash slot of key: CRC16 (XMODEM) of the key,
// or of the part between the first '{' and the next '}' when that part is
// not empty, modulo 16384.
func keySlot(key string) int {
	if i := strings.IndexByte(key, '{'); i >= 0 {
		if j := strings.IndexByte(key[i+1:], '}'); j > 0 {
			key = key[i+1 : i+1+j]
		}
	}
	return int(crc16(key)) % clusterSlots
}

// crc16 is CRC-16/XMODEM (polynomial 0x1021, initial value 0), the checksum
// Redis Cluster hashes keys with.
func crc16(s string) uint16 {
	var crc uint16
	for i := 0; i < len(s); i++ {
		crc ^= uint16(s[i]) << 8
		for range 8 {
			if crc&0x8000 != 0 {
				crc = crc<<1 ^ 0x1021
			} else {
				crc <<= 1
			}
		}
	}
	return crc
}

// KeySlot returns the hash slot of key, computed as Redis does.
func KeySlot(key string) int { return keySlot(key) }

// nodeIDs returns the cluster node ID of every node, in the order of Nodes.
func (c *Cluster) nodeIDs(ctx context.Context, clients []*redis.Client) ([]string, error) {
	ids := make([]string, len(clients))
	for i, cl := range clients {
		id, err := cl.Do(ctx, "CLUSTER", "MYID").Text()
		if err != nil {
			return nil, fmt.Errorf("redistest: cluster myid on %s: %w", c.Nodes[i].Addr, err)
		}
		ids[i] = id
	}
	return ids, nil
}

// MoveSlot moves slot, with its keys, from the node that serves it to
// Nodes[to], with the steps redis-cli --cluster reshard takes for each slot:
// IMPORTING on the target, MIGRATING on the source, MIGRATE of its keys in
// batches of 100, then SETSLOT NODE on the target, the source and the other
// nodes. Keys written meanwhile follow ASK redirections. It returns once every
// node names the new owner.
func (c *Cluster) MoveSlot(ctx context.Context, slot, to int) error {
	clients := make([]*redis.Client, len(c.Nodes))
	for i, n := range c.Nodes {
		clients[i] = redis.NewClient(n.Options())
		defer clients[i].Close()
	}
	ids, err := c.nodeIDs(ctx, clients)
	if err != nil {
		return err
	}
	from := c.owner(slot)
	if from == to {
		return nil
	}
	src, dst := clients[from], clients[to]
	steps := []struct {
		cl   *redis.Client
		args []any
	}{
		{dst, []any{"CLUSTER", "SETSLOT", slot, "IMPORTING", ids[from]}},
		{src, []any{"CLUSTER", "SETSLOT", slot, "MIGRATING", ids[to]}},
	}
	for _, st := range steps {
		if err := st.cl.Do(ctx, st.args...).Err(); err != nil {
			return fmt.Errorf("redistest: move slot %d: %v: %w", slot, st.args, err)
		}
	}
	for {
		keys, err := src.ClusterGetKeysInSlot(ctx, slot, 100).Result()
		if err != nil {
			return fmt.Errorf("redistest: move slot %d: getkeysinslot: %w", slot, err)
		}
		if len(keys) == 0 {
			break
		}
		args := []any{"MIGRATE", "127.0.0.1", c.Nodes[to].Port, "", 0, 5000, "REPLACE", "KEYS"}
		for _, k := range keys {
			args = append(args, k)
		}
		if err := src.Do(ctx, args...).Err(); err != nil {
			return fmt.Errorf("redistest: move slot %d: migrate: %w", slot, err)
		}
	}
	order := []int{to, from}
	for i := range c.Nodes {
		if i != to && i != from {
			order = append(order, i)
		}
	}
	for _, i := range order {
		if err := clients[i].Do(ctx, "CLUSTER", "SETSLOT", slot, "NODE", ids[to]).Err(); err != nil {
			return fmt.Errorf("redistest: move slot %d: setslot node on %s: %w", slot, c.Nodes[i].Addr, err)
		}
	}
	c.mu.Lock()
	if c.moved == nil {
		c.moved = make(map[int]int)
	}
	c.moved[slot] = to
	c.mu.Unlock()
	return c.waitOwner(ctx, clients, slot, to)
}

// waitOwner waits until every node's CLUSTER SLOTS names Nodes[to] as the
// owner of slot.
func (c *Cluster) waitOwner(ctx context.Context, clients []*redis.Client, slot, to int) error {
	want := c.Nodes[to].Port
	return waitUntil(ctx, fmt.Sprintf("every node to see slot %d on %s", slot, c.Nodes[to].Addr), func(ctx context.Context) error {
		for i, cl := range clients {
			ranges, err := cl.ClusterSlots(ctx).Result()
			if err != nil {
				return err
			}
			ok := false
			for _, r := range ranges {
				if slot >= r.Start && slot <= r.End && len(r.Nodes) > 0 && strings.HasSuffix(r.Nodes[0].Addr, ":"+strconv.Itoa(want)) {
					ok = true
				}
			}
			if !ok {
				return fmt.Errorf("%s does not see slot %d on %s yet", c.Nodes[i].Addr, slot, c.Nodes[to].Addr)
			}
		}
		return nil
	})
}

// Reshard runs redis-cli --cluster reshard to move n slots from Nodes[from]
// to Nodes[to], with their keys, as an operator would; it then records the
// new owners from CLUSTER SLOTS. redis-cli comes with redis-server.
func (c *Cluster) Reshard(ctx context.Context, from, to, n int) error {
	cli, err := exec.LookPath("redis-cli")
	if err != nil {
		return fmt.Errorf("redistest: redis-cli not found (install it with: %s): %w", InstallHint, err)
	}
	clients := make([]*redis.Client, len(c.Nodes))
	for i, nd := range c.Nodes {
		clients[i] = redis.NewClient(nd.Options())
		defer clients[i].Close()
	}
	ids, err := c.nodeIDs(ctx, clients)
	if err != nil {
		return err
	}
	cmd := exec.CommandContext(ctx, cli, "--cluster", "reshard", c.Nodes[from].Addr,
		"--cluster-from", ids[from], "--cluster-to", ids[to],
		"--cluster-slots", strconv.Itoa(n), "--cluster-yes")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("redistest: redis-cli --cluster reshard: %w\n%s", err, out)
	}
	ranges, err := clients[to].ClusterSlots(ctx).Result()
	if err != nil {
		return fmt.Errorf("redistest: cluster slots after reshard: %w", err)
	}
	c.mu.Lock()
	if c.moved == nil {
		c.moved = make(map[int]int)
	}
	for _, r := range ranges {
		for i, nd := range c.Nodes {
			if len(r.Nodes) > 0 && r.Nodes[0].Addr == nd.Addr {
				for sl := int(r.Start); sl <= int(r.End); sl++ {
					c.moved[sl] = i
				}
			}
		}
	}
	c.mu.Unlock()
	return nil
}
