// Package slots computes Redis Cluster hash slots and names, for every slot,
// a short hash tag and a sharded pub/sub channel in it. l2 and bus share it,
// so that a writer's SPUBLISH and a subscriber's SSUBSCRIBE name the same
// channel for the same slot.
package slots

import (
	"strings"
	"sync"
)

// Count is the number of hash slots of a Redis Cluster.
const Count = 16384

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

// Of returns the Redis Cluster hash slot of key: CRC16 (XMODEM) of its hash
// tag (the part between the first '{' and the next '}' when not empty) or
// of the whole key, modulo 16384.
func Of(key string) int {
	if i := strings.IndexByte(key, '{'); i >= 0 {
		if j := strings.IndexByte(key[i+1:], '}'); j > 0 {
			key = key[i+1 : i+1+j]
		}
	}
	var crc uint16
	for k := 0; k < len(key); k++ {
		crc = crc<<8 ^ crcTable[byte(crc>>8)^key[k]]
	}
	return int(crc) % Count
}

// Tags returns, for every hash slot, a short string of letters and digits
// whose slot it is. The table is computed once (about 300,000 CRC16 of at
// most four bytes) and never changes; callers must not modify it.
var Tags = sync.OnceValue(func() []string {
	const alphabet = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
	tags := make([]string, Count)
	left := Count
	buf := make([]byte, 0, 4)
	var walk func(depth int) bool
	walk = func(depth int) bool {
		if depth == 0 {
			if s := Of(string(buf)); tags[s] == "" {
				tags[s] = string(buf)
				left--
			}
			return left == 0
		}
		for i := range len(alphabet) {
			buf = append(buf, alphabet[i])
			done := walk(depth - 1)
			buf = buf[:len(buf)-1]
			if done {
				return true
			}
		}
		return false
	}
	for n := 1; n <= 4 && !walk(n); n++ {
	}
	return tags
})

// Channel returns the sharded pub/sub channel of slot for the base channel
// name: base followed by the slot's tag in braces, so that its slot is slot
// whatever base holds, provided base has no '{'.
func Channel(base string, slot int) string {
	return base + "{" + Tags()[slot] + "}"
}

// Channels returns the sharded channels of every slot for base, indexed by
// slot.
func Channels(base string) []string {
	out := make([]string, Count)
	for s := range out {
		out[s] = Channel(base, s)
	}
	return out
}
