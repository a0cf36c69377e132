package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tiercache/tiercache"
)

// subprocessEnv, set in the environment of the test binary, makes TestMain
// run main() instead of the tests: that is how the tests run the CLI.
const subprocessEnv = "TIERCACHE_CLI_SUBPROCESS"

// hwmEnv names the file where the CLI run by TestMain writes its peak
// resident set, in bytes, as it exits. The Maxrss that wait4 reports for a
// child is no use here: the test binary starts it with vfork and exec, and
// Linux counts in it the resident set of the test binary at the exec.
const hwmEnv = "TIERCACHE_CLI_HWM_FILE"

// cliTimeout bounds one run of the CLI.
const cliTimeout = 30 * time.Second

// waitTimeout bounds every wait for an event (an invalidation, a line).
const waitTimeout = 10 * time.Second

// cliResult is what one run of the CLI did.
type cliResult struct {
	stdout, stderr string
	code           int
	maxRSS         int64 // the process's peak resident set, in bytes; -1 unknown
}

// cliCommand returns the command that runs the CLI with args, in an
// environment without the TIERCACHE_ variables of the caller, plus env.
func cliCommand(ctx context.Context, env []string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, os.Args[0], args...)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "TIERCACHE_") && !strings.HasPrefix(kv, "GORACE=") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	// Under -race, a process that exits 0 first sleeps atexit_sleep_ms (1s
	// by default) so that late races get reported; 50ms is plenty here.
	cmd.Env = append(cmd.Env, subprocessEnv+"=1", "GORACE="+os.Getenv("GORACE")+" atexit_sleep_ms=50")
	cmd.Env = append(cmd.Env, env...)
	return cmd
}

// cli runs the CLI with args and returns its output and exit code.
func cli(t *testing.T, args ...string) cliResult {
	t.Helper()
	return cliEnv(t, nil, args...)
}

// cliEnv is cli with extra environment variables ("K=V").
func cliEnv(t *testing.T, env []string, args ...string) cliResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), cliTimeout)
	defer cancel()
	hwm := filepath.Join(t.TempDir(), "hwm")
	cmd := cliCommand(ctx, append(env, hwmEnv+"="+hwm), args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var exit *exec.ExitError
	if err != nil && !errors.As(err, &exit) {
		t.Fatalf("run tiercache %q: %v", args, err)
	}
	r := cliResult{stdout: stdout.String(), stderr: stderr.String(), code: cmd.ProcessState.ExitCode(), maxRSS: -1}
	if b, err := os.ReadFile(hwm); err == nil {
		r.maxRSS, _ = strconv.ParseInt(string(b), 10, 64)
	}
	checkClean(t, r.stderr)
	return r
}

// writeHWM writes to the file name this process's peak resident set, in
// bytes: VmHWM of /proc/self/status, which counts only the memory of the
// program that runs now, not of the one that started it. It writes nothing
// where there is no such file.
func writeHWM(name string) {
	status, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return
	}
	for line := range strings.Lines(string(status)) {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err == nil {
				os.WriteFile(name, []byte(strconv.FormatInt(kb<<10, 10)), 0o600)
			}
			return
		}
	}
}

// checkClean fails t when the CLI's stderr shows a panic, a stack trace or
// a data race.
func checkClean(t *testing.T, stderr string) {
	t.Helper()
	for _, bad := range []string{"panic", "goroutine ", "DATA RACE"} {
		if strings.Contains(stderr, bad) {
			t.Errorf("stderr holds %q:\n%s", bad, stderr)
		}
	}
}

// want fails t unless r exited with code and its stdout and stderr contain
// the given strings.
func (r cliResult) want(t *testing.T, code int, stdout []string, stderr []string) {
	t.Helper()
	if r.code != code {
		t.Errorf("exit = %d; want %d\nstdout:\n%s\nstderr:\n%s", r.code, code, r.stdout, r.stderr)
	}
	for _, s := range stdout {
		if !strings.Contains(r.stdout, s) {
			t.Errorf("stdout lacks %q:\n%s", s, r.stdout)
		}
	}
	for _, s := range stderr {
		if !strings.Contains(r.stderr, s) {
			t.Errorf("stderr lacks %q:\n%s", s, r.stderr)
		}
	}
}

// background is a run of the CLI that the test talks to while it runs.
type background struct {
	cmd    *exec.Cmd
	stdout bytes.Buffer
	lines  chan string   // stderr, line by line
	done   chan struct{} // closed once stderr is drained
	mu     sync.Mutex    // protects stderr
	stderr strings.Builder
}

// start starts the CLI with args in the background. finish waits for it.
func start(t *testing.T, args ...string) *background {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), cliTimeout)
	t.Cleanup(cancel)
	b := &background{cmd: cliCommand(ctx, nil, args...), lines: make(chan string, 100), done: make(chan struct{})}
	b.cmd.Stdout = &b.stdout
	pipe, err := b.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := b.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		defer close(b.done)
		sc := bufio.NewScanner(pipe)
		for sc.Scan() {
			b.mu.Lock()
			b.stderr.WriteString(sc.Text() + "\n")
			b.mu.Unlock()
			select {
			case b.lines <- sc.Text():
			default: // nobody waits for lines this late
			}
		}
	}()
	t.Cleanup(func() {
		// A test that failed early: do not leave the process or the reader.
		b.cmd.Process.Kill()
		<-b.done
		b.cmd.Wait()
	})
	return b
}

