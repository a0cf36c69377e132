package main

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/tiercache/tiercache/internal/redistest"
)

// TestBadInputCLI proves that bad subcommands, flags, arguments, keyspaces,
// keys and tags exit 2 with a one-line reason, never a stack trace.
func TestBadInputCLI(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	client := newClient(t, srv.Addr)
	r := startReplica(t, client, "replica-a", false)
	if err := r.cache.WritePresence(context.Background()); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name     string
		give     []string
		wantCode int
		wantErr  []string
	}{
		{"unknown command", []string{"nope"}, exitUsage, []string{`unknown command "nope"`, "replicas", "stats", "get", "invalidate", "watch", "demo"}},
		{"no command", []string{}, exitUsage, []string{"usage: tiercache <command>"}},
		{"unknown flag", []string{"replicas", "--bogus"}, exitUsage, []string{"flag provided but not defined: -bogus", "tiercache replicas --help"}},
		{"unknown keyspace get", []string{"get", "nope", "1"}, exitUsage, []string{`unknown keyspace "nope"`, "products, users", "--force"}},
		{"unknown keyspace invalidate", []string{"invalidate", "nope", "1"}, exitUsage, []string{`unknown keyspace "nope"`, "products, users", "--force"}},
		{"unknown keyspace stats", []string{"stats", "--keyspace", "nope"}, exitUsage, []string{`unknown keyspace "nope"`, "products, users"}},
		{"forced keyspace", []string{"get", "--force", "nope", "1"}, exitNotFound, []string{`key "1" of keyspace "nope" not found`}},
		{"keyspace with colon", []string{"get", "us:ers", "1"}, exitUsage, []string{`keyspace name "us:ers" contains ':'`}},
		{"empty key", []string{"get", "users", ""}, exitUsage, []string{"empty key"}},
		{"long key", []string{"get", "users", strings.Repeat("k", 1010)}, exitUsage, []string{"key of 1010 bytes", "longer than 1024"}},
		{"control character", []string{"invalidate", "users", "a\x01b"}, exitUsage, []string{`key "a\x01b" contains a control character`}},
		{"invalid UTF-8", []string{"get", "users", "\xff"}, exitUsage, []string{`key "\xff" is not valid UTF-8`}},
		{"bad tag", []string{"invalidate", "products", "--tag", "a:b"}, exitUsage, []string{`tag "a:b" contains ':'`}},
		{"get one argument", []string{"get", "users"}, exitUsage, []string{"want KEYSPACE KEY, got 1 argument"}},
		{"nothing to invalidate", []string{"invalidate", "users"}, exitUsage, []string{"nothing to invalidate"}},
		{"two modes", []string{"invalidate", "users", "1", "--all"}, exitUsage, []string{"only one of them"}},
		{"replicas argument", []string{"replicas", "extra"}, exitUsage, []string{"no arguments expected"}},
		{"negative count", []string{"watch", "--count", "-1"}, exitUsage, []string{"--count -1"}},
		{"zero timeout", []string{"replicas", "--timeout", "0s"}, exitUsage, []string{"--timeout 0s"}},
		{"namespace with colon", []string{"replicas", "--namespace", "a:b"}, exitUsage, []string{`--namespace "a:b" contains ':'`}},
		{"tls file without tls", []string{"replicas", "--tls-ca", "ca.pem"}, exitUsage, []string{"need --tls"}},
		{"missing CA file", []string{"replicas", "--tls", "--tls-ca", "/nonexistent/ca.pem"}, exitUsage, []string{"ca_file", "no such file"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			args := tt.give
			if len(args) > 0 {
				args = append([]string{args[0], "--addr", srv.Addr}, args[1:]...)
			}
			res := cli(t, args...)
			res.want(t, tt.wantCode, nil, tt.wantErr)
			if res.code != exitNotFound && res.stdout != "" && !strings.Contains(tt.name, "command") {
				t.Errorf("stdout = %q; want nothing", res.stdout)
			}
		})
	}
}

// TestUnreachableCLI proves that every subcommand exits 4 within its
// timeout when Redis is not there (refused, or silent), with one line that
// names the address and says what to do.
func TestUnreachableCLI(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	silent := redistest.StartProxy(t, srv.Addr)
	silent.Partition() // accepts, never answers
	commands := [][]string{{"replicas"}, {"stats"}, {"get", "users", "1"}, {"invalidate", "users", "1"}, {"watch"}}
	tests := []struct {
		name    string
		env     []string
		flags   []string
		wantErr []string
	}{
		{"refused", nil, []string{"--addr", "127.0.0.1:1"},
			[]string{"cannot reach Redis at 127.0.0.1:1 within 2s", "connection refused", "is it running? set --addr or TIERCACHE_ADDR"}},
		{"refused from env", []string{"TIERCACHE_ADDR=127.0.0.1:1"}, nil,
			[]string{"cannot reach Redis at 127.0.0.1:1 within 2s"}},
		{"silent", nil, []string{"--addr", silent.Addr, "--timeout", "300ms"},
			[]string{"cannot reach Redis at " + silent.Addr + " within 300ms", "set --addr or TIERCACHE_ADDR"}},
	}
	for _, tt := range tests {
		for _, cmd := range commands {
			t.Run(tt.name+" "+cmd[0], func(t *testing.T) {
				start := time.Now()
				r := cliEnv(t, tt.env, append(cmd, tt.flags...)...)
				r.want(t, exitUnreachable, nil, tt.wantErr)
				if n := strings.Count(r.stderr, "\n"); n != 1 {
					t.Errorf("stderr has %d lines; want one:\n%s", n, r.stderr)
				}
				if d := time.Since(start); d > 5*time.Second {
					t.Errorf("took %v; want the timeout and the process's start", d)
				}
			})
		}
	}
}

