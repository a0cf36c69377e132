#!/usr/bin/env bash
# Runs every test of tiercache on a fresh Debian machine: installs
# redis-server when it is missing, then go vet, short fuzz runs of the
# decoders of bytes read from Redis, one pass of every benchmark (so they
# keep working), and the race-enabled test suite, then that of bench/peers.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v go >/dev/null 2>&1 || export PATH="$PATH:/usr/local/go/bin"

if ! command -v redis-server >/dev/null 2>&1; then
	echo "redis-server not found: installing it (apt-get install -y redis-server)"
	if [ "$(id -u)" -eq 0 ]; then
		apt-get update && apt-get install -y redis-server
	else
		sudo apt-get update && sudo apt-get install -y redis-server
	fi
fi

go vet ./...
# Counted, not timed: Go 1.26's fuzz coordinator can report a bare
# "context deadline exceeded" when a -fuzztime duration runs out
# (golang/go#75804); a count has no deadline to race. About 10 s each here.
go test -run '^$' -fuzz '^FuzzDecodeValue$' -fuzztime 100000x ./codec/
go test -run '^$' -fuzz '^FuzzDecodeInvalidation$' -fuzztime 100000x ./bus/
go test -run '^$' -bench . -benchtime 1x ./...
go test -race -count=1 ./...
# bench/peers is a module of its own (the peers' dependencies stay out of
# the library's go.mod): its wiring and stale-read detector tests.
(cd bench/peers && go vet ./... && go test -race -count=1 ./...)
