package redistest

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"
)

func TestSentinelFailover(t *testing.T) {
	t.Parallel()
	record := goneAtCleanup(t)
	s := StartSentinel(t)
	record(s.Master, s.Replica, s.Sentinel)
	// The sentinel demotes the old master about 10 s after the switch.
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()

	fc := s.FailoverClient(t)
	if err := fc.Set(ctx, "k", "v1", 0).Err(); err != nil {
		t.Fatalf("SET k v1 = %v", err)
	}
	if n, err := fc.Wait(ctx, 1, 5*time.Second).Result(); err != nil || n != 1 {
		t.Fatalf("WAIT 1 = %d, %v; want 1, nil", n, err)
	}

	newMaster, err := s.Failover(ctx)
	if err != nil {
		t.Fatalf("Failover = %v", err)
	}
	if newMaster != s.Replica.Addr {
		t.Fatalf("Failover = %s; want the replica's address %s", newMaster, s.Replica.Addr)
	}
	replica := s.Replica.Client(t)
	if got, err := replica.Get(ctx, "k").Result(); err != nil || got != "v1" {
		t.Errorf("GET k on the new master = %q, %v; want %q, nil", got, err, "v1")
	}

	// The old master stayed up; the sentinel turns it into a replica of the
	// new one.
	if err := s.Master.WaitReplicaOf(ctx, newMaster); err != nil {
		t.Fatalf("old master: %v", err)
	}
	role, err := s.Master.Client(t).Do(ctx, "ROLE").Slice()
	if err != nil || len(role) < 3 || role[0] != "slave" || fmt.Sprint(role[2]) != fmt.Sprint(s.Replica.Port) {
		t.Errorf("ROLE on the old master = %v, %v; want [slave 127.0.0.1 %d ...]", role, err, s.Replica.Port)
	}

	// The failover client follows: its write lands on the new master.
	if err := fc.Set(ctx, "k", "v2", 0).Err(); err != nil {
		t.Fatalf("SET k v2 after the failover = %v", err)
	}
	if got, err := fc.Get(ctx, "k").Result(); err != nil || got != "v2" {
		t.Errorf("GET k through the failover client = %q, %v; want %q, nil", got, err, "v2")
	}
	if got, err := replica.Get(ctx, "k").Result(); err != nil || got != "v2" {
		t.Errorf("GET k on the new master = %q, %v; want %q, nil", got, err, "v2")
	}
}

func TestNewSentinelMissingBinaryNamesInstallCommand(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	if _, err := NewSentinel(); !errors.Is(err, ErrNotInstalled) {
		t.Fatalf("NewSentinel without redis-server = %v; want ErrNotInstalled", err)
	}
}
