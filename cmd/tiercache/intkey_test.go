package main

import (
	"context"
	"testing"

	"github.com/tiercache/tiercache/internal/redistest"
)

func TestIsIntKey(t *testing.T) {
	tests := []struct {
		give string
		want bool
	}{
		{"42", true}, {"-7", true}, {"0", true}, {"18446744073709551615", true}, {"-9223372036854775808", true},
		{"042", false}, {"+42", false}, {"-0", false}, {" 42", false}, {"4.2", false}, {"1_000", false},
		{"0x2a", false}, {"18446744073709551616", false}, {"abc", false}, {"", false}, {"-", false},
	}
	for _, tt := range tests {
		if got := isIntKey(tt.give); got != tt.want {
			t.Errorf("isIntKey(%q) = %v; want %v", tt.give, got, tt.want)
		}
	}
}

func TestIntSpelling(t *testing.T) {
	tests := []struct {
		give    string
		wantKey string
		wantOK  bool
	}{
		{"042", "42", true},
		{"+42", "42", true},
		{" 42 ", "42", true},
		{"-0", "0", true},
		{"-007", "-7", true},
		{"1_000", "1000", true},
		{"0x2a", "42", true},
		{"-0x2a", "-42", true},
		{"0b101", "5", true},
		{"0o17", "15", true},
		{"+18446744073709551615", "18446744073709551615", true},
		{"99999999999999999999", "", true},
		{"-99999999999999999999", "", true},
		{"42", "", false}, // already as tiercache writes it
		{"4.2", "", false},
		{"1e3", "", false},
		{"abc", "", false},
		{"+-4", "", false},
		{"_", "", false},
		{"0x", "", false},
		{"", "", false},
	}
	for _, tt := range tests {
		if key, ok := intSpelling(tt.give); key != tt.wantKey || ok != tt.wantOK {
			t.Errorf("intSpelling(%q) = %q, %v; want %q, %v", tt.give, key, ok, tt.wantKey, tt.wantOK)
		}
	}
}

// TestGetCLIKeyType proves that get of a key that cannot be a key of the
// keyspace exits 2 saying why, not 3 as a mere miss: with --key-type int, a
// key that is not an integer, before Redis is read; by default, a key not
// in Redis that reads as an integer written otherwise (042), or that is not
// an integer while the keyspace's keys are. A key of a keyspace of string
// keys that is missing is a miss (3), whatever it looks like, and so is any
// missing key with --key-type string.
func TestGetCLIKeyType(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	client := newClient(t, srv.Addr)
	a := startReplica(t, client, "replica-a", false)
	both := []*replica{a}
	set(t, a.users, 42, user{ID: 42, Name: "Grace"}, both)
	set(t, a.users, -7, user{ID: -7, Name: "Ada"}, both)
	set(t, a.products, "p1", item{ID: 1}, both)
	set(t, a.products, "007", item{ID: 7}, both)
	if err := a.cache.WritePresence(context.Background()); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name     string
		give     []string
		wantCode int
		wantErr  []string
	}{
		{"int key", []string{"users", "42"}, exitOK, nil},
		{"negative int key", []string{"users", "--", "-7"}, exitOK, nil},
		{"missing int key", []string{"users", "43"}, exitNotFound, []string{`key "43" of keyspace "users" not found`}},
		{"not an integer", []string{"users", "abc"}, exitUsage,
			[]string{`key "abc" of keyspace "users" is not in Redis, and it is not an integer, while the keyspace holds integer keys (the 2 keys sampled are all integers in decimal)`, "--key-type string"}},
		{"leading zero", []string{"users", "042"}, exitUsage,
			[]string{`key "042" of keyspace "users" is not in Redis, and it reads as an integer written otherwise than tiercache writes integer keys: "42"`}},
		{"plus sign", []string{"users", "+42"}, exitUsage, []string{`written otherwise than tiercache writes integer keys: "42"`}},
		{"beyond 64 bits", []string{"users", "99999999999999999999"}, exitUsage, []string{"reads as an integer beyond the 64 bits"}},
		{"a float", []string{"users", "4.2"}, exitUsage, []string{"it is not an integer"}},
		{"string key that reads as an integer", []string{"products", "007"}, exitOK, nil},
		{"missing string key that reads as an integer", []string{"products", "042"}, exitNotFound, []string{`key "042" of keyspace "products" not found`}},
		{"missing string key", []string{"products", "abc"}, exitNotFound, []string{`key "abc" of keyspace "products" not found`}},
		{"--key-type string", []string{"--key-type", "string", "users", "abc"}, exitNotFound, []string{`key "abc" of keyspace "users" not found`}},
		{"--key-type int", []string{"--key-type", "int", "users", "42"}, exitOK, nil},
		{"--key-type int, missing", []string{"--key-type", "int", "users", "43"}, exitNotFound, nil},
		{"--key-type int, not an integer", []string{"--key-type", "int", "products", "p1"}, exitUsage,
			[]string{`key "p1" is not an integer key of 64 bits in plain decimal, such as 42 or -7 (--key-type int)`}},
		{"--key-type int, leading zero", []string{"--key-type", "int", "users", "042"}, exitUsage, []string{`write it "42"`}},
		{"--key-type bad", []string{"--key-type", "float", "users", "42"}, exitUsage, []string{`--key-type "float": want auto, int or string`}},
		{"empty keyspace", []string{"--force", "nope", "042"}, exitUsage, []string{"the keyspace has no key to tell its type by"}},
		{"empty keyspace, a string", []string{"--force", "nope", "abc"}, exitNotFound, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := cli(t, append([]string{"get", "--addr", srv.Addr}, tt.give...)...)
			r.want(t, tt.wantCode, nil, tt.wantErr)
			if tt.wantCode != exitOK && r.stdout != "" {
				t.Errorf("stdout = %q; want nothing", r.stdout)
			}
		})
	}

	t.Run("--key-type int is checked before Redis is read", func(t *testing.T) {
		// Nothing listens at this address: reading Redis would exit 4.
		r := cli(t, "get", "--addr", "127.0.0.1:1", "--key-type", "int", "users", "abc")
		r.want(t, exitUsage, nil, []string{`key "abc" is not an integer key`})
	})
}