// TestAuthCLI proves that the password works from --password and from
// TIERCACHE_PASSWORD, that a refused or missing one exits 4 saying so,
// and that the password never appears in any output.
func TestAuthCLI(t *testing.T) {
	t.Parallel()
	const password = "s3cret-pw-771"
	srv := redistest.Start(t, "--requirepass", password)
	tests := []struct {
		name     string
		env      []string
		flags    []string
		wantCode int
		wantErr  []string
	}{
		{"flag", nil, []string{"--password", password}, exitOK, nil},
		{"env", []string{"TIERCACHE_PASSWORD=" + password}, nil, exitOK, nil},
		{"wrong", nil, []string{"--password", "wrong-" + password}, exitUnreachable,
			[]string{"Redis at " + srv.Addr + " refused the credentials", "WRONGPASS", "check --username and --password (or TIERCACHE_PASSWORD)"}},
		{"missing", nil, nil, exitUnreachable, []string{"refused the credentials", "NOAUTH"}},
		{"help", []string{"TIERCACHE_PASSWORD=" + password}, []string{"--help"}, exitOK, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := cliEnv(t, tt.env, append([]string{"replicas", "--addr", srv.Addr}, tt.flags...)...)
			r.want(t, tt.wantCode, nil, tt.wantErr)
			if strings.Contains(r.stdout+r.stderr, password) {
				t.Errorf("the password is in the output:\nstdout:\n%s\nstderr:\n%s", r.stdout, r.stderr)
			}
		})
	}
}

// TestTLSCLI proves that --tls with the right CA (and a client certificate)
// connects, and that a CA that does not verify the server, or plain text to
// a TLS-only server, exits 4 saying what to check.
func TestTLSCLI(t *testing.T) {
	t.Parallel()
	srv := redistest.StartTLS(t)
	tests := []struct {
		name     string
		give     []string
		wantCode int
		wantErr  []string
	}{
		{"verified", []string{"--tls", "--tls-ca", srv.CAFile}, exitOK, nil},
		{"client certificate", []string{"--tls", "--tls-ca", srv.CAFile, "--tls-cert", srv.ClientCertFile, "--tls-key", srv.ClientKeyFile}, exitOK, nil},
		{"server name", []string{"--tls", "--tls-ca", srv.CAFile, "--tls-server-name", "localhost"}, exitOK, nil},
		{"wrong CA", []string{"--tls", "--tls-ca", srv.OtherCAFile}, exitUnreachable, []string{"TLS with Redis at " + srv.Addr + " failed", "certificate", "check --tls-ca"}},
		{"wrong server name", []string{"--tls", "--tls-ca", srv.CAFile, "--tls-server-name", "elsewhere.example"}, exitUnreachable, []string{"TLS with Redis", "elsewhere.example"}},
		{"plain text", nil, exitUnreachable, []string{"cannot reach Redis at " + srv.Addr}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := cli(t, append([]string{"replicas", "--addr", srv.Addr}, tt.give...)...)
			r.want(t, tt.wantCode, nil, tt.wantErr)
		})
	}
}

// TestHelpCLI proves that every subcommand's --help exits 0 and documents
// its arguments, the connection flags and the exit codes.
func TestHelpCLI(t *testing.T) {
	t.Parallel()
	tests := []struct {
		give []string
		want []string
	}{
		{[]string{"help"}, []string{"usage: tiercache <command>", "replicas", "invalidate", "exit codes:"}},
		{[]string{"replicas", "--help"}, []string{"usage: tiercache replicas", "--json"}},
		{[]string{"stats", "-h"}, []string{"usage: tiercache stats", "--keyspace", "TOTAL"}},
		{[]string{"get", "--help"}, []string{"usage: tiercache get", "KEYSPACE KEY", "--max-tag-sets", "--force"}},
		{[]string{"invalidate", "--help"}, []string{"usage: tiercache invalidate", "KEY...", "--tag TAG", "--all", "--l1-only"}},
		{[]string{"watch", "--help"}, []string{"usage: tiercache watch", "--count", "--for", "subscribed to"}},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.give, " "), func(t *testing.T) {
			r := cli(t, tt.give...)
			want := tt.want
			if tt.give[0] != "help" {
				want = append(want, "connection flags:", "--addr host:port", "TIERCACHE_ADDR", "TIERCACHE_PASSWORD",
					"--cluster", "--tls-ca", "--namespace", "--channel", "--timeout", "exit codes:", "4  Redis unreachable")
			}
			r.want(t, exitOK, want, nil)
		})
	}
	// demo is as it was: its help goes to stderr.
	cli(t, "demo", "--help").want(t, exitOK, nil, []string{"usage: tiercache demo"})
}
