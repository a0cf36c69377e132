package l2

import (
	"strings"

	"github.com/tiercache/tiercache/internal/slots"
)

// publishing returns src, a script that publishes with PUBLISH, or, when
// sharded, the same script publishing with SPUBLISH (Options.Sharded).
func publishing(src string, sharded bool) string {
	if !sharded {
		return src
	}
	return strings.ReplaceAll(src, "redis.call('PUBLISH',", "redis.call('SPUBLISH',")
}

// pubChannel returns the channel a script whose first key is key publishes
// channel's messages on: channel itself, or with Options.Sharded the sharded
// channel of key's hash slot. An empty channel (nothing to publish) stays
// empty.
func (s *Store) pubChannel(channel, key string) string {
	if !s.sharded || channel == "" {
		return channel
	}
	return slots.Channel(channel, slot(key))
}
