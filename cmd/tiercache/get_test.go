package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"reflect"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/klauspost/compress/s2"

	"github.com/tiercache/tiercache/codec"
	"github.com/tiercache/tiercache/internal/redistest"
)

// TestGetCLI proves that get prints a value as JSON, decoded from its
// envelope, with its TTL and tags; that it decodes a compressed value, a
// tombstone and an integer key; that a corrupt value is reported (exit 1)
// rather than trusted; and that a missing key exits 3.
func TestGetCLI(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	client := newClient(t, srv.Addr)
	a := startReplica(t, client, "replica-a", true)
	b := startReplica(t, client, "replica-b", false)
	both := []*replica{a, b}
	ctx := context.Background()
	photo := []byte{0, 1, 2, 0xff}
	set(t, b.products, "p7", item{ID: 7, Name: "lamp", Price: 19.5, Tags: []string{"home"}, Photo: photo}, both, "red", "sale")
	set(t, b.products, "p8", item{ID: 8}, both, "blue")
	doc := strings.Repeat("tiercache keeps a copy close by. ", 20)
	set(t, a.docs, "readme", doc, []*replica{a})
	set(t, a.users, 42, user{ID: 42, Name: "Grace"}, both)
	if err := client.Set(ctx, "tiercache:products:gone", codec.Tombstone(), time.Minute).Err(); err != nil {
		t.Fatal(err)
	}
	if err := client.Set(ctx, "tiercache:products:bad", []byte{0x20, 0xc1}, 0).Err(); err != nil {
		t.Fatal(err)
	}
	for _, r := range both {
		if err := r.cache.WritePresence(ctx); err != nil {
			t.Fatal(err)
		}
	}

	type got struct {
		Key      string   `json:"key"`
		RedisKey string   `json:"redis_key"`
		TTL      int64    `json:"ttl_ms"`
		Envelope envelope `json:"envelope"`
		Value    any      `json:"value"`
		Error    string   `json:"error"`
		Tags     []string `json:"tags"`
	}
	tests := []struct {
		name      string
		give      []string
		wantCode  int
		wantValue any
		wantEnv   envelope // Size and BodySize are checked for being set
		wantTags  []string
		maxTTL    time.Duration // 0: no expiry
		wantErr   string
	}{
		{
			name:     "struct",
			give:     []string{"products", "p7"},
			wantCode: exitOK,
			wantValue: map[string]any{"ID": 7.0, "Name": "lamp", "Price": 19.5, "Tags": []any{"home"},
				"Photo": map[string]any{"$bin": base64.StdEncoding.EncodeToString(photo)}},
			wantEnv:  envelope{Version: 1},
			wantTags: []string{"red", "sale"},
			maxTTL:   10 * time.Minute,
		},
		{
			name:      "compressed",
			give:      []string{"docs", "readme"},
			wantCode:  exitOK,
			wantValue: doc,
			wantEnv:   envelope{Version: 1, Compressed: true},
			wantTags:  []string{},
			maxTTL:    time.Hour,
		},
		{
			name:      "integer key",
			give:      []string{"users", "42"},
			wantCode:  exitOK,
			wantValue: map[string]any{"ID": 42.0, "Name": "Grace", "Email": ""},
			wantEnv:   envelope{Version: 1},
			wantTags:  []string{},
			maxTTL:    time.Hour,
		},
		{
			name:     "tombstone",
			give:     []string{"products", "gone"},
			wantCode: exitOK,
			wantEnv:  envelope{Version: 1, Tombstone: true},
			wantTags: []string{},
			maxTTL:   time.Minute,
		},
		{
			name:     "corrupt",
			give:     []string{"products", "bad"},
			wantCode: exitError,
			wantEnv:  envelope{Version: 1},
			wantTags: []string{},
			wantErr:  "corrupt",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := cli(t, append([]string{"get", "--addr", srv.Addr}, tt.give...)...)
			r.want(t, tt.wantCode, nil, nil)
			var g got
			if err := json.Unmarshal([]byte(r.stdout), &g); err != nil {
				t.Fatalf("get: %v\n%s", err, r.stdout)
			}
			t.Logf("tiercache get %s:\n%s", strings.Join(tt.give, " "), r.stdout)
			if want := "tiercache:" + tt.give[0] + ":" + tt.give[1]; g.Key != tt.give[1] || g.RedisKey != want {
				t.Errorf("key %q, redis_key %q; want %q, %q", g.Key, g.RedisKey, tt.give[1], want)
			}
			if !reflect.DeepEqual(g.Value, tt.wantValue) {
				t.Errorf("value = %#v; want %#v", g.Value, tt.wantValue)
			}
			env := g.Envelope
			if env.Size == 0 || (env.BodySize == 0) != (tt.wantValue == nil) {
				t.Errorf("envelope sizes %d, %d: want a size, and a body size for a value", env.Size, env.BodySize)
			}
			env.Size, env.BodySize = 0, 0
			if !reflect.DeepEqual(env, tt.wantEnv) {
				t.Errorf("envelope = %+v; want %+v", env, tt.wantEnv)
			}
			if !reflect.DeepEqual(g.Tags, tt.wantTags) {
				t.Errorf("tags = %q; want %q", g.Tags, tt.wantTags)
			}
			if ttl := time.Duration(g.TTL) * time.Millisecond; tt.maxTTL == 0 && g.TTL != -1 || tt.maxTTL > 0 && (ttl <= 0 || ttl > tt.maxTTL) {
				t.Errorf("ttl_ms = %d; want -1 without expiry, else in (0, %v]", g.TTL, tt.maxTTL)
			}
			if !strings.Contains(g.Error, tt.wantErr) || (tt.wantErr == "") != (g.Error == "") {
				t.Errorf("error = %q; want it to hold %q", g.Error, tt.wantErr)
			}
		})
	}

	t.Run("missing key", func(t *testing.T) {
		r := cli(t, "get", "--addr", srv.Addr, "products", "p9")
		r.want(t, exitNotFound, nil, []string{`key "p9" of keyspace "products" not found`})
		if r.stdout != "" {
			t.Errorf("stdout = %q; want nothing", r.stdout)
		}
	})
}