// waitLine waits until the CLI writes a line holding s to stderr.
func (b *background) waitLine(t *testing.T, s string) {
	t.Helper()
	timeout := time.NewTimer(waitTimeout)
	defer timeout.Stop()
	for {
		select {
		case l := <-b.lines:
			if strings.Contains(l, s) {
				return
			}
		case <-b.done:
			t.Fatalf("the CLI ended without writing %q; stderr:\n%s", s, b.errors())
		case <-timeout.C:
			t.Fatalf("no line %q on stderr within %v; stderr:\n%s", s, waitTimeout, b.errors())
		}
	}
}

func (b *background) errors() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.stderr.String()
}

// finish waits for the CLI to exit and returns what it did.
func (b *background) finish(t *testing.T) cliResult {
	t.Helper()
	<-b.done
	err := b.cmd.Wait()
	var exit *exec.ExitError
	if err != nil && !errors.As(err, &exit) {
		t.Fatalf("wait for tiercache: %v", err)
	}
	r := cliResult{stdout: b.stdout.String(), stderr: b.errors(), code: b.cmd.ProcessState.ExitCode()}
	checkClean(t, r.stderr)
	return r
}

type user struct {
	ID    int64
	Name  string
	Email string
}

type item struct {
	ID    int64
	Name  string
	Price float64
	Tags  []string
	Photo []byte
}

// replica is one "service replica" in the test process: a Cache with the
// keyspaces users (int64 keys) and products, and a hook that reports every
// invalidation it applied.
type replica struct {
	id       string
	client   redis.UniversalClient
	cache    *tiercache.Cache
	users    *tiercache.Keyspace[int64, user]
	products *tiercache.Keyspace[string, item]
	docs     *tiercache.Keyspace[string, string] // compressed above 16 bytes; nil unless asked for
	inv      chan tiercache.Invalidation
}

// startReplica starts a replica called id on client, with the keyspace
// docs too when withDocs is set; it stops in t.Cleanup.
func startReplica(t *testing.T, client redis.UniversalClient, id string, withDocs bool) *replica {
	t.Helper()
	r := &replica{id: id, client: client, inv: make(chan tiercache.Invalidation, 4096)}
	var err error
	r.cache, err = tiercache.New(client, tiercache.Config{InstanceID: id, HeartbeatInterval: time.Hour},
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
	if r.users, err = tiercache.NewKeyspace[int64, user](r.cache, "users", tiercache.KeyspaceConfig{TTL: time.Hour}); err != nil {
		t.Fatal(err)
	}
	if r.products, err = tiercache.NewKeyspace[string, item](r.cache, "products", tiercache.KeyspaceConfig{TTL: 10 * time.Minute}); err != nil {
		t.Fatal(err)
	}
	if withDocs {
		if r.docs, err = tiercache.NewKeyspace[string, string](r.cache, "docs", tiercache.KeyspaceConfig{CompressAbove: 16}); err != nil {
			t.Fatal(err)
		}
	}
	if err := r.cache.Start(ctx); err != nil {
		t.Fatal(err)
	}
	return r
}

// newClient returns a client for addr, closed in t.Cleanup (after the
// replicas that use it have stopped).
func newClient(tb testing.TB, addr string) *redis.Client {
	tb.Helper()
	c := redis.NewClient(&redis.Options{Addr: addr, ContextTimeoutEnabled: true})
	tb.Cleanup(func() { c.Close() })
	return c
}

// waitInvalidation waits until r applies an invalidation that match
// accepts, and returns it.
func (r *replica) waitInvalidation(t *testing.T, what string, match func(tiercache.Invalidation) bool) tiercache.Invalidation {
	t.Helper()
	timeout := time.NewTimer(waitTimeout)
	defer timeout.Stop()
	for {
		select {
		case i := <-r.inv:
			if match(i) {
				return i
			}
		case <-timeout.C:
			t.Fatalf("%s applied no invalidation of %s within %v", r.id, what, waitTimeout)
		}
	}
}

// keysOf matches an invalidation of exactly keys in keyspace.
func keysOf(keyspace string, keys ...string) func(tiercache.Invalidation) bool {
	return func(i tiercache.Invalidation) bool {
		return i.Keyspace == keyspace && !i.Flush && strings.Join(i.Keys, ",") == strings.Join(keys, ",")
	}
}

// flushOf matches a flush of keyspace (not a bus reset).
func flushOf(keyspace string) func(tiercache.Invalidation) bool {
	return func(i tiercache.Invalidation) bool { return i.Keyspace == keyspace && i.Flush && !i.Reset }
}

// fromCLI matches what match accepts when the CLI published it.
func fromCLI(match func(tiercache.Invalidation) bool) func(tiercache.Invalidation) bool {
	return func(i tiercache.Invalidation) bool { return strings.HasPrefix(i.Origin, "tiercache-cli@") && match(i) }
}

// set stores v under key in r's keyspace ks and waits until every replica
// in all (r included) has applied the invalidation, so that none evicts
// later what a read fills.
func set[K tiercache.Key, V any](t *testing.T, ks *tiercache.Keyspace[K, V], key K, v V, all []*replica, tags ...string) {
	t.Helper()
	if err := ks.SetTagged(context.Background(), key, v, tags...); err != nil {
		t.Fatal(err)
	}
	k := fmt.Sprint(key) // keys are named as in Redis: integers in decimal
	for _, r := range all {
		r.waitInvalidation(t, ks.Name()+" "+k, keysOf(ks.Name(), k))
	}
}
