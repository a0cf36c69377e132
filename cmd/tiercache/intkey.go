package main

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"

	"github.com/redis/go-redis/v9"
)

// How get takes its KEY (--key-type).
const (
	keyTypeAuto   = "auto"
	keyTypeInt    = "int"
	keyTypeString = "string"
)

// Bounds of the sample of a keyspace's keys that tells get whether the
// keyspace holds integer keys.
const (
	sampleKeys   = 100 // keys looked at, at most
	sampleRounds = 10  // SCAN calls per server, at most
	sampleCount  = 500 // their COUNT hint
)

// isIntKey reports whether s is an integer key as tiercache writes one: a
// 64-bit integer in plain decimal (strconv.FormatInt or FormatUint: no
// '+', no leading zero, no "-0").
func isIntKey(s string) bool {
	if v, err := strconv.ParseInt(s, 10, 64); err == nil {
		return strconv.FormatInt(v, 10) == s
	}
	if v, err := strconv.ParseUint(s, 10, 64); err == nil {
		return strconv.FormatUint(v, 10) == s
	}
	return false
}

// intSpelling reports whether s reads as an integer written otherwise than
// tiercache writes integer keys: with blanks around it, a '+', leading
// zeros, "-0", digit separators ('_') or a base prefix (0x, 0o, 0b). It
// returns the key tiercache would write for it, "" when the integer does
// not fit in 64 bits.
func intSpelling(s string) (key string, ok bool) {
	if isIntKey(s) {
		return "", false
	}
	t := strings.TrimSpace(s)
	digits := strings.TrimLeft(t, "+-")
	if len(t)-len(digits) > 1 || digits == "" {
		return "", false
	}
	sign := t[:len(t)-len(digits)]
	base := 10
	switch p := strings.ToLower(digits); {
	case strings.HasPrefix(p, "0x"), strings.HasPrefix(p, "0o"), strings.HasPrefix(p, "0b"):
		base = 0
	case strings.Contains(digits, "_"):
		digits = strings.ReplaceAll(digits, "_", "")
	}
	num := strings.TrimPrefix(sign, "+") + digits
	if v, err := strconv.ParseInt(num, base, 64); err == nil {
		return strconv.FormatInt(v, 10), true
	} else if !errors.Is(err, strconv.ErrRange) {
		return "", false
	}
	if sign != "-" {
		if v, err := strconv.ParseUint(digits, base, 64); err == nil {
			return strconv.FormatUint(v, 10), true
		}
	}
	return "", true // all digits, beyond 64 bits
}

// checkKeyType checks key against --key-type before get reads Redis:
// with "int", a key that is not an integer as tiercache writes one is a
// usage error.
func checkKeyType(keyType, keyspace, key string) error {
	switch keyType {
	case keyTypeAuto, keyTypeString:
		return nil
	case keyTypeInt:
		if isIntKey(key) {
			return nil
		}
		if k, ok := intSpelling(key); ok && k != "" {
			return usageErrorf("key %q is not an integer key as tiercache writes one (--key-type int): write it %q", key, k)
		}
		return usageErrorf("key %q is not an integer key of 64 bits in plain decimal, such as 42 or -7 (--key-type int)", key)
	}
	return usageErrorf("--key-type %q: want %s, %s or %s", keyType, keyTypeAuto, keyTypeInt, keyTypeString)
}

// missingKey is get's error for key, not in Redis as rk: exitNotFound,
// unless --key-type auto finds that key cannot be a key of the keyspace, a
// usage error then. It samples the keyspace's keys first (sampleIntKeys):
// when they hold a key that is not an integer, the keyspace's keys are
// strings, and key is merely missing. Otherwise a key that reads as an
// integer written otherwise than tiercache writes integer keys (042, +42)
// cannot be one, and, when the sample found integers, neither can a key
// that is not an integer at all.
func missingKey(ctx context.Context, client redis.UniversalClient, ns, keyspace, key, rk, keyType string) error {
	notFound := notFoundErrorf("key %q of keyspace %q not found: Redis has no %q", key, keyspace, rk)
	if keyType != keyTypeAuto || isIntKey(key) {
		return notFound
	}
	n, ints, err := sampleIntKeys(ctx, client, ns, keyspace)
	if err != nil || !ints {
		return notFound
	}
	const orString = "--key-type string takes it as a string key: a miss then exits 3"
	holds := "the keyspace has no key to tell its type by"
	switch {
	case n == 1:
		holds = "the keyspace holds integer keys (the one key sampled is an integer in decimal)"
	case n > 1:
		holds = fmt.Sprintf("the keyspace holds integer keys (the %d keys sampled are all integers in decimal)", n)
	}
	k, spelt := intSpelling(key)
	switch {
	case spelt && k == "":
		return usageErrorf("key %q of keyspace %q is not in Redis, and it reads as an integer beyond the 64 bits of integer keys; %s (%s)", key, keyspace, holds, orString)
	case spelt:
		return usageErrorf("key %q of keyspace %q is not in Redis, and it reads as an integer written otherwise than tiercache writes integer keys: %q; %s (%s)", key, keyspace, k, holds, orString)
	case n > 0:
		return usageErrorf("key %q of keyspace %q is not in Redis, and it is not an integer, while %s: give one such as 42 (%s)", key, keyspace, holds, orString)
	}
	return notFound
}

// sampleIntKeys looks at up to sampleKeys keys of the keyspace, with a
// bounded SCAN, and reports how many it saw and whether they are all
// integer keys.
func sampleIntKeys(ctx context.Context, client redis.UniversalClient, ns, keyspace string) (n int, ints bool, err error) {
	prefix := ns + ":" + keyspace + ":"
	var mu sync.Mutex // protects n, ints
	ints = true
	_, err = scanBounded(ctx, client, globEscape(prefix)+"*", sampleCount, sampleRounds, func(keys []string) bool {
		mu.Lock()
		defer mu.Unlock()
		for _, k := range keys {
			if n == sampleKeys || !ints {
				return false
			}
			n++
			ints = isIntKey(strings.TrimPrefix(k, prefix))
		}
		return n < sampleKeys && ints
	})
	if err != nil {
		return 0, false, fmt.Errorf("sample the keys of keyspace %q: %w", keyspace, err)
	}
	return n, ints, nil
}