// cat concatenates byte slices.
func cat(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

// peakRSS returns the most resident memory, in bytes, that the process
// that ps describes used.
func peakRSS(t *testing.T, ps *os.ProcessState) int64 {
	t.Helper()
	ru, ok := ps.SysUsage().(*syscall.Rusage)
	if !ok {
		t.Fatalf("no rusage for the CLI's process on %s", runtime.GOOS)
	}
	return rusageBytes(ru.Maxrss)
}

// rusageBytes returns a Maxrss figure in bytes.
func rusageBytes(maxrss int64) int64 {
	if runtime.GOOS == "darwin" {
		return maxrss // bytes
	}
	return maxrss << 10 // KiB
}

// cliRSS is cli, also returning the peak resident memory of the process:
// no less than this process's own (see TestGetCLIDecodeBomb).
func cliRSS(t *testing.T, args ...string) (cliResult, int64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), cliTimeout)
	defer cancel()
	cmd := cliCommand(ctx, nil, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var exit *exec.ExitError
	if err != nil && !errors.As(err, &exit) {
		t.Fatalf("run tiercache %q: %v", args, err)
	}
	r := cliResult{stdout: stdout.String(), stderr: stderr.String(), code: cmd.ProcessState.ExitCode()}
	checkClean(t, r.stderr)
	return r, peakRSS(t, cmd.ProcessState)
}

// bombEnvelope is a value of 24 bytes: a version 1 envelope whose S2 block
// decompresses to {"tags": [16,777,152 nils]}, 16 MiB of msgpack that would
// decode into 256 MiB of string headers, or as many interfaces.
var bombEnvelope = []byte{0x21, 0xcb, 0xff, 0xff, 0x07, 0x28, 0x81, 0xa4, 't', 'a', 'g', 's', 0xdd, 0x00, 0xff, 0xff,
	0xc0, 0x11, 0x01, 0x1d, 0x00, 0xb4, 0xff, 0xfe}

// bombNils is how many nils bombEnvelope holds.
const bombNils = 16_777_152

// envPeakRSSRedis, set in the environment of the test binary, gives
// TestGetCLIPeakRSS the address of the Redis it reads from.
const envPeakRSSRedis = "TIERCACHE_TEST_PEAK_RSS_REDIS"

