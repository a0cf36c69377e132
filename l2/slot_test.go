package l2

import (
	"fmt"
	"reflect"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/tiercache/tiercache/internal/redistest"
)

func TestSlotKnownValues(t *testing.T) {
	t.Parallel()
	// From the Redis cluster specification and CLUSTER KEYSLOT documentation.
	tests := []struct {
		give string
		want int
	}{
		{give: "123456789", want: 0x31C3},
		{give: "somekey", want: 11058},
		{give: "foo{hash_tag}", want: 2515},
		{give: "bar{hash_tag}", want: 2515},
		{give: "{user1000}.following", want: slot("user1000")},
		{give: "foo{}{bar}", want: slot("foo{}{bar}")}, // empty tag: the whole key
		{give: "foo{{bar}}zap", want: slot("{bar")},
		{give: "foo{bar}{zap}", want: slot("bar")},
	}
	for _, tt := range tests {
		t.Run(tt.give, func(t *testing.T) {
			if got := slot(tt.give); got != tt.want {
				t.Errorf("slot(%q) = %d; want %d", tt.give, got, tt.want)
			}
		})
	}
}

// TestSlotMatchesServer compares slot with CLUSTER KEYSLOT of a real
// cluster-mode redis-server (no slots assigned: KEYSLOT does not need them).
func TestSlotMatchesServer(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t, "--cluster-enabled", "yes")
	c := srv.Client(t)
	keys := []string{"", "{", "}", "{}", "{a", "a}", "}{a}", "x{}y{z}", "ü{ñ}", "\x00{\x00}\xff", "tc:users:42"}
	for i := range 2000 {
		keys = append(keys, fmt.Sprintf("tc:ks%d:{%d}:%d", i%7, i%13, i), fmt.Sprintf("key:%d", i))
	}
	cmds, err := c.Pipelined(t.Context(), func(p redis.Pipeliner) error {
		for _, k := range keys {
			p.ClusterKeySlot(t.Context(), k)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("CLUSTER KEYSLOT: %v", err)
	}
	for i, cmd := range cmds {
		if got, want := slot(keys[i]), int(cmd.(*redis.IntCmd).Val()); got != want {
			t.Errorf("slot(%q) = %d; want %d (CLUSTER KEYSLOT)", keys[i], got, want)
		}
	}
}

func TestSlotGroups(t *testing.T) {
	standalone := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"}) // never dialled
	cluster := redis.NewClusterClient(&redis.ClusterOptions{Addrs: []string{"127.0.0.1:1"}})
	t.Cleanup(func() { standalone.Close(); cluster.Close() })
	keys := []string{"a", "{user:1}:x", "b", "{user:1}:y", "a2"}
	tests := []struct {
		give string
		c    Client
		want [][]string
	}{
		{"standalone keeps one group", standalone, [][]string{keys}},
		{"cluster groups by slot", cluster, [][]string{{"a"}, {"{user:1}:x", "{user:1}:y"}, {"b"}, {"a2"}}},
	}
	for _, tt := range tests {
		t.Run(tt.give, func(t *testing.T) {
			if got := SlotGroups(tt.c, keys); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("SlotGroups = %q; want %q", got, tt.want)
			}
		})
	}
}
