package redistest

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// A cut connection neither delivers nor fails; a heal delivers what was
// held; other connections through the proxy are untouched.
func TestProxyCutAndHeal(t *testing.T) {
	srv := Start(t)
	p := StartProxy(t, srv.Addr)
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()

	o := srv.Options()
	o.Addr = p.Addr
	o.PoolSize = 1
	o.ReadTimeout = 200 * time.Millisecond
	o.MaxRetries = -1
	cut := redis.NewClient(o)
	defer cut.Close()
	other := redis.NewClient(o)
	defer other.Close()
	if err := cut.Ping(ctx).Err(); err != nil {
		t.Fatalf("PING through the proxy: %v", err)
	}
	if err := other.Ping(ctx).Err(); err != nil {
		t.Fatalf("PING through the proxy: %v", err)
	}
	// Find cut's connection as the server sees it.
	if err := cut.Do(ctx, "CLIENT", "SETNAME", "to-cut").Err(); err != nil {
		t.Fatal(err)
	}
	list, err := srv.Client(t).ClientList(ctx).Result()
	if err != nil {
		t.Fatal(err)
	}
	addr := clientAddr(list, "to-cut")
	if addr == "" {
		t.Fatalf("no client named to-cut in CLIENT LIST:\n%s", list)
	}
	if n := p.Cut(func(a string) bool { return a == addr }); n != 1 {
		t.Fatalf("Cut matched %d connections; want 1", n)
	}
	// The SET reaches the proxy but not the server: the read times out and
	// the value is not there.
	if err := cut.Set(ctx, "k", "v", 0).Err(); err == nil {
		t.Errorf("SET over a cut connection succeeded")
	}
	if err := other.Ping(ctx).Err(); err != nil {
		t.Errorf("PING over another connection during the cut: %v", err)
	}
	if n, err := srv.Client(t).Exists(ctx, "k").Result(); err != nil || n != 0 {
		t.Errorf("EXISTS k during the cut = %d, %v; want 0", n, err)
	}
	p.Heal()
	if err := cut.Ping(ctx).Err(); err != nil {
		t.Errorf("PING after the heal: %v", err)
	}
}

// clientAddr returns the addr= of the client named name in a CLIENT LIST.
func clientAddr(list, name string) string {
	for line := range strings.Lines(list) {
		fields := strings.Fields(line)
		if slices.Contains(fields, "name="+name) {
			for _, f := range fields {
				if a, ok := strings.CutPrefix(f, "addr="); ok {
					return a
				}
			}
		}
	}
	return ""
}