// TestGetCLIDecodeBomb proves that get refuses, as the library does, a
// value of a few dozen bytes whose msgpack body would decode into hundreds
// of megabytes: exit 1, said on stderr and in the JSON. TestGetCLIPeakRSS,
// run in a process of its own, proves that it does so in little memory.
func TestGetCLIDecodeBomb(t *testing.T) {
	t.Parallel()
	body, err := s2.Decode(nil, bombEnvelope[1:])
	if want := cat([]byte{0x81, 0xa4, 't', 'a', 'g', 's', 0xdd}, binary.BigEndian.AppendUint32(nil, bombNils)); err != nil ||
		len(body) != len(want)+bombNils || !bytes.HasPrefix(body, want) || bytes.Count(body[len(want):], []byte{0xc0}) != bombNils {
		t.Fatalf("bombEnvelope decompresses to %d bytes, %v; want %d nils for the tags field", len(body), err, bombNils)
	}
	srv := redistest.Start(t)
	client := newClient(t, srv.Addr)
	small, err := newCodec(t).Marshal(item{ID: 1, Name: "lamp"})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for k, v := range map[string][]byte{"tiercache:products:bomb": bombEnvelope, "tiercache:products:small": small} {
		if err := client.Set(ctx, k, v, 0).Err(); err != nil {
			t.Fatal(err)
		}
	}

	r := cli(t, "get", "--addr", srv.Addr, "--force", "products", "bomb")
	r.want(t, exitError, []string{`"error": "codec: value too complex: `, `"compressed": true`},
		[]string{`value of "tiercache:products:bomb" is too complex to decode`, "hostile or corrupt"})
	var got struct {
		Value    any      `json:"value"`
		Envelope envelope `json:"envelope"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &got); err != nil || got.Value != nil || got.Envelope.Size != len(bombEnvelope) {
		t.Errorf("stdout = %s (%v); want the envelope of %d bytes and no value", r.stdout, err, len(bombEnvelope))
	}

	// A process's peak resident memory, as rusage reports it, starts at
	// its parent's (Linux carries the high-water mark across the exec of a
	// vforked child), and this test process has decompressed the bomb.
	// So the CLI's memory is measured from a fresh, small test process.
	tctx, cancel := context.WithTimeout(ctx, 2*cliTimeout)
	defer cancel()
	cmd := exec.CommandContext(tctx, os.Args[0], "-test.run=^TestGetCLIPeakRSS$", "-test.count=1", "-test.v")
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "TIERCACHE_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, envPeakRSSRedis+"="+srv.Addr)
	out, err := cmd.CombinedOutput()
	t.Logf("TestGetCLIPeakRSS:\n%s", out)
	if err != nil || !bytes.Contains(out, []byte("--- PASS: TestGetCLIPeakRSS")) {
		t.Errorf("TestGetCLIPeakRSS in a process of its own: %v", err)
	}
}

// TestGetCLIPeakRSS is TestGetCLIDecodeBomb's measure of memory, run by it
// in a test process of its own, whose peak resident memory is that of a
// test binary starting: it checks that a get of the bomb peaks at no more
// than 64 MiB resident, and 32 MiB above a get of a small value (twice
// both under the race detector, whose shadow memory doubles what the
// process touches). The bomb's decompressed body is 16 MiB; decoding it
// would build 256 MiB.
func TestGetCLIPeakRSS(t *testing.T) {
	addr := os.Getenv(envPeakRSSRedis)
	if addr == "" {
		t.Skip("run by TestGetCLIDecodeBomb in a process of its own")
	}
	var self syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &self); err != nil {
		t.Fatal(err)
	}
	small, smallRSS := cliRSS(t, "get", "--addr", addr, "--force", "products", "small")
	small.want(t, exitOK, []string{`"lamp"`}, nil)
	bomb, bombRSS := cliRSS(t, "get", "--addr", addr, "--force", "products", "bomb")
	bomb.want(t, exitError, nil, []string{"too complex to decode"})
	t.Logf("peak resident memory: %d MiB for a get of the bomb, %d MiB for a get of a small value; this process %d MiB",
		bombRSS>>20, smallRSS>>20, rusageBytes(self.Maxrss)>>20)
	limit, over := int64(64<<20), int64(32<<20)
	if raceEnabled {
		limit, over = 2*limit, 2*over
	}
	if bombRSS > limit || bombRSS > smallRSS+over {
		t.Errorf("get of the bomb peaked at %d MiB resident; want at most %d MiB, and %d MiB over a get of a small value (%d MiB)",
			bombRSS>>20, limit>>20, over>>20, smallRSS>>20)
	}
}

// TestGetCLIMaxOutput proves that get prints about --max-output bytes of a
// value whose JSON is longer (1 MiB by default), as valid JSON, and says so.
func TestGetCLIMaxOutput(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	client := newClient(t, srv.Addr)
	big := item{ID: 7, Name: strings.Repeat("long name ", 100)}
	for i := range 200_000 {
		big.Tags = append(big.Tags, fmt.Sprintf("tag-%06d", i))
	}
	data, err := newCodec(t).Marshal(big)
	if err != nil {
		t.Fatal(err)
	}
	if err := client.Set(context.Background(), "tiercache:products:big", data, 0).Err(); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name      string
		flags     []string
		maxOutput int
	}{
		{"default", nil, defaultMaxOutput},
		{"small", []string{"--max-output", "2000"}, 2000},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := cli(t, append([]string{"get", "--addr", srv.Addr, "--force", "products", "big"}, tt.flags...)...)
			r.want(t, exitOK, []string{`"value_truncated": true`},
				[]string{fmt.Sprintf("value truncated: its JSON is longer than --max-output %d bytes", tt.maxOutput)})
			var got struct {
				Value map[string]any `json:"value"`
			}
			if err := json.Unmarshal([]byte(r.stdout), &got); err != nil {
				t.Fatalf("stdout is not JSON: %v", err)
			}
			// Besides the value, get prints its envelope and tags: under
			// 1 KiB.
			if n := len(r.stdout); n > tt.maxOutput+1024 || n < tt.maxOutput/2 {
				t.Errorf("printed %d bytes; want about %d", n, tt.maxOutput)
			}
			if id, _ := got.Value["ID"].(float64); id != 7 {
				t.Errorf("value = %.200v; want the item's first fields", got.Value)
			}
		})
	}
	t.Run("bad flag", func(t *testing.T) {
		cli(t, "get", "--addr", srv.Addr, "--max-output", "0", "products", "big").want(t, exitUsage, nil, []string{"--max-output 0: want at least 1"})
	})
}
