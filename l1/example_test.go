package l1_test

import (
	"fmt"
	"time"

	"github.com/tiercache/tiercache/l1"
)

// A fill snapshots the key's generation before it reads the source, and
// hands the snapshot to Set.
func Example() {
	c, err := l1.New[string, string](l1.Config{MaxCost: 1 << 20})
	if err != nil {
		panic(err)
	}
	defer c.Close()

	g := c.Snapshot("greeting") // before reading the source
	v := "hello"                // read the source (L2 or the database)
	c.Set("greeting", v, int64(len(v)), time.Minute, g)
	c.Wait() // Set is asynchronous; Wait makes it visible

	v, ok := c.Get("greeting")
	fmt.Printf("%q %t\n", v, ok)

	c.Invalidate("greeting") // after the source changed
	v, ok = c.Get("greeting")
	fmt.Printf("%q %t\n", v, ok)
	// Output:
	// "hello" true
	// "" false
}

// A fill that read the source before an invalidation is refused, even when
// it finishes after the invalidation.
func Example_staleFill() {
	c, err := l1.New[int64, string](l1.Config{MaxCost: 1 << 20})
	if err != nil {
		panic(err)
	}
	defer c.Close()

	g := c.Snapshot(42)
	v := "old name"  // read from the database ...
	c.Invalidate(42) // ... while another replica renamed user 42

	fmt.Println("stale fill accepted:", c.Set(42, v, int64(len(v)), 0, g))
	c.Wait()
	_, ok := c.Get(42)
	fmt.Println("hit:", ok)

	g = c.Snapshot(42)
	v = "new name"
	fmt.Println("fresh fill accepted:", c.Set(42, v, int64(len(v)), 0, g))
	c.Wait()
	v, ok = c.Get(42)
	fmt.Println("hit:", ok, v)
	// Output:
	// stale fill accepted: false
	// hit: false
	// fresh fill accepted: true
	// hit: true new name
}
