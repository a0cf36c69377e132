// Package bus carries tiercache's invalidations: the wire Message, Publish,
// and the Subscriber that receives them on a Redis pub/sub channel, reports
// every possible loss as a reset, and tells whether the local tier can be
// trusted (Healthy).
//
// # Wire format
//
// One msgpack map per message, with short field names: "v" the format
// version (WireVersion), "o" the publisher's instance ID ("" for others),
// "ks" the keyspace, "k" the keys (as stored in Redis, without the
// keyspace's prefix), "t" tags, "f" flush, "fl" filled (the keys were
// stored where Redis held nothing: evict nothing, wake the loads waiting on
// them), "kf" keys follow (with "t": the publisher deletes the tagged values
// and names their keys in messages of their own), "g" the keyspace's new
// generation (with "f", after a Clear). A message can only evict. Unknown
// fields are ignored. Garbage is counted and dropped. A message of an
// unknown version or beyond Limits is counted and, because it may have been
// an invalidation this replica cannot read, triggers a reset (OnReset:
// every L1 flushed) rather than being silently dropped. Decoding is bounded
// by Limits.
//
// # Lifecycle
//
// NewSubscriber starts nothing. Start subscribes and returns once Redis has
// confirmed the subscription and the first OnReset has run. Stop closes the
// connection and waits for the goroutines: the read loop (owns the
// connection, never blocks: it queues decoded messages without waiting and
// drops them when the queue is full), the dispatcher (calls Handler and
// OnReset, and applies proofs, in queue order), the pinger (PINGs the
// connection on a fixed cadence, pipelined, and abandons it when the oldest
// PONG is late) and, with FollowMaster, the data-path toucher. go-redis's
// PubSub.Channel is not used: it drops messages after a timeout and hides
// reconnections.
//
// # Consistency
//
// Pub/sub is at-most-once, so the subscriber reports what it may have
// missed instead: every subscription confirmation (the first included) and
// every queue overflow leads to OnReset, in which the cache flushes every
// L1 and voids fills in flight. Healthy is false from the first sign of
// possible loss (receive error, late PONG, overflow, Stop) until an OnReset
// that started after it has returned; an epoch counter, bumped at each sign
// under a mutex, makes a reset that started before a newer sign unable to
// set Healthy. While Healthy is false the cache bypasses L1.
//
// Why an invalidation M of key K published before a reconnection can never
// leave an L1 entry for K alive once Healthy is true again. The writer
// changed K in L2 and published M in one atomic script, so M's PUBLISH
// follows the change. Then either:
//
//  1. M arrived on the old connection. The read loop queued it before it
//     could see that connection fail, and the queue is FIFO, so the
//     dispatcher applies M before the reset queued for the new
//     subscription, hence before Healthy becomes true.
//  2. M was published while this subscriber was not subscribed. Redis runs
//     commands one at a time and delivers to a connection in order, so M's
//     PUBLISH ran before the SUBSCRIBE whose confirmation we read next
//     (had it run after, M would follow the confirmation on the new
//     connection and be delivered). The reset for that confirmation runs
//     after we read it, so the flush happens after K changed: it removes
//     any entry for K, and any fill that starts after it reads the new
//     value (one that started before is voided by OnReset).
//  3. M arrived but was dropped because the queue was full. Healthy became
//     false at the drop, and only a reset requested at the drop or later
//     can set it again; that flush follows M's arrival, hence K's change.
//
// Messages still queued when a reset runs are applied after it; an extra
// eviction is harmless. Without MaxStaleness the one window the bus cannot
// close is between a connection dying silently, or falling behind, and the
// subscriber noticing: at most PingInterval + PingTimeout (a closed or reset
// TCP connection is seen at once).
//
// # Bounded staleness
//
// Options.MaxStaleness closes that window: Healthy then also needs a proof,
// younger than MaxStaleness, that the subscriber has applied everything
// published before the proof's stamp. The pinger reads the clock, then
// writes PING with its number and that stamp T. Redis executes the PING
// after T, so every PUBLISH it executed before T is on the connection ahead
// of the PONG; the read loop queues each message as it reads it and queues
// the PONG as a proof behind them; the dispatcher applies them in order. So
// when the dispatcher applies the proof stamped T, every invalidation
// published before T has been applied (or, after a loss, Healthy is false
// until a reset, which covers it). A reset's flush covers everything
// published before it, so a reset is a proof stamped at its subscription's
// confirmation (which precedes it), or, after an overflow, at its start. On
// a Cluster with classic pub/sub a PONG says nothing of the other masters:
// a probe round does, stamped at its start, since each master delivers its
// broadcasts to the subscription's node in order. With Options.Sharded the
// subscription is one connection per master, each carrying that master's
// messages, and the proof is a PING answered on every one of them
// (sharded.go).
//
// The dispatcher arms a timer for T+MaxStaleness at each proof; when it
// fires with no newer proof, Healthy turns false, and the next proof turns
// it true again (no reset: nothing was lost). So if an invalidation
// published at P has not been applied, every proof applied is stamped
// before P, and Healthy is false from P+MaxStaleness at the latest (plus
// the timer's scheduling delay): a replica serves a replaced value from L1
// for at most MaxStaleness after its invalidation was published, whatever
// stalls (the network, Redis, the read loop, the dispatcher). Readers pay nothing for it: Healthy stays one
// atomic load, flipped by the timer and the dispatcher. The cost is the
// PINGs: one every MaxStaleness/5 (10 a second at 500ms), so that a proof
// renews before it expires while PONGs take under 4/5 of the bound.
package bus
