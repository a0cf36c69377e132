package redistest

import (
	"context"
	"errors"
	"strings"
	"syscall"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestStartPingStop(t *testing.T) {
	s, err := New()
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := s.Ping(ctx); err != nil {
		t.Fatalf("Ping = %v; want nil", err)
	}
	pid := s.PID()
	if pid == 0 {
		t.Fatal("PID = 0 for a running server")
	}
	if err := s.Stop(); err != nil {
		t.Fatalf("Stop = %v", err)
	}
	if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Errorf("process %d still exists after Stop (kill 0 = %v)", pid, err)
	}
	if err := s.Ping(ctx); err == nil {
		t.Error("Ping after Stop = nil; want an error")
	}
	if err := s.Stop(); err != nil {
		t.Errorf("second Stop = %v; want nil", err)
	}
}

func TestKillRestartSamePort(t *testing.T) {
	s := Start(t)
	c := s.Client(t)
	ctx := context.Background()
	if err := c.Set(ctx, "k", "v", 0).Err(); err != nil {
		t.Fatal(err)
	}
	addr := s.Addr
	s.Kill()
	if err := s.Restart(); err != nil {
		t.Fatalf("Restart = %v", err)
	}
	if s.Addr != addr {
		t.Errorf("Addr after Restart = %s; want %s", s.Addr, addr)
	}
	// Persistence is off, so the restarted server is empty.
	if n, err := c.Exists(ctx, "k").Result(); err != nil || n != 0 {
		t.Errorf("Exists after restart = %d, %v; want 0, nil", n, err)
	}
}

func TestMissingBinaryNamesInstallCommand(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	_, err := New()
	if !errors.Is(err, ErrNotInstalled) {
		t.Fatalf("New without redis-server = %v; want ErrNotInstalled", err)
	}
	if !strings.Contains(err.Error(), InstallHint) {
		t.Errorf("error %q does not name the install command %q", err, InstallHint)
	}
}
