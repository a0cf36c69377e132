package tiercache

import (
	"fmt"
	"time"
)

// Defaults of WriteBehindConfig.
const (
	DefaultWriteBehindBatch      = 100
	DefaultWriteBehindInterval   = time.Second
	DefaultWriteBehindMaxTries   = 5
	DefaultWriteBehindClaimAfter = 30 * time.Second
)

// WriteBehindConfig configures write-behind (WithWriteBehind).
type WriteBehindConfig struct {
	// BatchSize is the most records handed to the BatchWriter at once.
	// Default DefaultWriteBehindBatch.
	BatchSize int `yaml:"batch_size" json:"batch_size"`
	// Interval is the longest a record waits before a flush. Default
	// DefaultWriteBehindInterval; at least a millisecond.
	Interval time.Duration `yaml:"interval" json:"interval"`
	// MaxTries is how many failed deliveries of a record send it to the
	// dead-letter stream. Default DefaultWriteBehindMaxTries.
	MaxTries int `yaml:"max_tries" json:"max_tries"`
	// ClaimAfter is how long a record may stay unacknowledged by the
	// replica that read it before another replica claims it. Default
	// DefaultWriteBehindClaimAfter.
	ClaimAfter time.Duration `yaml:"claim_after" json:"claim_after"`
}

func (w WriteBehindConfig) withDefaults() (WriteBehindConfig, error) {
	switch {
	case w.BatchSize < 0:
		return w, fmt.Errorf("%w: negative write_behind.batch_size %d", ErrInvalidConfig, w.BatchSize)
	case w.Interval < 0 || (w.Interval > 0 && w.Interval < time.Millisecond):
		return w, fmt.Errorf("%w: write_behind.interval %v is below a millisecond", ErrInvalidConfig, w.Interval)
	case w.MaxTries < 0:
		return w, fmt.Errorf("%w: negative write_behind.max_tries %d", ErrInvalidConfig, w.MaxTries)
	case w.ClaimAfter < 0:
		return w, fmt.Errorf("%w: negative write_behind.claim_after %v", ErrInvalidConfig, w.ClaimAfter)
	}
	if w.BatchSize == 0 {
		w.BatchSize = DefaultWriteBehindBatch
	}
	if w.Interval == 0 {
		w.Interval = DefaultWriteBehindInterval
	}
	if w.MaxTries == 0 {
		w.MaxTries = DefaultWriteBehindMaxTries
	}
	if w.ClaimAfter == 0 {
		w.ClaimAfter = DefaultWriteBehindClaimAfter
	}
	return w, nil
}
