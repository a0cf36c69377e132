package main

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tiercache/tiercache"
	"github.com/tiercache/tiercache/internal/redistest"
)

// startNamespaceReplica starts, on client, a replica called id in
// namespace ns with its invalidations on channel ("" for the default), a
// keyspace users, and a presence record written; it stops in t.Cleanup.
func startNamespaceReplica(t *testing.T, client redis.UniversalClient, ns, id, channel string) *replica {
	t.Helper()
	r := &replica{id: id, client: client, inv: make(chan tiercache.Invalidation, 256)}
	var err error
	r.cache, err = tiercache.New(client, tiercache.Config{Namespace: ns, Channel: channel, InstanceID: id, HeartbeatInterval: time.Hour},
		tiercache.WithInvalidationHook(func(i tiercache.Invalidation) {
			select {
			case r.inv <- i:
			default: // never block the bus; a wait for a dropped one fails
			}
		}))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	t.Cleanup(func() {
		if err := r.cache.Stop(ctx); err != nil {
			t.Errorf("stop %s: %v", id, err)
		}
	})
	if r.users, err = tiercache.NewKeyspace[int64, user](r.cache, "users", tiercache.KeyspaceConfig{}); err != nil {
		t.Fatal(err)
	}
	if err := r.cache.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if err := r.cache.WritePresence(ctx); err != nil {
		t.Fatal(err)
	}
	return r
}

// TestEnvCLI proves that the connection settings come from the
// environment (TIERCACHE_ and the flag's name), that a flag on the command
// line wins over its variable, that an empty variable is ignored, and that
// a variable the flag refuses is a usage error naming the variable.
func TestEnvCLI(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	client := newClient(t, srv.Addr)
	shop := startNamespaceReplica(t, client, "shop", "shop-1", "shop-events")
	dead := "127.0.0.1:1" // nothing listens there

	tests := []struct {
		name     string
		env      []string
		args     []string
		wantCode int
		wantOut  []string
		wantErr  []string
	}{
		{"addr and namespace", []string{"TIERCACHE_ADDR=" + srv.Addr, "TIERCACHE_NAMESPACE=shop"}, []string{"replicas"},
			exitOK, []string{"shop-1"}, nil},
		{"flags win", []string{"TIERCACHE_ADDR=" + dead, "TIERCACHE_NAMESPACE=nope"}, []string{"replicas", "--addr", srv.Addr, "--namespace", "shop"},
			exitOK, []string{"shop-1"}, nil},
		{"empty variables are ignored", []string{"TIERCACHE_ADDR=", "TIERCACHE_NAMESPACE=", "TIERCACHE_TIMEOUT="}, []string{"replicas", "--addr", srv.Addr},
			exitNotFound, nil, []string{`no live replica in namespace "tiercache" (the default)`, `"shop" (1 replica)`}},
		{"namespace named as from the environment", []string{"TIERCACHE_ADDR=" + srv.Addr, "TIERCACHE_NAMESPACE=nope"}, []string{"stats"},
			exitNotFound, nil, []string{`no live replica in namespace "nope" (from TIERCACHE_NAMESPACE)`, `"shop" (1 replica)`}},
		{"addr unreachable", []string{"TIERCACHE_ADDR=" + dead, "TIERCACHE_TIMEOUT=300ms"}, []string{"replicas"},
			exitUnreachable, nil, []string{"cannot reach Redis at " + dead + " within 300ms"}},
		{"cluster", []string{"TIERCACHE_ADDR=" + srv.Addr, "TIERCACHE_CLUSTER=true"}, []string{"replicas"},
			exitUnreachable, nil, []string{"Redis at " + srv.Addr + " is not a Cluster", "drop --cluster (or TIERCACHE_CLUSTER)"}},
		{"bad timeout", []string{"TIERCACHE_TIMEOUT=soon"}, []string{"replicas"},
			exitUsage, nil, []string{`environment variable TIERCACHE_TIMEOUT="soon", for --timeout: not a valid duration`}},
		{"bad boolean", []string{"TIERCACHE_TLS=maybe"}, []string{"replicas"},
			exitUsage, nil, []string{`environment variable TIERCACHE_TLS="maybe", for --tls: not a valid boolean`}},
		{"bad namespace", []string{"TIERCACHE_NAMESPACE=a:b"}, []string{"replicas"},
			exitUsage, nil, []string{`TIERCACHE_NAMESPACE "a:b" contains ':'`}},
		{"zero timeout", []string{"TIERCACHE_TIMEOUT=0s"}, []string{"replicas"},
			exitUsage, nil, []string{"TIERCACHE_TIMEOUT 0s: want a positive duration"}},
		{"TLS file without TLS", []string{"TIERCACHE_TLS_CA=/nonexistent/ca.pem"}, []string{"replicas"},
			exitUsage, nil, []string{"need --tls (or TIERCACHE_TLS=1)"}},
		{"TLS file from the environment", []string{"TIERCACHE_TLS=1", "TIERCACHE_TLS_CA=/nonexistent/ca.pem"}, []string{"replicas"},
			exitUsage, nil, []string{"ca_file", "no such file"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := cliEnv(t, tt.env, tt.args...)
			r.want(t, tt.wantCode, tt.wantOut, tt.wantErr)
		})
	}

	t.Run("channel", func(t *testing.T) {
		env := []string{"TIERCACHE_ADDR=" + srv.Addr, "TIERCACHE_NAMESPACE=shop", "TIERCACHE_CHANNEL=shop-events"}
		r := cliEnv(t, env, "invalidate", "users", "5", "--l1-only")
		r.want(t, exitOK, []string{`on shop-events`}, nil)
		shop.waitInvalidation(t, "users 5 from the CLI on TIERCACHE_CHANNEL", fromCLI(keysOf("users", "5")))
	})
}

