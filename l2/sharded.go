package l2

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"

	"github.com/redis/go-redis/v9"

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

// askMark is put in the context of a publishing script's call by runPub;
// the ASK detector of the Cluster's node clients sets it when the call was
// redirected to an importing master.
type askMark struct{ asked atomic.Bool }

type askMarkKey struct{}

// askDetector is the hook runPub puts on every node client of a Cluster
// client: go-redis follows an ASK redirection by sending ASKING and the
// command in one pipeline to the importing master's node client.
type askDetector struct{}

func (askDetector) DialHook(next redis.DialHook) redis.DialHook          { return next }
func (askDetector) ProcessHook(next redis.ProcessHook) redis.ProcessHook { return next }
func (askDetector) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		if len(cmds) > 1 && cmds[0].Name() == "asking" {
			if m, ok := ctx.Value(askMarkKey{}).(*askMark); ok {
				m.asked.Store(true)
			}
		}
		return next(ctx, cmds)
	}
}

// HookNode puts the ASK detector that keeps sharded invalidations on a
// migrating slot heard (see runPub) on node, a master's client of the
// Cluster client, once. New puts it on every node client the Cluster client
// makes after it; the caller passes those made before (a redirection goes
// to a master). Without Options.Sharded it does nothing.
func (s *Store) HookNode(node *redis.Client) {
	if !s.usable() || !s.sharded {
		return
	}
	if _, dup := s.hooked.LoadOrStore(node, struct{}{}); !dup {
		node.AddHook(askDetector{})
	}
}

// runPub is run for a script that publishes msg on channel (the channel
// pubChannel gave). On a Cluster with Options.Sharded, a script that Redis
// redirects with ASK (its slot is migrating and its keys are on the
// importing master) publishes there, where no subscriber listens: replicas
// listen for the slot on its owner until the migration ends. runPub marks
// the call's context, the ASK detector on the node clients (HookNode)
// notes the redirection, and runPub then SPUBLISHes msg again on channel
// through the client, which sends it to the slot's owner (see republished);
// a nil msg leaves that to the caller, which learns of it from the second
// result.
func (s *Store) runPub(ctx context.Context, sc *redis.Script, channel string, msg []byte, keys []string, args ...any) (*redis.Cmd, bool) {
	cc, ok := s.c.(*redis.ClusterClient)
	first := keys[0]
	keys = s.withLog(keys)
	if !s.sharded || !ok {
		return s.run(ctx, sc, keys, args...), false
	}
	mark := new(askMark)
	cmd := s.run(context.WithValue(ctx, askMarkKey{}, mark), sc, keys, args...)
	if !mark.asked.Load() || cmd.Err() != nil {
		return cmd, false
	}
	if msg != nil {
		if err := cc.SPublish(ctx, channel, s.republished(first, msg)).Err(); err != nil {
			cmd.SetErr(fmt.Errorf("publish again on the migrating slot's owner: %w", err))
		}
	}
	return cmd, true
}
