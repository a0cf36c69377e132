package l2

import (
	"github.com/redis/go-redis/v9"

	"github.com/tiercache/tiercache/internal/slots"
)

// slotCount is the number of hash slots of a Redis Cluster.
const slotCount = slots.Count

// slot returns the Redis Cluster hash slot of key.
func slot(key string) int { return slots.Of(key) }

// SlotGroups splits keys into the groups that one script may touch together:
// on a *redis.ClusterClient one group per hash slot, in order of first
// appearance and with keys in their given order; on any other client a single
// group holding keys. A caller runs one DeleteAndPublish per group, each
// atomic on its own.
func SlotGroups(c Client, keys []string) [][]string {
	if _, ok := c.(*redis.ClusterClient); !ok || len(keys) < 2 {
		return [][]string{keys}
	}
	index := make(map[int]int) // slot -> index in groups
	var groups [][]string
	for _, k := range keys {
		s := slot(k)
		i, ok := index[s]
		if !ok {
			i = len(groups)
			index[s] = i
			groups = append(groups, nil)
		}
		groups[i] = append(groups[i], k)
	}
	return groups
}

// Slot returns the hash slot of key on a *redis.ClusterClient, and 0 on any
// other client: keys with the same Slot may share one script.
func Slot(c Client, key string) int {
	if _, ok := c.(*redis.ClusterClient); !ok {
		return 0
	}
	return slot(key)
}
