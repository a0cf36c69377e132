package redistest

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tiercache/tiercache/internal/slots"
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

// Cluster is a Redis Cluster of 3 masters on loopback, every node announcing
// 127.0.0.1, with one replica per master when NewClusterWithReplicas started
// it. Nodes[i] starts with the i-th of three equal slot ranges; its slots move
// only when a test moves them (MoveSlot, Reshard) or fails Nodes[i] over to
// Replicas[i] (FailMaster), which swaps the two.
//
// The fields are plain: a test must not call FailMaster while another
// goroutine uses c.
type Cluster struct {
	// Nodes are the masters in the order of their first slots: Nodes[0]
	// starts with slots 0-5460, Nodes[1] 5461-10921 and Nodes[2]
	// 10922-16383. After FailMaster(ctx, i), Nodes[i] is the promoted
	// replica, which serves the slots the old Nodes[i] served.
	Nodes []*Server
	// Replicas are nil for NewCluster. For NewClusterWithReplicas,
	// Replicas[i] is the replica of Nodes[i]; after FailMaster(ctx, i),
	// Replicas[i] is the killed old master (see FailMaster).
	Replicas []*Server

	first      []int // first[i] is the first slot Nodes[i] started with
	busPorts   []int // busPorts[i] is the cluster bus port of Nodes[i]
	replicaBus []int // replicaBus[i] is the cluster bus port of Replicas[i]

	mu    sync.Mutex
	moved map[int]int // slot -> index in Nodes, for slots moved since the start
}

// NewCluster starts three cluster-enabled redis-server processes, gives each
// a third of the slots, joins them, and returns once every node reports
// cluster_state:ok, knows all three nodes and has its cluster bus links to
// them connected (waiting at most 20 s). Each node keeps its cluster config
// file in its own dir. The caller must call Stop.
func NewCluster() (*Cluster, error) {
	return newCluster(false)
}

// NewClusterWithReplicas is NewCluster plus one replica per master: it starts
// the three masters as NewCluster does, then three more cluster-enabled nodes,
// and makes Replicas[i] a replica of Nodes[i] (CLUSTER MEET, then CLUSTER
// REPLICATE). It returns once all six nodes report cluster_state:ok, know
// six nodes and have their links to them connected, every replica reports master_link_status:up, and every node's
// CLUSTER NODES names each replica's master (waiting at most 20 s). The
// caller must call Stop.
func NewClusterWithReplicas() (*Cluster, error) {
	return newCluster(true)
}

// StartClusterArgs is StartCluster with extra redis-server arguments for
// every master, for example "--rename-command", "SSUBSCRIBE", "" to make
// a Cluster without sharded pub/sub, as Redis 6 is.
func StartClusterArgs(tb testing.TB, extra ...string) *Cluster {
	tb.Helper()
	c, err := newCluster(false, extra...)
	return started(tb, c, err, "cluster")
}

// StartClusterWithReplicas is NewClusterWithReplicas for tests: it fails tb
// at once when the cluster cannot start and stops every node, replicas
// included, in tb.Cleanup.
func StartClusterWithReplicas(tb testing.TB) *Cluster {
	tb.Helper()
	c, err := NewClusterWithReplicas()
	return started(tb, c, err, "cluster")
}

// newCluster is NewCluster, with a replica per master if replicas is set;
// every node gets the extra arguments.
func newCluster(replicas bool, extra ...string) (*Cluster, error) {
	if _, err := Binary(); err != nil {
		return nil, err
	}
	c := &Cluster{}
	for i := range clusterMasters {
		s, bus, err := newClusterNode(extra...)
		if err != nil {
			return nil, errors.Join(fmt.Errorf("redistest: cluster node %d: %w", i, err), c.Stop())
		}
		c.Nodes = append(c.Nodes, s)
		c.first = append(c.first, i*clusterSlots/clusterMasters)
		c.busPorts = append(c.busPorts, bus)
	}
	for i := range clusterMasters {
		if !replicas {
			break
		}
		s, bus, err := newClusterNode(extra...)
		if err != nil {
			return nil, errors.Join(fmt.Errorf("redistest: cluster replica %d: %w", i, err), c.Stop())
		}
		c.Replicas = append(c.Replicas, s)
		c.replicaBus = append(c.replicaBus, bus)
	}
	ctx, cancel := context.WithTimeout(context.Background(), setupTimeout)
	defer cancel()
	if err := c.join(ctx); err != nil {
		return nil, errors.Join(err, c.Stop())
	}
	return c, nil
}

