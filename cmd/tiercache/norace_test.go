//go:build !race

package main

// raceEnabled reports whether the tests, and so the CLI they run, are built
// with the race detector, which keeps shadow memory for every byte of heap.
const raceEnabled = false
