package tiercache

// EvictLocal evicts key from this replica's L1 only, as an invalidation
// from a peer would. Tests and benchmarks use it to force the L2 path.
func (ks *Keyspace[K, V]) EvictLocal(key K) { ks.l1.Invalidate(key) }
