package redistest

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
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
			if got, err := cc.ClusterKeySlot(ctx, tt.give).Result(); err != nil || got != int64(keySlot(tt.give)) {
				t.Errorf("CLUSTER KEYSLOT %q = %d, %v; want %d, nil", tt.give, got, err, keySlot(tt.give))
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
		if k := "k" + strconv.Itoa(i); keySlot(k) == slot {
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
}
