package main

import (
	"context"
	"fmt"
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
// TIERCACHE_PASSWORD, the flag winning, that a refused or missing one exits
// 4 saying so, and that the password never appears in any output.
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
		// Accepted: replicas then finds no replica (exit 3), not exit 4.
		{"flag", nil, []string{"--password", password}, exitNotFound, []string{"no live replica"}},
		{"env", []string{"TIERCACHE_PASSWORD=" + password}, nil, exitNotFound, []string{"no live replica"}},
		{"flag over env", []string{"TIERCACHE_PASSWORD=wrong-" + password}, []string{"--password", password}, exitNotFound, []string{"no live replica"}},
		{"wrong", nil, []string{"--password", "wrong-" + password}, exitUnreachable,
			[]string{"Redis at " + srv.Addr + " refused the credentials", "WRONGPASS", "check --username and --password (or TIERCACHE_USERNAME and TIERCACHE_PASSWORD)"}},
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
		// Connected: replicas then finds no replica (exit 3), not exit 4.
		{"verified", []string{"--tls", "--tls-ca", srv.CAFile}, exitNotFound, []string{"no live replica"}},
		{"client certificate", []string{"--tls", "--tls-ca", srv.CAFile, "--tls-cert", srv.ClientCertFile, "--tls-key", srv.ClientKeyFile}, exitNotFound, []string{"no live replica"}},
		{"server name", []string{"--tls", "--tls-ca", srv.CAFile, "--tls-server-name", "localhost"}, exitNotFound, []string{"no live replica"}},
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

// TestHelpCLI proves that every subcommand's help, demo's included, is in
// one style: on stdout, exit 0, its usage, its flags and the exit codes;
// the commands that connect also list the connection flags with their
// environment variables; 'tiercache help <command>' prints the same; and
// 'tiercache help' lists every variable with its flag.
func TestHelpCLI(t *testing.T) {
	t.Parallel()
	connected := []string{"connection flags:", "--addr host:port", "TIERCACHE_ADDR", "TIERCACHE_PASSWORD",
		"--cluster", "--tls-ca", "--namespace", "--channel", "--timeout",
		"environment:", "A flag\n  on the command line wins over its variable"}
	common := []string{"flags:", "exit codes:", "3  not found", "4  Redis unreachable"}
	tests := []struct {
		give    []string
		want    []string
		notWant []string
	}{
		{[]string{"replicas", "--help"}, append([]string{"usage: tiercache replicas", "--json", "exits 3", "*::replicas{*}"}, connected...), nil},
		{[]string{"stats", "-h"}, append([]string{"usage: tiercache stats", "--keyspace", "TOTAL", "exits 3"}, connected...), nil},
		{[]string{"get", "--help"}, append([]string{"usage: tiercache get", "KEYSPACE KEY", "--max-tag-sets", "--force", "--key-type type", "exits 2"}, connected...), nil},
		{[]string{"invalidate", "--help"}, append([]string{"usage: tiercache invalidate", "KEY...", "--tag TAG", "--all", "--l1-only"}, connected...), nil},
		{[]string{"watch", "--help"}, append([]string{"usage: tiercache watch", "--count", "--for", "subscribed to"}, connected...), nil},
		{[]string{"demo", "--help"}, []string{"usage: tiercache demo", "--redis host:port", "--html file", "reads no TIERCACHE_ variable"},
			[]string{"connection flags:", "environment:"}},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.give, " "), func(t *testing.T) {
			r := cli(t, tt.give...)
			r.want(t, exitOK, append(tt.want, common...), nil)
			if !strings.HasPrefix(r.stdout, "usage: tiercache "+tt.give[0]+" ") {
				t.Errorf("help starts with %.40q; want the usage line", r.stdout)
			}
			if r.stderr != "" {
				t.Errorf("stderr = %q; want the help on stdout alone", r.stderr)
			}
			for _, s := range tt.notWant {
				if strings.Contains(r.stdout, s) {
					t.Errorf("help holds %q:\n%s", s, r.stdout)
				}
			}
			if h := cli(t, "help", tt.give[0]); h.code != exitOK || h.stdout != r.stdout {
				t.Errorf("tiercache help %s: exit %d, output %q; want %s's --help", tt.give[0], h.code, h.stdout, tt.give[0])
			}
		})
	}
	t.Run("help", func(t *testing.T) {
		r := cli(t, "help")
		want := []string{"usage: tiercache <command>", "tiercache help [command]", "replicas", "invalidate", "exit codes:"}
		for _, f := range []string{"addr", "cluster", "username", "password", "tls", "tls-ca", "tls-cert", "tls-key",
			"tls-server-name", "namespace", "channel", "timeout"} {
			want = append(want, fmt.Sprintf("%-26s --%s ", envName(f), f))
		}
		r.want(t, exitOK, append(want, "TIERCACHE_ADDR             --addr             Redis host:port (default 127.0.0.1:6379)",
			"TIERCACHE_NAMESPACE        --namespace        tiercache namespace: the prefix of every key (default tiercache)"), nil)
	})
}
