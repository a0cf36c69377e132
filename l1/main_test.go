package l1

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package if a test leaves a goroutine behind: every Cache
// starts ristretto's goroutines, and Close must stop them.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
