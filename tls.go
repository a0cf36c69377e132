package tiercache

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