// newClusterNode starts one cluster-enabled redis-server, with no slots and
// knowing no other node, and returns it with its cluster bus port. Its
// cluster config file, nodes.conf, is in its dir: Server.Restart, which keeps
// the dir, brings the node back with the same node ID, bus port and view of
// the cluster.
//
// Every node streams its snapshot to a new replica at once
// (repl-diskless-sync-delay 0) rather than after the 5 s Redis waits for more
// replicas by default; without replicas that setting changes nothing.
func newClusterNode(extra ...string) (*Server, int, error) {
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
			"--repl-diskless-sync-delay", "0",
		}, nil
	}}, extra...)
	return s, bus, err
}

// all returns the masters, then the replicas, with their bus ports.
func (c *Cluster) all() (nodes []*Server, bus []int) {
	nodes = append(slices.Clone(c.Nodes), c.Replicas...)
	bus = append(slices.Clone(c.busPorts), c.replicaBus...)
	return nodes, bus
}

// join assigns the slots to the masters, introduces every node to Nodes[0],
// makes Replicas[i] (if any) a replica of Nodes[i], and waits until all of
// them see a healthy cluster of every node, with every replica's link up
// and every node knowing every replica as one (CLUSTER NODES).
func (c *Cluster) join(ctx context.Context) error {
	nodes, bus := c.all()
	clients, closeAll := dial(nodes)
	defer closeAll()
	masters, replicas := clients[:len(c.Nodes)], clients[len(c.Nodes):]
	for i, cl := range masters {
		lo, hi := c.slotRange(i)
		if err := cl.Do(ctx, "CLUSTER", "ADDSLOTSRANGE", lo, hi).Err(); err != nil {
			return fmt.Errorf("redistest: cluster addslotsrange %d %d on %s: %w", lo, hi, c.Nodes[i].Addr, err)
		}
	}
	for i := 1; i < len(nodes); i++ {
		if err := clients[0].Do(ctx, "CLUSTER", "MEET", "127.0.0.1", nodes[i].Port, bus[i]).Err(); err != nil {
			return fmt.Errorf("redistest: cluster meet %s: %w", nodes[i].Addr, err)
		}
	}
	var ids, replicaIDs []string // node IDs of Nodes and Replicas
	if len(replicas) > 0 {
		var err error
		if ids, err = nodeIDs(ctx, c.Nodes, masters); err != nil {
			return err
		}
		if replicaIDs, err = nodeIDs(ctx, c.Replicas, replicas); err != nil {
			return err
		}
		for i, cl := range replicas {
			// A replica learns of its master by gossip from Nodes[0], after
			// a handshake; until then it answers "Unknown node".
			what := fmt.Sprintf("%s to accept CLUSTER REPLICATE of %s", c.Replicas[i].Addr, c.Nodes[i].Addr)
			var fatal error // an answer that retrying cannot change
			err := waitUntil(ctx, what, func(ctx context.Context) error {
				err := cl.Do(ctx, "CLUSTER", "REPLICATE", ids[i]).Err()
				if err != nil && !strings.Contains(err.Error(), "Unknown node") {
					fatal = fmt.Errorf("redistest: cluster replicate %s on %s: %w", c.Nodes[i].Addr, c.Replicas[i].Addr, err)
					return nil
				}
				return err
			})
			if err := cmp.Or(err, fatal); err != nil {
				return err
			}
		}
	}
	want := strconv.Itoa(len(nodes))
	return waitUntil(ctx, "cluster_state:ok on every node", func(ctx context.Context) error {
		for i, cl := range clients {
			if err := cmp.Or(clusterOK(ctx, cl, want), linksUp(ctx, cl)); err != nil {
				return fmt.Errorf("%s: %w", nodes[i].Addr, err)
			}
		}
		for i, cl := range replicas {
			if err := replicating(ctx, cl, c.Nodes[i]); err != nil {
				return fmt.Errorf("%s: %w", c.Replicas[i].Addr, err)
			}
		}
		if len(replicas) == 0 {
			return nil
		}
		// A replica's link may be up before gossip has told every other
		// node that it turned from a master into a replica.
		for i, cl := range clients {
			seen, err := replicasSeen(ctx, cl)
			if err != nil {
				return err
			}
			for j, id := range replicaIDs {
				if seen[id] != ids[j] {
					return fmt.Errorf("%s does not see %s as a replica of %s yet", nodes[i].Addr, c.Replicas[j].Addr, c.Nodes[j].Addr)
				}
			}
		}
		return nil
	})
}