// TestEnvCLIAuthTLS proves that the credentials and the TLS settings come
// from the environment: TIERCACHE_USERNAME and TIERCACHE_PASSWORD against
// an ACL user, TIERCACHE_TLS, TIERCACHE_TLS_CA, TIERCACHE_TLS_CERT,
// TIERCACHE_TLS_KEY and TIERCACHE_TLS_SERVER_NAME against a TLS-only server.
// Connected, replicas finds no replica (exit 3); refused, it exits 4.
func TestEnvCLIAuthTLS(t *testing.T) {
	t.Parallel()
	const password = "env-pw-5531"
	acl := redistest.Start(t)
	// The default user gets another password: the password of ops without
	// its user is refused, so an accepted one proves TIERCACHE_USERNAME
	// read.
	admin := newClient(t, acl.Addr)
	ctx := context.Background()
	for _, cmd := range [][]any{
		{"ACL", "SETUSER", "ops", "on", ">" + password, "~*", "&*", "+@all"},
		{"ACL", "SETUSER", "default", "resetpass", ">other-" + password},
	} {
		if err := admin.Do(ctx, cmd...).Err(); err != nil {
			t.Fatal(err)
		}
	}
	tls := redistest.StartTLS(t)
	tests := []struct {
		name     string
		env      []string
		wantCode int
		wantErr  []string
	}{
		{"user and password", []string{"TIERCACHE_ADDR=" + acl.Addr, "TIERCACHE_USERNAME=ops", "TIERCACHE_PASSWORD=" + password},
			exitNotFound, []string{"no live replica"}},
		{"password without its user", []string{"TIERCACHE_ADDR=" + acl.Addr, "TIERCACHE_PASSWORD=" + password},
			exitUnreachable, []string{"refused the credentials"}},
		{"wrong user", []string{"TIERCACHE_ADDR=" + acl.Addr, "TIERCACHE_USERNAME=nobody", "TIERCACHE_PASSWORD=" + password},
			exitUnreachable, []string{"refused the credentials"}},
		{"TLS", []string{"TIERCACHE_ADDR=" + tls.Addr, "TIERCACHE_TLS=true", "TIERCACHE_TLS_CA=" + tls.CAFile,
			"TIERCACHE_TLS_CERT=" + tls.ClientCertFile, "TIERCACHE_TLS_KEY=" + tls.ClientKeyFile, "TIERCACHE_TLS_SERVER_NAME=localhost"},
			exitNotFound, []string{"no live replica"}},
		{"TLS, wrong CA", []string{"TIERCACHE_ADDR=" + tls.Addr, "TIERCACHE_TLS=1", "TIERCACHE_TLS_CA=" + tls.OtherCAFile},
			exitUnreachable, []string{"TLS with Redis at " + tls.Addr + " failed"}},
		{"TLS, wrong server name", []string{"TIERCACHE_ADDR=" + tls.Addr, "TIERCACHE_TLS=1", "TIERCACHE_TLS_CA=" + tls.CAFile, "TIERCACHE_TLS_SERVER_NAME=elsewhere.example"},
			exitUnreachable, []string{"elsewhere.example"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := cliEnv(t, tt.env, "replicas")
			r.want(t, tt.wantCode, nil, tt.wantErr)
			if strings.Contains(r.stdout+r.stderr, password) {
				t.Errorf("the password is in the output:\n%s\n%s", r.stdout, r.stderr)
			}
		})
	}
}
