package tiercache

import (
	"fmt"
	"log/slog"
)

// redacted stands for a secret that is set, in logs and formatted values.
const redacted = "REDACTED"

// redact returns redacted for a secret that is set, and "" for none.
func redact(secret string) string {
	if secret == "" {
		return ""
	}
	return redacted
}

// LogValue makes slog log r without its password: addrs, master_name,
// username, password ("REDACTED" when set, "" when empty), db and tls
// (whether TLS is enabled).
func (r RedisConfig) LogValue() slog.Value {
	return slog.GroupValue(
		slog.Any("addrs", r.Addrs),
		slog.String("master_name", r.MasterName),
		slog.String("username", r.Username),
		slog.String("password", redact(r.Password)),
		slog.Int("db", r.DB),
		slog.Bool("tls", r.TLS.Enabled),
	)
}

// String formats r as LogValue logs it, without its password, for %v, %s
// and %+v (also when r is a field of a Config being formatted).
func (r RedisConfig) String() string {
	return fmt.Sprintf("{addrs:%q master_name:%q username:%q password:%q db:%d tls:%t}",
		r.Addrs, r.MasterName, r.Username, redact(r.Password), r.DB, r.TLS.Enabled)
}

// GoString is String for %#v, which would otherwise print every field.
func (r RedisConfig) GoString() string { return "tiercache.RedisConfig" + r.String() }

var _ slog.LogValuer = RedisConfig{}