// clusterOK checks that the node cl reaches reports cluster_state:ok and, if
// known is not "", that it knows that many nodes (cluster_known_nodes).
func clusterOK(ctx context.Context, cl *redis.Client, known string) error {
	info, err := cl.ClusterInfo(ctx).Result()
	if err != nil {
		return err
	}
	f := parseInfo(info)
	if f["cluster_state"] != "ok" || (known != "" && f["cluster_known_nodes"] != known) {
		return fmt.Errorf("cluster_state:%s cluster_known_nodes:%s", f["cluster_state"], f["cluster_known_nodes"])
	}
	return nil
}

// linksUp checks that the node cl reaches has its cluster bus link to every
// node it knows connected, no node still in handshake. A node broadcasts a
// PUBLISH over those links and drops it for a node whose link is down:
// cluster_state:ok comes before the last links, and a test that published
// then would lose messages (the lost-message case tests make on purpose).
func linksUp(ctx context.Context, cl *redis.Client) error {
	nodes, err := cl.ClusterNodes(ctx).Result()
	if err != nil {
		return err
	}
	// Each line: <id> <ip:port@bus> <flags> <master id or -> <ping-sent>
	// <pong-recv> <config-epoch> <link-state> <slots>...
	for line := range strings.Lines(nodes) {
		f := strings.Fields(line)
		if len(f) < 8 {
			return fmt.Errorf("CLUSTER NODES line %q: want at least 8 fields", line)
		}
		flags := strings.Split(f[2], ",")
		if slices.Contains(flags, "handshake") || slices.Contains(flags, "noaddr") || f[7] != "connected" {
			return fmt.Errorf("node %s: flags %s, link %s", f[1], f[2], f[7])
		}
	}
	return nil
}

// replicating checks that the node cl reaches is a replica of master with
// its replication link up, as INFO replication reports it.
func replicating(ctx context.Context, cl *redis.Client, master *Server) error {
	f, err := replicationInfo(ctx, cl)
	if err != nil {
		return err
	}
	if f["role"] != "slave" || f["master_port"] != strconv.Itoa(master.Port) || f["master_link_status"] != "up" {
		return fmt.Errorf("role:%s master_port:%s master_link_status:%s (want a replica of %s)",
			f["role"], f["master_port"], f["master_link_status"], master.Addr)
	}
	return nil
}

