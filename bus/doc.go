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
// "<namespace>:<keyspace>:" prefix), "t" tags, "f" flush, "fl" filled (the
// keys were stored where Redis held nothing: evict nothing, wake the loads
// waiting on them). A message can only evict. Unknown fields are ignored. Garbage is counted and dropped. A
// message of an unknown version or beyond Limits is counted and, because it
// may have been an invalidation this replica cannot read, triggers a reset
// (OnReset: every L1 flushed) rather than being silently dropped. Decoding is
// bounded by Limits.
//
// # Lifecycle
//
// NewSubscriber starts nothing. Start subscribes and returns once Redis has
// confirmed the subscription and the first OnReset has run. Stop closes the
// connection and waits for the three goroutines: the read loop (owns the
// connection, never blocks: it queues decoded messages without waiting and
// drops them when the queue is full), the dispatcher (calls Handler and
// OnReset, in order) and the pinger (PINGs the connection and abandons it
// when a PONG is late). go-redis's PubSub.Channel is not used: it drops
// messages after a timeout and hides reconnections.
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
// eviction is harmless. The one window the bus cannot close is between a
// connection dying silently and the subscriber noticing: at most
// PingInterval + PingTimeout (a closed or reset TCP connection is seen at
// once).
package bus
