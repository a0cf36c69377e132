package tiercache

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"

	"github.com/redis/go-redis/v9"
)

// TLSConfig configures TLS for the fx module's own Redis client
// (RedisConfig.TLS).
type TLSConfig struct {
	// Enabled turns TLS on.
	Enabled bool `yaml:"enabled" json:"enabled"`
	// CAFile is a PEM file of the CAs that verify the server; empty means
	// the system roots.
	CAFile string `yaml:"ca_file" json:"ca_file"`
	// CertFile and KeyFile are a PEM client certificate and its key, for
	// servers that verify clients (tls-auth-clients yes).
	CertFile string `yaml:"cert_file" json:"cert_file"`
	KeyFile  string `yaml:"key_file" json:"key_file"`
	// ServerName overrides the name verified in the server's certificate;
	// empty means the host of the address dialled.
	ServerName string `yaml:"server_name" json:"server_name"`
}

// Build returns the crypto/tls configuration that t describes, or nil, nil
// for the zero TLSConfig. Fields set without Enabled are an error, not a
// silent plain-text client. The server is always verified (TLS 1.2 at least),
// against the CAs of CAFile or else the system roots. It reads the files
// now: an unreadable CAFile, one holding no certificate, a client key pair
// that does not load, or only one of CertFile and KeyFile is an error
// wrapping ErrInvalidConfig.
func (t TLSConfig) Build() (*tls.Config, error) {
	if !t.Enabled {
		if t != (TLSConfig{}) {
			return nil, fmt.Errorf("%w: tls fields set but tls.enabled is false: the client would speak plain text", ErrInvalidConfig)
		}
		return nil, nil
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: t.ServerName}
	if t.CAFile != "" {
		b, err := os.ReadFile(t.CAFile)
		if err != nil {
			return nil, fmt.Errorf("%w: tls ca_file: %w", ErrInvalidConfig, err)
		}
		cfg.RootCAs = x509.NewCertPool()
		if !cfg.RootCAs.AppendCertsFromPEM(b) {
			return nil, fmt.Errorf("%w: tls ca_file %q holds no PEM certificate", ErrInvalidConfig, t.CAFile)
		}
	}
	switch {
	case (t.CertFile == "") != (t.KeyFile == ""):
		return nil, fmt.Errorf("%w: tls cert_file %q and key_file %q: set both or neither", ErrInvalidConfig, t.CertFile, t.KeyFile)
	case t.CertFile != "":
		cert, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("%w: tls cert_file %q, key_file %q: %w", ErrInvalidConfig, t.CertFile, t.KeyFile, err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg, nil
}

// ClientOptions returns the go-redis options of the fx module's own client:
// UniversalOptions with the TLS configuration of r.TLS (nil when TLS is
// off). Its errors are Build's.
func (r RedisConfig) ClientOptions() (*redis.UniversalOptions, error) {
	tc, err := r.TLS.Build()
	if err != nil {
		return nil, err
	}
	o := r.UniversalOptions()
	o.TLSConfig = tc
	return o, nil
}
