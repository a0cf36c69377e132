package redistest

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"os"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// TestTLS: a client verified against CAFile is served; a plain-text client,
// and a client that trusts only OtherCAFile, are not; no plain-text
// listener exists.
func TestTLS(t *testing.T) {
	s := StartTLS(t)
	ctx, cancel := context.WithTimeout(context.Background(), readyTimeout)
	defer cancel()
	c := s.Client(t)
	if err := c.Set(ctx, "k", "v", 0).Err(); err != nil {
		t.Fatalf("Set over TLS = %v", err)
	}
	if got, err := c.Get(ctx, "k").Result(); err != nil || got != "v" {
		t.Errorf("Get over TLS = %q, %v; want v", got, err)
	}
	if got, err := c.ConfigGet(ctx, "port").Result(); err != nil || got["port"] != "0" {
		t.Errorf("CONFIG GET port = %v, %v; want 0 (no plain-text listener)", got, err)
	}

	t.Run("ClientCertificate", func(t *testing.T) {
		cert, err := tls.LoadX509KeyPair(s.ClientCertFile, s.ClientKeyFile)
		if err != nil {
			t.Fatal(err)
		}
		cfg := s.ClientTLS()
		cfg.Certificates = []tls.Certificate{cert}
		c := redis.NewClient(&redis.Options{Addr: s.Addr, TLSConfig: cfg})
		defer c.Close()
		if err := c.Ping(ctx).Err(); err != nil {
			t.Errorf("Ping with a client certificate = %v; want nil", err)
		}
	})

	t.Run("Plaintext", func(t *testing.T) {
		c := redis.NewClient(&redis.Options{Addr: s.Addr, MaxRetries: -1})
		defer c.Close()
		if err := c.Ping(ctx).Err(); err == nil {
			t.Error("plain-text Ping to the TLS port = nil; want an error")
		}
	})

	t.Run("OtherCA", func(t *testing.T) {
		pem, err := os.ReadFile(s.OtherCAFile)
		if err != nil {
			t.Fatal(err)
		}
		roots := x509.NewCertPool()
		if !roots.AppendCertsFromPEM(pem) {
			t.Fatalf("%s holds no certificate", s.OtherCAFile)
		}
		c := redis.NewClient(&redis.Options{
			Addr:       s.Addr,
			TLSConfig:  &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12},
			MaxRetries: -1,
		})
		defer c.Close()
		err = c.Ping(ctx).Err()
		if ua := (x509.UnknownAuthorityError{}); !errors.As(err, &ua) {
			t.Errorf("Ping trusting the other CA = %v; want an x509.UnknownAuthorityError", err)
		}
	})
}

// TestTLSRestart: Restart brings the TLS server back on its port with the
// same certificates.
func TestTLSRestart(t *testing.T) {
	s := StartTLS(t)
	addr := s.Addr
	s.Kill()
	if err := s.Restart(); err != nil {
		t.Fatalf("Restart = %v", err)
	}
	if s.Addr != addr {
		t.Errorf("Addr after Restart = %s; want %s", s.Addr, addr)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.Ping(ctx); err != nil {
		t.Errorf("TLS Ping after Restart = %v", err)
	}
}
