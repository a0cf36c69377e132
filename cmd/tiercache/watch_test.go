package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/tiercache/tiercache/bus"
	"github.com/tiercache/tiercache/internal/redistest"
)

// TestWatchCLI proves that watch prints the invalidations published after
// it said "subscribed to", decoded (JSON lines, or text), goes on after a
// malformed message, and exits 0 after --count messages, after --for, and
// on SIGINT.
func TestWatchCLI(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	client := newClient(t, srv.Addr)
	a := startReplica(t, client, "replica-a", false)
	ctx := context.Background()

	t.Run("json", func(t *testing.T) {
		w := start(t, "watch", "--count", "3", "--json", "--addr", srv.Addr)
		w.waitLine(t, "subscribed to tiercache:invalidate")
		if err := a.users.Set(ctx, 1, user{ID: 1}); err != nil {
			t.Fatal(err)
		}
		if err := client.Publish(ctx, "tiercache:invalidate", "garbage").Err(); err != nil {
			t.Fatal(err)
		}
		if err := a.products.Set(ctx, "p1", item{ID: 1}); err != nil {
			t.Fatal(err)
		}
		r := w.finish(t)
		r.want(t, exitOK, nil, nil)
		lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
		if len(lines) != 3 {
			t.Fatalf("watch --count 3 printed %d lines; want 3:\n%s", len(lines), r.stdout)
		}
		tests := []struct {
			give string
			want watchLine
		}{
			{lines[0], watchLine{Origin: "replica-a", Keyspace: "users", Keys: []string{"1"}, Tags: []string{}}},
			{lines[1], watchLine{Keys: []string{}, Tags: []string{}, Size: len("garbage"), Error: "bus: malformed"}},
			{lines[2], watchLine{Origin: "replica-a", Keyspace: "products", Keys: []string{"p1"}, Tags: []string{}}},
		}
		for _, tt := range tests {
			var got watchLine
			if err := json.Unmarshal([]byte(tt.give), &got); err != nil {
				t.Fatalf("line %q: %v", tt.give, err)
			}
			if got.Time.IsZero() || got.Size <= 0 {
				t.Errorf("line %q: want a time and a size", tt.give)
			}
			if !strings.HasPrefix(got.Error, tt.want.Error) || (got.Error == "") != (tt.want.Error == "") {
				t.Errorf("line %q: error %q; want one starting %q", tt.give, got.Error, tt.want.Error)
			}
			got.Time, got.Error = tt.want.Time, tt.want.Error
			if tt.want.Size == 0 { // any size
				got.Size = 0
			}
			if g, w := strings.Join(got.Keys, ","), strings.Join(tt.want.Keys, ","); got.Origin != tt.want.Origin ||
				got.Keyspace != tt.want.Keyspace || g != w || len(got.Tags) != 0 || got.Flush || got.Size != tt.want.Size {
				t.Errorf("line %q = %+v; want %+v", tt.give, got, tt.want)
			}
		}
	})

	t.Run("text", func(t *testing.T) {
		w := start(t, "watch", "--addr", srv.Addr, "--count", "1")
		w.waitLine(t, "subscribed to tiercache:invalidate")
		if err := a.users.Delete(ctx, 7, 8); err != nil {
			t.Fatal(err)
		}
		r := w.finish(t)
		r.want(t, exitOK, []string{`origin="replica-a" keyspace="users" keys=["7" "8"] tags=[] flush=false`}, nil)
	})

	t.Run("for", func(t *testing.T) {
		r := cli(t, "watch", "--addr", srv.Addr, "--for", "100ms")
		r.want(t, exitOK, nil, []string{"subscribed to tiercache:invalidate"})
		if r.stdout != "" {
			t.Errorf("watch with no message printed %q", r.stdout)
		}
	})

	// A subscription reset, or silenced, is made again, and watch says so.
	t.Run("reconnect", func(t *testing.T) {
		tests := []struct {
			name     string
			give     func(p *redistest.Proxy)
			wantLine string
		}{
			{"reset", func(p *redistest.Proxy) { p.Reset() }, "lost"},
			{"silent", func(p *redistest.Proxy) { p.Cut(func(string) bool { return true }) }, "silent for 200ms"},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				p := redistest.StartProxy(t, srv.Addr)
				w := start(t, "watch", "--addr", p.Addr, "--timeout", "200ms", "--count", "1")
				w.waitLine(t, "subscribed to tiercache:invalidate")
				tt.give(p)
				w.waitLine(t, tt.wantLine)
				w.waitLine(t, "subscribed to tiercache:invalidate again: messages published meanwhile were missed")
				if err := a.users.Delete(ctx, 9); err != nil {
					t.Fatal(err)
				}
				w.finish(t).want(t, exitOK, []string{`keys=["9"]`}, nil)
			})
		}
	})

	t.Run("signal", func(t *testing.T) {
		w := start(t, "watch", "--addr", srv.Addr, "--channel", "elsewhere")
		w.waitLine(t, "subscribed to elsewhere")
		if err := w.cmd.Process.Signal(os.Interrupt); err != nil {
			t.Fatal(err)
		}
		w.finish(t).want(t, exitOK, nil, nil)
	})
}

// TestWatchHostileCLI: a message whose origin, keyspace and keys hold
// escape sequences is printed escaped, as text and as JSON, and the JSON
// still decodes to the very strings published.
func TestWatchHostileCLI(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	client := newClient(t, srv.Addr)
	m := bus.Message{Origin: "\x1b]0;pwned\a", Keyspace: "\u009b31mks", Keys: []string{"\x1b[2J", "\u202edesrever", "del\x7f"}}
	for _, asJSON := range []bool{false, true} {
		t.Run(fmt.Sprintf("json=%t", asJSON), func(t *testing.T) {
			args := []string{"watch", "--count", "1", "--addr", srv.Addr}
			if asJSON {
				args = append(args, "--json")
			}
			w := start(t, args...)
			w.waitLine(t, "subscribed to tiercache:invalidate")
			if err := bus.Publish(context.Background(), client, "tiercache:invalidate", m); err != nil {
				t.Fatal(err)
			}
			r := w.finish(t)
			r.want(t, exitOK, nil, nil)
			if i := strings.IndexFunc(r.stdout, func(r rune) bool { return r != '\n' && !strconv.IsPrint(r) }); i >= 0 {
				t.Errorf("watch printed a character that is not printable at %d:\n%q", i, r.stdout)
			}
			if !asJSON {
				return
			}
			var got watchLine
			if err := json.Unmarshal([]byte(r.stdout), &got); err != nil {
				t.Fatalf("watch --json: %v\n%s", err, r.stdout)
			}
			if got.Origin != m.Origin || got.Keyspace != m.Keyspace || strings.Join(got.Keys, ",") != strings.Join(m.Keys, ",") {
				t.Errorf("watch --json = %+v; want origin, keyspace and keys of %+v", got, m)
			}
		})
	}
}
