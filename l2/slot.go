package l2

import (
	"strings"

	"github.com/redis/go-redis/v9"
)

// slotCount is the number of hash slots of a Redis Cluster.
const slotCount = 16384

// crcTable is CRC16 (XMODEM, polynomial 0x1021) of every byte: one lookup
// per byte of a key rather than eight shifts.
var crcTable = func() (t [256]uint16) {
	for i := range t {
		crc := uint16(i) << 8
		for range 8 {
			if crc&0x8000 != 0 {
				crc = crc<<1 ^ 0x1021
			} else {
				crc <<= 1
			}
		}
		t[i] = crc
	}
	return t
}()

// slot returns the Redis Cluster hash slot of key: CRC16 (XMODEM) of its
// hash tag (the part between the first '{' and the next '}' when not empty)
// or of the whole key, modulo 16384.
func slot(key string) int {
	if i := strings.IndexByte(key, '{'); i >= 0 {
		if j := strings.IndexByte(key[i+1:], '}'); j > 0 {
			key = key[i+1 : i+1+j]
		}
	}
	var crc uint16
	for k := 0; k < len(key); k++ {
		crc = crc<<8 ^ crcTable[byte(crc>>8)^key[k]]
	}
	return int(crc) % slotCount
}

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
