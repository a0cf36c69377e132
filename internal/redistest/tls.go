package redistest

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// Files that NewTLS writes into the server's dir.
const (
	caFile         = "ca.pem"         // the CA that signed the server's certificate
	otherCAFile    = "other-ca.pem"   // an unrelated CA
	serverCertFile = "server.pem"     // the server's certificate
	serverKeyFile  = "server-key.pem" // and its key
	clientCertFile = "client.pem"     // a client certificate signed by the CA
	clientKeyFile  = "client-key.pem" // and its key
)

// Validity of the certificates that NewTLS makes.
const (
	certLifetime   = 24 * time.Hour   // from now
	certBackdating = 10 * time.Minute // NotBefore lies this far in the past, for clock skew
)

// TLSServer is a redis-server that serves only TLS: it has no plain-text
// listener. Its certificate, for IP 127.0.0.1 and DNS localhost, is signed
// by a CA made for it when it starts; nothing is read from the repository.
// Clients may present a certificate (tls-auth-clients optional), which must
// then be signed by the same CA.
//
// The embedded Server's Addr and Port are those of the TLS listener. Options,
// Client and Ping speak TLS; WaitReplicaOf does not and fails on it.
type TLSServer struct {
	*Server

	// CAFile is the PEM file of the CA that signed the server's certificate.
	CAFile string
	// OtherCAFile is the PEM file of an unrelated CA, which does not verify
	// the server: a client that trusts only it must fail the handshake.
	OtherCAFile string
	// ClientCertFile and ClientKeyFile are a PEM client certificate signed
	// by the CA of CAFile, and its key.
	ClientCertFile, ClientKeyFile string

	roots *x509.CertPool // the CA of CAFile
}

// NewTLS starts a TLS-only redis-server on a free loopback port with
// persistence off, and returns once a TLS client verified against CAFile
// gets a PONG. extra arguments are passed through as with New. The
// certificates and keys live in the server's dir and go with it on Stop.
// The caller must call Stop.
func NewTLS(extra ...string) (*TLSServer, error) {
	ca, err := newCA("redistest CA")
	if err != nil {
		return nil, err
	}
	other, err := newCA("redistest unrelated CA")
	if err != nil {
		return nil, err
	}
	server, err := ca.issue("127.0.0.1", x509.ExtKeyUsageServerAuth)
	if err != nil {
		return nil, err
	}
	client, err := ca.issue("redistest client", x509.ExtKeyUsageClientAuth)
	if err != nil {
		return nil, err
	}
	files := map[string][]byte{
		caFile:         ca.certPEM,
		otherCAFile:    other.certPEM,
		serverCertFile: server.certPEM,
		serverKeyFile:  server.keyPEM,
		clientCertFile: client.certPEM,
		clientKeyFile:  client.keyPEM,
	}
	s, err := newServer(spec{prepare: func(s *Server) ([]string, error) {
		for name, b := range files {
			if err := os.WriteFile(filepath.Join(s.dir, name), b, 0o600); err != nil {
				return nil, fmt.Errorf("redistest: write %s: %w", name, err)
			}
		}
		// --port 0 comes after the harness's own --port and wins: the
		// port found free goes to the TLS listener, and there is no other.
		return []string{
			"--port", "0",
			"--tls-port", strconv.Itoa(s.Port),
			"--tls-cert-file", filepath.Join(s.dir, serverCertFile),
			"--tls-key-file", filepath.Join(s.dir, serverKeyFile),
			"--tls-ca-cert-file", filepath.Join(s.dir, caFile),
			"--tls-auth-clients", "optional",
		}, nil
	}}, extra...)
	if err != nil {
		return nil, err
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca.cert)
	ts := &TLSServer{
		Server:         s,
		CAFile:         filepath.Join(s.dir, caFile),
		OtherCAFile:    filepath.Join(s.dir, otherCAFile),
		ClientCertFile: filepath.Join(s.dir, clientCertFile),
		ClientKeyFile:  filepath.Join(s.dir, clientKeyFile),
		roots:          roots,
	}
	ctx, cancel := context.WithTimeout(context.Background(), readyTimeout)
	defer cancel()
	if err := ts.Ping(ctx); err != nil {
		return nil, errors.Join(fmt.Errorf("redistest: TLS PING to %s: %w\n%s", s.Addr, err, s.Log()), s.Stop())
	}
	return ts, nil
}

// StartTLS is NewTLS for tests: it fails tb at once when the server cannot
// start and stops the server in tb.Cleanup.
func StartTLS(tb testing.TB, extra ...string) *TLSServer {
	tb.Helper()
	s, err := NewTLS(extra...)
	return started(tb, s, err, "TLS server")
}

// ClientTLS returns a TLS configuration that verifies the server against
// the CA of CAFile and presents no client certificate. Each call returns a
// new one.
func (s *TLSServer) ClientTLS() *tls.Config {
	return &tls.Config{RootCAs: s.roots, MinVersion: tls.VersionTLS12}
}

// Options returns go-redis options that reach s over TLS (ClientTLS).
func (s *TLSServer) Options() *redis.Options {
	return &redis.Options{Addr: s.Addr, TLSConfig: s.ClientTLS()}
}

// Client returns a go-redis TLS client for s that is closed in tb.Cleanup.
func (s *TLSServer) Client(tb testing.TB) *redis.Client {
	tb.Helper()
	c := redis.NewClient(s.Options())
	tb.Cleanup(func() { c.Close() })
	return c
}

// Ping checks that the server answers a TLS client on its address.
func (s *TLSServer) Ping(ctx context.Context) error {
	c := redis.NewClient(s.Options())
	defer c.Close()
	return c.Ping(ctx).Err()
}

// authority is a CA: a self-signed certificate and its key.
type authority struct {
	cert    *x509.Certificate
	key     *ecdsa.PrivateKey
	certPEM []byte
}

// leaf is a certificate issued by an authority, with its key, in PEM.
type leaf struct {
	certPEM, keyPEM []byte
}

// newCA makes a self-signed CA certificate named name.
func newCA(name string) (*authority, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("redistest: CA key: %w", err)
	}
	serial, err := newSerial()
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             now.Add(-certBackdating),
		NotAfter:              now.Add(certLifetime),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("redistest: CA certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("redistest: CA certificate: %w", err)
	}
	return &authority{cert: cert, key: key, certPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}, nil
}

// issue makes a certificate named name for usage, signed by a. A server
// certificate is valid for IP 127.0.0.1 and DNS localhost.
func (a *authority) issue(name string, usage x509.ExtKeyUsage) (*leaf, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("redistest: %s key: %w", name, err)
	}
	serial, err := newSerial()
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: name},
		NotBefore:    now.Add(-certBackdating),
		NotAfter:     now.Add(certLifetime),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{usage},
	}
	if usage == x509.ExtKeyUsageServerAuth {
		tmpl.IPAddresses = []net.IP{net.IPv4(127, 0, 0, 1)}
		tmpl.DNSNames = []string{"localhost"}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, a.cert, &key.PublicKey, a.key)
	if err != nil {
		return nil, fmt.Errorf("redistest: %s certificate: %w", name, err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("redistest: %s key: %w", name, err)
	}
	return &leaf{
		certPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		keyPEM:  pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}),
	}, nil
}

// newSerial returns a random 128-bit certificate serial number.
func newSerial() (*big.Int, error) {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		return nil, fmt.Errorf("redistest: certificate serial: %w", err)
	}
	return n, nil
}
