package tiercache

import (
	"fmt"
	"time"
)

// Defaults of CounterConfig.
const (
	DefaultCounterEvery    = 100
	DefaultCounterInterval = 10 * time.Second
)

// CounterConfig configures a keyspace's counters (WithCounter).
type CounterConfig struct {
	// Every flushes a key's count once it has this many increments not yet
	// flushed. Default DefaultCounterEvery.
	Every int64 `yaml:"every" json:"every"`
	// Interval flushes every count at least this often. Default
	// DefaultCounterInterval; at least a millisecond.
	Interval time.Duration `yaml:"interval" json:"interval"`
}

func (c CounterConfig) withDefaults() (CounterConfig, error) {
	switch {
	case c.Every < 0:
		return c, fmt.Errorf("%w: negative counter.every %d", ErrInvalidConfig, c.Every)
	case c.Interval < 0 || (c.Interval > 0 && c.Interval < time.Millisecond):
		return c, fmt.Errorf("%w: counter.interval %v is below a millisecond", ErrInvalidConfig, c.Interval)
	}
	if c.Every == 0 {
		c.Every = DefaultCounterEvery
	}
	if c.Interval == 0 {
		c.Interval = DefaultCounterInterval
	}
	return c, nil
}
