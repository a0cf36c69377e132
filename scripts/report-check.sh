#!/usr/bin/env bash
# Checks the catalog demo's HTML report in a real browser: renders it in
# headless Chromium at 1280x900 and 1920x1080 (a report built from fixed
# figures, one of extreme figures, and one from a short run of the demo on
# redis-server) and fails if any text leaves the window or its chart, is
# clipped, or overlaps another. Leaves the pages, the verdicts and
# screenshots (the window, and the whole page) in $REPORT_CHECK_OUT
# (default /tmp/tiercache-report-check).
#
# It installs nothing. It needs Go, redis-server and Chromium; on Debian or
# Ubuntu: apt-get install -y chromium redis-server. TIERCACHE_CHROMIUM may
# name the Chromium binary. About a minute.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v go >/dev/null 2>&1 || export PATH="$PATH:/usr/local/go/bin"

chromium="${TIERCACHE_CHROMIUM:-}"
if [ -z "$chromium" ]; then
	for c in chromium chromium-browser google-chrome google-chrome-stable; do
		if command -v "$c" >/dev/null 2>&1; then
			chromium="$(command -v "$c")"
			break
		fi
	done
fi
if [ -z "$chromium" ]; then
	echo "report-check: Chromium not found (looked for chromium, chromium-browser, google-chrome)." >&2
	echo "report-check: install it, e.g. on Debian or Ubuntu: apt-get install -y chromium" >&2
	echo "report-check: or set TIERCACHE_CHROMIUM to the path of a Chromium or Chrome binary." >&2
	exit 2
fi
if ! command -v redis-server >/dev/null 2>&1; then
	echo "report-check: redis-server not found: install it (apt-get install -y redis-server)." >&2
	exit 2
fi

out="${REPORT_CHECK_OUT:-/tmp/tiercache-report-check}"
mkdir -p "$out"
echo "report-check: $("$chromium" --version 2>/dev/null || echo "$chromium")"
TIERCACHE_CHROMIUM="$chromium" REPORT_CHECK_OUT="$out" \
	go test -tags chromium -count=1 -run '^TestReportInChromium$' -v ./examples/catalog/
echo "report-check: ok; pages, verdicts and screenshots in $out"
