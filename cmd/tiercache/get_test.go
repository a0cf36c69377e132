package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"

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
