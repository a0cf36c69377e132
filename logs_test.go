package tiercache_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/tiercache/tiercache"
	"github.com/tiercache/tiercache/internal/redistest"
)

// TestLogsCorruptValuesOnceAtWarn: twenty corrupt values read in a row log
// one warning, not twenty; the rest go to debug and every one is counted.
func TestLogsCorruptValuesOnceAtWarn(t *testing.T) {
	srv := redistest.Start(t)
	logs, logger := newLogger()
	r := newReplica(t, srv, tiercache.Config{Namespace: "c"}, tiercache.WithLogger(logger))
	ks, _ := tiercache.NewKeyspace[string, string](r.c, "ks", tiercache.KeyspaceConfig{})
	ctx := context.Background()
	const n = 20
	for i := range n {
		key := fmt.Sprintf("bad%d", i)
		if err := r.client.Set(ctx, "c:ks:"+key, []byte{0x20, 0xc1}, 0).Err(); err != nil {
			t.Fatal(err)
		}
		if _, err := ks.Get(ctx, key); !errors.Is(err, tiercache.ErrNotFound) {
			t.Fatalf("Get(%s) = %v; want ErrNotFound", key, err)
		}
	}
	if got := logs.countLevel("WARN", "tiercache: corrupt value deleted"); got != 1 {
		t.Errorf("warnings for %d corrupt values = %d; want 1", n, got)
	}
	if got := logs.countLevel("DEBUG", "tiercache: corrupt value deleted"); got != n-1 {
		t.Errorf("debug lines for the later corrupt values = %d; want %d", got, n-1)
	}
	if got := ks.Stats().Corrupt; got != n {
		t.Errorf("Corrupt = %d; want %d", got, n)
	}
}

// TestLogsPresenceFailureOncePerChange: heartbeats that keep failing while
// Redis is down log one warning, and the first one that succeeds after it
// comes back logs one info line.
func TestLogsPresenceFailureOncePerChange(t *testing.T) {
	srv := redistest.Start(t)
	logs, logger := newLogger()
	beats := make(chan error, 64)
	newReplica(t, srv, tiercache.Config{HeartbeatInterval: 5 * time.Millisecond, WriteTimeout: 50 * time.Millisecond},
		tiercache.WithLogger(logger), tiercache.WithBeatHook(func(err error) {
			select {
			case beats <- err:
			default: // the test reads what it needs; later beats may go unseen
			}
		}))
	srv.Kill()
	awaitBeats(t, beats, 3, func(err error) bool { return err != nil })
	if err := srv.Restart(); err != nil {
		t.Fatal(err)
	}
	awaitBeats(t, beats, 1, func(err error) bool { return err == nil })
	if got := logs.countLevel("WARN", "tiercache: presence heartbeat failing"); got != 1 {
		t.Errorf("warnings for failed heartbeats = %d; want 1", got)
	}
	if got := logs.countLevel("INFO", "tiercache: presence heartbeat written again"); got != 1 {
		t.Errorf("info lines for the recovery = %d; want 1", got)
	}
}

// awaitBeats waits until n heartbeats for which ok is true were reported.
func awaitBeats(t *testing.T, beats <-chan error, n int, ok func(error) bool) {
	t.Helper()
	timer := time.NewTimer(waitTimeout)
	defer timer.Stop()
	for seen := 0; seen < n; {
		select {
		case err := <-beats:
			if ok(err) {
				seen++
			}
		case <-timer.C:
			t.Fatalf("%d matching heartbeats within %v; want %d", seen, waitTimeout, n)
		}
	}
}