// replicationInfo returns the fields of INFO replication on the node cl
// reaches.
func replicationInfo(ctx context.Context, cl *redis.Client) (map[string]string, error) {
	info, err := cl.Info(ctx, "replication").Result()
	if err != nil {
		return nil, err
	}
	return parseInfo(info), nil
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

// Addrs returns the host:port of every master, in the order of Nodes; never
// of the replicas, which go-redis finds itself (CLUSTER SLOTS).
func (c *Cluster) Addrs() []string {
	addrs := make([]string, len(c.Nodes))
	for i, n := range c.Nodes {
		addrs[i] = n.Addr
	}
	return addrs
}

// Options returns go-redis cluster options that reach c: Addrs, the
// masters only.
//
// A client made before FailMaster keeps sending the failed master's slots to
// its dead address: go-redis re-reads CLUSTER SLOTS on a MOVED or ASK reply
// and every ClusterStateReloadInterval (60 s by default), but not when a node
// refuses connections (redis/go-redis#3979). Call its ReloadState after
// FailMaster (the reload runs in the background), or make a new client.
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
	return c.Nodes[c.owner(slots.Of(key))]
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

// Stop stops every node, replicas included, by PID, waits for them and
// removes their dirs. It is safe to call more than once.
func (c *Cluster) Stop() error {
	var errs []error
	nodes, _ := c.all()
	for _, n := range nodes {
		errs = append(errs, n.Stop())
	}
	return errors.Join(errs...)
}

// FailMaster kills master Nodes[i] by PID (SIGKILL, as a crash would) and
// lets Redis Cluster fail it over to its replica, Replicas[i]: it returns
// once Replicas[i] reports role:master and every live node (every other
// server of c still running, the promoted one included) reports
// cluster_state:ok and no longer names the old master as the owner of any
// slot. Redis first waits cluster-node-timeout (2 s) before it flags the
// master as failing, then the replica waits 0.5 to 1 s before it asks the
// other masters for their votes: a failover takes 3 to 5 s. ctx bounds the
// whole wait.
//
// From the moment the nodes flag the old master as failing until the
// replica wins its election (about 1 s), cluster_state is fail on every node,
// and every node answers every key command with CLUSTERDOWN, not only those
// for the old master's slots: Redis requires full slot coverage by default.
//
// When it returns, Nodes[i] and Replicas[i] have traded places: Nodes[i] is
// the promoted server, which serves the slots the old master served (so
// NodeFor and the slot bookkeeping of MoveSlot and Reshard stay right), and
// Replicas[i] is the old master, killed. Nodes[i] then has no replica.
//
// FailMaster does not restart the old master. A test may bring it back with
// Replicas[i].Restart(): it starts again on its port and bus port with an
// empty dataset but with its nodes.conf (kept in its dir), so with its old
// node ID; the other nodes then tell it that a newer config epoch owns its
// slots, and it turns itself into a replica of Nodes[i] and resyncs from it
// in full. Wait for that with Replicas[i].WaitReplicaOf(ctx, Nodes[i].Addr).
// Until it has heard from them, which takes a gossip round trip, it still
// claims its old slots.
//
// FailMaster fails, without killing anything, when c has no replicas, when
// i is out of range, when Nodes[i] is not running or when Replicas[i] does
// not replicate it with its link up (Redis moves the replicas of a master
// that lost all its slots to another master). If it fails after the kill,
// the fields are left as they were. It must not run while another goroutine
// uses c.
func (c *Cluster) FailMaster(ctx context.Context, i int) error {
	if len(c.Replicas) == 0 {
		return errors.New("redistest: fail master: the cluster has no replicas (start it with NewClusterWithReplicas)")
	}
	if i < 0 || i >= len(c.Nodes) {
		return fmt.Errorf("redistest: fail master %d: want 0 to %d", i, len(c.Nodes)-1)
	}
	old, promoted := c.Nodes[i], c.Replicas[i]
	if old.PID() == 0 {
		return fmt.Errorf("redistest: fail master %d: %s is not running", i, old.Addr)
	}
	pc := redis.NewClient(promoted.Options())
	defer pc.Close()
	if err := replicating(ctx, pc, old); err != nil {
		return fmt.Errorf("redistest: fail master %d: replica %s: %w", i, promoted.Addr, err)
	}
	nodes, _ := c.all()
	var live []*Server
	var clients []*redis.Client
	for _, n := range nodes {
		if n != old && n.PID() != 0 {
			cl := redis.NewClient(n.Options())
			defer cl.Close()
			live, clients = append(live, n), append(clients, cl)
		}
	}

	old.Kill()
	what := fmt.Sprintf("%s to take over from the killed master %s", promoted.Addr, old.Addr)
	err := waitUntil(ctx, what, func(ctx context.Context) error {
		f, err := replicationInfo(ctx, pc)
		if err != nil {
			return err
		}
		if f["role"] != "master" {
			return fmt.Errorf("%s: role:%s master_link_status:%s", promoted.Addr, f["role"], f["master_link_status"])
		}
		for j, cl := range clients {
			if err := clusterOK(ctx, cl, ""); err != nil {
				return fmt.Errorf("%s: %w", live[j].Addr, err)
			}
			// A node that has not yet flagged the old master as failing
			// still reports cluster_state:ok.
			ranges, err := cl.ClusterSlots(ctx).Result()
			if err != nil {
				return err
			}
			for _, r := range ranges {
				if len(r.Nodes) > 0 && r.Nodes[0].Addr == old.Addr {
					return fmt.Errorf("%s still sees slots %d-%d on %s", live[j].Addr, r.Start, r.End, old.Addr)
				}
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	c.Nodes[i], c.Replicas[i] = promoted, old
	c.busPorts[i], c.replicaBus[i] = c.replicaBus[i], c.busPorts[i]
	return nil
}

// dial returns a client of each of servers and a func that closes them.
func dial(servers []*Server) ([]*redis.Client, func()) {
	clients := make([]*redis.Client, len(servers))
	for i, s := range servers {
		clients[i] = redis.NewClient(s.Options())
	}
	return clients, func() {
		for _, cl := range clients {
			cl.Close()
		}
	}
}

// setOwner records that Nodes[i] serves slot now.
func (c *Cluster) setOwner(slot, i int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.moved == nil {
		c.moved = make(map[int]int)
	}
	c.moved[slot] = i
}

// nodeIDs returns the cluster node ID of every node, clients[i] reaching
// nodes[i].
func nodeIDs(ctx context.Context, nodes []*Server, clients []*redis.Client) ([]string, error) {
	ids := make([]string, len(clients))
	for i, cl := range clients {
		id, err := cl.Do(ctx, "CLUSTER", "MYID").Text()
		if err != nil {
			return nil, fmt.Errorf("redistest: cluster myid on %s: %w", nodes[i].Addr, err)
		}
		ids[i] = id
	}
	return ids, nil
}

// replicasSeen returns, from CLUSTER NODES on the node cl reaches, the master
// ID of every node it knows as a replica, by the replica's node ID.
func replicasSeen(ctx context.Context, cl *redis.Client) (map[string]string, error) {
	nodes, err := cl.ClusterNodes(ctx).Result()
	if err != nil {
		return nil, err
	}
	// Each line: <id> <ip:port@bus> <flags> <master id or -> ...
	seen := make(map[string]string)
	for line := range strings.Lines(nodes) {
		f := strings.Fields(line)
		if len(f) >= 4 && slices.Contains(strings.Split(f[2], ","), "slave") {
			seen[f[0]] = f[3]
		}
	}
	return seen, nil
}

// MoveSlot moves slot, with its keys, from the node that serves it to
// Nodes[to], with the steps redis-cli --cluster reshard takes for each slot:
// IMPORTING on the target, MIGRATING on the source, MIGRATE of its keys in
// batches of 100, then SETSLOT NODE on the target, the source and the other
// nodes. Keys written meanwhile follow ASK redirections. It returns once every
// node names the new owner.
func (c *Cluster) MoveSlot(ctx context.Context, slot, to int) error {
	clients, closeAll := dial(c.Nodes)
	defer closeAll()
	ids, err := nodeIDs(ctx, c.Nodes, clients)
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
	c.setOwner(slot, to)
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
	clients, closeAll := dial(c.Nodes)
	defer closeAll()
	ids, err := nodeIDs(ctx, c.Nodes, clients)
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
	for _, r := range ranges {
		for i, nd := range c.Nodes {
			if len(r.Nodes) > 0 && r.Nodes[0].Addr == nd.Addr {
				for sl := r.Start; sl <= r.End; sl++ {
					c.setOwner(sl, i)
				}
			}
		}
	}
	return nil
}

// AddMaster starts one more cluster-enabled node, introduces it to the
// cluster (CLUSTER MEET) and returns its index in Nodes once every node
// knows it and reports cluster_state:ok. It serves no slot until a test
// moves some to it (MoveSlot, Reshard). It must not run while another
// goroutine uses c.
func (c *Cluster) AddMaster(ctx context.Context) (int, error) {
	s, bus, err := newClusterNode()
	if err != nil {
		return 0, fmt.Errorf("redistest: added cluster node: %w", err)
	}
	c.Nodes = append(c.Nodes, s)
	c.busPorts = append(c.busPorts, bus)
	i := len(c.Nodes) - 1
	first, closeFirst := dial(c.Nodes[:1])
	defer closeFirst()
	if err := first[0].Do(ctx, "CLUSTER", "MEET", "127.0.0.1", s.Port, bus).Err(); err != nil {
		return 0, fmt.Errorf("redistest: cluster meet %s: %w", s.Addr, err)
	}
	nodes, _ := c.all()
	want := strconv.Itoa(len(nodes))
	clients, closeAll := dial(nodes)
	defer closeAll()
	err = waitUntil(ctx, "every node to know "+s.Addr, func(ctx context.Context) error {
		for j, cl := range clients {
			if err := clusterOK(ctx, cl, want); err != nil {
				return fmt.Errorf("%s: %w", nodes[j].Addr, err)
			}
		}
		return nil
	})
	return i, err
}
