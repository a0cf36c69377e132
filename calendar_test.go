package tiercache

import (
	"errors"
	"strings"
	"testing"
	"time"
	_ "time/tzdata" // so the zones load on machines without /usr/share/zoneinfo
)

// calLoc loads a time zone, failing the test if it is not available.
func calLoc(t *testing.T, name string) *time.Location {
	t.Helper()
	loc, err := time.LoadLocation(name)
	if err != nil {
		t.Fatalf("LoadLocation(%q): %v", name, err)
	}
	return loc
}

// calTime parses an RFC 3339 time with an explicit offset.
func calTime(t *testing.T, s string) time.Time {
	t.Helper()
	tm, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		t.Fatalf("parse %q: %v", s, err)
	}
	return tm
}

// calCase is one expectation for Start, End and Bucket. Times are RFC 3339
// strings with explicit offsets; an empty want field is not checked.
type calCase struct {
	name   string
	zone   string // "" means a nil *time.Location
	period Period
	t      string
	start  string
	end    string
	bucket string
	length time.Duration // End - Start, if not zero
}

func runCalCases(t *testing.T, cases []calCase) {
	t.Helper()
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var loc *time.Location
			want := time.UTC
			if c.zone != "" {
				loc = calLoc(t, c.zone)
				want = loc
			}
			tm := calTime(t, c.t)
			start, end := c.period.Start(tm, loc), c.period.End(tm, loc)
			if c.start != "" {
				if ws := calTime(t, c.start); !start.Equal(ws) {
					t.Errorf("Start(%s) = %s, want %s", tm, start, ws)
				}
			}
			if c.end != "" {
				if we := calTime(t, c.end); !end.Equal(we) {
					t.Errorf("End(%s) = %s, want %s", tm, end, we)
				}
			}
			if c.length != 0 {
				if got := end.Sub(start); got != c.length {
					t.Errorf("End - Start = %s, want %s", got, c.length)
				}
			}
			if c.bucket != "" {
				if got := c.period.Bucket(tm, loc); got != c.bucket {
					t.Errorf("Bucket(%s) = %q, want %q", tm, got, c.bucket)
				}
			}
			if start.Location() != want || end.Location() != want {
				t.Errorf("Start and End in %s and %s, want %s", start.Location(), end.Location(), want)
			}
			if start.After(tm) || !end.After(tm) {
				t.Errorf("want Start <= t < End, got %s, %s, %s", start, tm, end)
			}
		})
	}
}

func TestCalendarParsePeriod(t *testing.T) {
	good := []struct {
		in   string
		want Period
	}{
		{"", PeriodNone},
		{"   ", PeriodNone},
		{"day", PeriodDay},
		{"DAY", PeriodDay},
		{"  Week ", PeriodWeek},
		{"\tmonth\n", PeriodMonth},
		{"yEaR", PeriodYear},
	}
	for _, c := range good {
		got, err := ParsePeriod(c.in)
		if err != nil || got != c.want {
			t.Errorf("ParsePeriod(%q) = %q, %v; want %q, nil", c.in, got, err, c.want)
		}
	}

	for _, in := range []string{"fortnight", "weekly", "days", "d", "mon th", "year!", "none"} {
		got, err := ParsePeriod(in)
		if !errors.Is(err, ErrInvalidConfig) {
			t.Errorf("ParsePeriod(%q) error = %v, want one wrapping ErrInvalidConfig", in, err)
			continue
		}
		if got != PeriodNone {
			t.Errorf("ParsePeriod(%q) = %q with an error, want PeriodNone", in, got)
		}
		msg := err.Error()
		for _, part := range []string{`"` + in + `"`, `"day"`, `"week"`, `"month"`, `"year"`} {
			if !strings.Contains(msg, part) {
				t.Errorf("ParsePeriod(%q) error %q does not mention %s", in, msg, part)
			}
		}
	}
}

func TestCalendarValid(t *testing.T) {
	for _, c := range []struct {
		p    Period
		want bool
	}{
		{PeriodNone, true},
		{PeriodDay, true},
		{PeriodWeek, true},
		{PeriodMonth, true},
		{PeriodYear, true},
		{"Day", false},
		{" day", false},
		{"weekly", false},
		{"fortnight", false},
	} {
		if got := c.p.Valid(); got != c.want {
			t.Errorf("Period(%q).Valid() = %v, want %v", c.p, got, c.want)
		}
	}
}

func TestCalendarNoneAndInvalid(t *testing.T) {
	berlin := calLoc(t, "Europe/Berlin")
	tm := calTime(t, "2024-06-10T12:34:56.789+09:00")
	for _, p := range []Period{PeriodNone, "weekly"} {
		if got := p.Start(tm, berlin); got != tm {
			t.Errorf("Period(%q).Start = %v, want t unchanged (%v)", p, got, tm)
		}
		if got := p.End(tm, berlin); !got.IsZero() {
			t.Errorf("Period(%q).End = %v, want the zero time", p, got)
		}
		if got := p.Bucket(tm, berlin); got != "" {
			t.Errorf("Period(%q).Bucket = %q, want \"\"", p, got)
		}
		if got := p.TTLUntilEnd(tm, berlin, time.Hour); got != time.Millisecond {
			t.Errorf("Period(%q).TTLUntilEnd = %s, want 1ms", p, got)
		}
	}
}

func TestCalendarDST(t *testing.T) {
	runCalCases(t, []calCase{
		// Europe/Berlin springs forward at 02:00 on 2024-03-31 and falls
		// back at 03:00 on 2024-10-27.
		{name: "Berlin spring forward day", zone: "Europe/Berlin", period: PeriodDay,
			t:     "2024-03-31T12:00:00+02:00",
			start: "2024-03-31T00:00:00+01:00", end: "2024-04-01T00:00:00+02:00",
			bucket: "2024-03-31", length: 23 * time.Hour},
		{name: "Berlin spring forward before the change", zone: "Europe/Berlin", period: PeriodDay,
			t:     "2024-03-31T01:59:59+01:00",
			start: "2024-03-31T00:00:00+01:00", end: "2024-04-01T00:00:00+02:00",
			bucket: "2024-03-31", length: 23 * time.Hour},
		{name: "Berlin day before spring forward", zone: "Europe/Berlin", period: PeriodDay,
			t:     "2024-03-30T23:59:59.999999999+01:00",
			start: "2024-03-30T00:00:00+01:00", end: "2024-03-31T00:00:00+01:00",
			bucket: "2024-03-30", length: 24 * time.Hour},
		{name: "Berlin fall back day first 02:30", zone: "Europe/Berlin", period: PeriodDay,
			t:     "2024-10-27T02:30:00+02:00",
			start: "2024-10-27T00:00:00+02:00", end: "2024-10-28T00:00:00+01:00",
			bucket: "2024-10-27", length: 25 * time.Hour},
		{name: "Berlin fall back day second 02:30", zone: "Europe/Berlin", period: PeriodDay,
			t:     "2024-10-27T02:30:00+01:00",
			start: "2024-10-27T00:00:00+02:00", end: "2024-10-28T00:00:00+01:00",
			bucket: "2024-10-27", length: 25 * time.Hour},
		{name: "Berlin week with spring forward", zone: "Europe/Berlin", period: PeriodWeek,
			t:     "2024-03-31T23:00:00+02:00",
			start: "2024-03-25T00:00:00+01:00", end: "2024-04-01T00:00:00+02:00",
			bucket: "2024-W13", length: 7*24*time.Hour - time.Hour},
		{name: "Berlin month with fall back", zone: "Europe/Berlin", period: PeriodMonth,
			t:     "2024-10-27T02:30:00+01:00",
			start: "2024-10-01T00:00:00+02:00", end: "2024-11-01T00:00:00+01:00",
			bucket: "2024-10", length: 31*24*time.Hour + time.Hour},
		{name: "Berlin year", zone: "Europe/Berlin", period: PeriodYear,
			t:     "2024-07-01T00:00:00+02:00",
			start: "2024-01-01T00:00:00+01:00", end: "2025-01-01T00:00:00+01:00",
			bucket: "2024", length: 366 * 24 * time.Hour},

		// America/New_York springs forward at 02:00 on 2024-03-10 and falls
		// back at 02:00 on 2024-11-03.
		{name: "New York spring forward day", zone: "America/New_York", period: PeriodDay,
			t:     "2024-03-10T03:00:00-04:00",
			start: "2024-03-10T00:00:00-05:00", end: "2024-03-11T00:00:00-04:00",
			bucket: "2024-03-10", length: 23 * time.Hour},
		{name: "New York fall back day", zone: "America/New_York", period: PeriodDay,
			t:     "2024-11-03T01:30:00-05:00",
			start: "2024-11-03T00:00:00-04:00", end: "2024-11-04T00:00:00-05:00",
			bucket: "2024-11-03", length: 25 * time.Hour},
		{name: "New York fall back week", zone: "America/New_York", period: PeriodWeek,
			t:     "2024-11-03T23:59:59-05:00",
			start: "2024-10-28T00:00:00-04:00", end: "2024-11-04T00:00:00-05:00",
			bucket: "2024-W44", length: 7*24*time.Hour + time.Hour},
		{name: "New York from UTC", zone: "America/New_York", period: PeriodDay,
			t:     "2024-03-11T03:59:59Z", // 23:59:59 EDT on 2024-03-10
			start: "2024-03-10T00:00:00-05:00", end: "2024-03-11T00:00:00-04:00",
			bucket: "2024-03-10"},
	})
}

// TestPeriodMidnightTransition covers zones whose clocks change at midnight,
// where time.Date(y, m, d, 0, 0, 0, 0, loc) alone does not give the first
// instant of the day.
func TestCalendarMidnightTransition(t *testing.T) {
	runCalCases(t, []calCase{
		// America/Santiago: on 2024-09-08 clocks jump from 00:00 -04 to
		// 01:00 -03, so the day starts at 01:00. time.Date returns 23:00 -04
		// on 2024-09-07 for the missing midnight.
		{name: "Santiago gap day", zone: "America/Santiago", period: PeriodDay,
			t:     "2024-09-08T12:00:00-03:00",
			start: "2024-09-08T01:00:00-03:00", end: "2024-09-09T00:00:00-03:00",
			bucket: "2024-09-08", length: 23 * time.Hour},
		{name: "Santiago gap day first instant", zone: "America/Santiago", period: PeriodDay,
			t:     "2024-09-08T01:00:00-03:00",
			start: "2024-09-08T01:00:00-03:00", end: "2024-09-09T00:00:00-03:00",
			bucket: "2024-09-08"},
		{name: "Santiago day before gap", zone: "America/Santiago", period: PeriodDay,
			t:     "2024-09-07T23:59:59.999999999-04:00",
			start: "2024-09-07T00:00:00-04:00", end: "2024-09-08T01:00:00-03:00",
			bucket: "2024-09-07", length: 24 * time.Hour},
		{name: "Santiago week ending on gap day", zone: "America/Santiago", period: PeriodWeek,
			t:     "2024-09-08T01:00:00-03:00",
			start: "2024-09-02T00:00:00-04:00", end: "2024-09-09T00:00:00-03:00",
			bucket: "2024-W36", length: 7*24*time.Hour - time.Hour},
		// On 2024-04-07 Santiago sets clocks back from 00:00 -03 to 23:00 -04
		// on 2024-04-06, so that day lasts 25 hours and midnight exists once.
		{name: "Santiago fall back day", zone: "America/Santiago", period: PeriodDay,
			t:     "2024-04-06T23:30:00-04:00",
			start: "2024-04-06T00:00:00-03:00", end: "2024-04-07T00:00:00-04:00",
			bucket: "2024-04-06", length: 25 * time.Hour},
		{name: "Santiago day after fall back", zone: "America/Santiago", period: PeriodDay,
			t:     "2024-04-07T00:00:00-04:00",
			start: "2024-04-07T00:00:00-04:00", end: "2024-04-08T00:00:00-04:00",
			bucket: "2024-04-07", length: 24 * time.Hour},

		// America/Havana jumps from 00:00 CST to 01:00 CDT on 2024-03-10.
		{name: "Havana gap day", zone: "America/Havana", period: PeriodDay,
			t:     "2024-03-10T01:00:00-04:00",
			start: "2024-03-10T01:00:00-04:00", end: "2024-03-11T00:00:00-04:00",
			bucket: "2024-03-10", length: 23 * time.Hour},
		{name: "Havana month with gap day", zone: "America/Havana", period: PeriodMonth,
			t:     "2024-03-10T01:00:00-04:00",
			start: "2024-03-01T00:00:00-05:00", end: "2024-04-01T00:00:00-04:00",
			bucket: "2024-03"},
		// Havana falls back from 01:00 CDT to 00:00 CST on 2024-11-03, so
		// midnight occurs twice; the day starts at the first one.
		{name: "Havana repeated midnight", zone: "America/Havana", period: PeriodDay,
			t:     "2024-11-03T00:30:00-05:00",
			start: "2024-11-03T00:00:00-04:00", end: "2024-11-04T00:00:00-05:00",
			bucket: "2024-11-03", length: 25 * time.Hour},

		// Asia/Beirut jumps from 00:00 EET to 01:00 EEST on 2024-03-31.
		// time.Date returns 01:00 EEST here, the right instant.
		{name: "Beirut gap day", zone: "Asia/Beirut", period: PeriodDay,
			t:     "2024-03-31T01:00:00+03:00",
			start: "2024-03-31T01:00:00+03:00", end: "2024-04-01T00:00:00+03:00",
			bucket: "2024-03-31", length: 23 * time.Hour},
		{name: "Beirut day before gap", zone: "Asia/Beirut", period: PeriodDay,
			t:     "2024-03-30T23:59:59+02:00",
			start: "2024-03-30T00:00:00+02:00", end: "2024-03-31T01:00:00+03:00",
			bucket: "2024-03-30", length: 24 * time.Hour},

		// Asia/Amman falls back from 01:00 EEST to 00:00 EET on 2021-10-29,
		// so midnight occurs twice. time.Date returns the second one; the
		// day starts at the first.
		{name: "Amman repeated midnight first hour", zone: "Asia/Amman", period: PeriodDay,
			t:     "2021-10-29T00:30:00+03:00",
			start: "2021-10-29T00:00:00+03:00", end: "2021-10-30T00:00:00+02:00",
			bucket: "2021-10-29", length: 25 * time.Hour},
		{name: "Amman repeated midnight second hour", zone: "Asia/Amman", period: PeriodDay,
			t:     "2021-10-29T00:30:00+02:00",
			start: "2021-10-29T00:00:00+03:00", end: "2021-10-30T00:00:00+02:00",
			bucket: "2021-10-29", length: 25 * time.Hour},
		{name: "Amman day before repeated midnight", zone: "Asia/Amman", period: PeriodDay,
			t:     "2021-10-28T23:59:59+03:00",
			start: "2021-10-28T00:00:00+03:00", end: "2021-10-29T00:00:00+03:00",
			bucket: "2021-10-28", length: 24 * time.Hour},
	})
}

func TestCalendarISOWeek(t *testing.T) {
	runCalCases(t, []calCase{
		{name: "Monday", period: PeriodWeek, t: "2024-06-10T00:00:00Z",
			start: "2024-06-10T00:00:00Z", end: "2024-06-17T00:00:00Z", bucket: "2024-W24"},
		{name: "Sunday last instant", period: PeriodWeek, t: "2024-06-16T23:59:59.999999999Z",
			start: "2024-06-10T00:00:00Z", end: "2024-06-17T00:00:00Z", bucket: "2024-W24"},
		{name: "zero padded", period: PeriodWeek, t: "2024-01-03T12:00:00Z",
			start: "2024-01-01T00:00:00Z", end: "2024-01-08T00:00:00Z", bucket: "2024-W01"},

		// 2020 has 53 ISO weeks; week 53 runs to 2021-01-03.
		{name: "2020-12-31 in 2020-W53", period: PeriodWeek, t: "2020-12-31T12:00:00Z",
			start: "2020-12-28T00:00:00Z", end: "2021-01-04T00:00:00Z", bucket: "2020-W53"},
		{name: "2021-01-03 in 2020-W53", period: PeriodWeek, t: "2021-01-03T23:00:00Z",
			start: "2020-12-28T00:00:00Z", end: "2021-01-04T00:00:00Z", bucket: "2020-W53"},
		{name: "2021-01-04 in 2021-W01", period: PeriodWeek, t: "2021-01-04T00:00:00Z",
			start: "2021-01-04T00:00:00Z", end: "2021-01-11T00:00:00Z", bucket: "2021-W01"},

		// 2026 has 53 ISO weeks; week 53 runs to 2027-01-03.
		{name: "2026-12-31 in 2026-W53", period: PeriodWeek, t: "2026-12-31T12:00:00Z",
			start: "2026-12-28T00:00:00Z", end: "2027-01-04T00:00:00Z", bucket: "2026-W53"},
		{name: "2027-01-01 in 2026-W53", period: PeriodWeek, t: "2027-01-01T00:00:00Z",
			start: "2026-12-28T00:00:00Z", end: "2027-01-04T00:00:00Z", bucket: "2026-W53"},
		{name: "2027-01-02 in 2026-W53", period: PeriodWeek, t: "2027-01-02T12:00:00Z",
			start: "2026-12-28T00:00:00Z", end: "2027-01-04T00:00:00Z", bucket: "2026-W53"},
		{name: "2027-01-03 in 2026-W53", period: PeriodWeek, t: "2027-01-03T23:59:59Z",
			start: "2026-12-28T00:00:00Z", end: "2027-01-04T00:00:00Z", bucket: "2026-W53"},
		{name: "2027-01-04 in 2027-W01", period: PeriodWeek, t: "2027-01-04T00:00:00Z",
			start: "2027-01-04T00:00:00Z", end: "2027-01-11T00:00:00Z", bucket: "2027-W01"},

		// Week 1 of 2025 starts in December 2024.
		{name: "2024-12-29 in 2024-W52", period: PeriodWeek, t: "2024-12-29T23:59:59Z",
			start: "2024-12-23T00:00:00Z", end: "2024-12-30T00:00:00Z", bucket: "2024-W52"},
		{name: "2024-12-30 in 2025-W01", period: PeriodWeek, t: "2024-12-30T00:00:00Z",
			start: "2024-12-30T00:00:00Z", end: "2025-01-06T00:00:00Z", bucket: "2025-W01"},
		{name: "2025-01-05 in 2025-W01", period: PeriodWeek, t: "2025-01-05T12:00:00Z",
			start: "2024-12-30T00:00:00Z", end: "2025-01-06T00:00:00Z", bucket: "2025-W01"},

		// The week is that of the local date, not of UTC.
		{name: "Tokyo Monday while UTC Sunday", zone: "Asia/Tokyo", period: PeriodWeek,
			t:     "2024-12-29T20:00:00Z", // 2024-12-30 05:00 JST, a Monday
			start: "2024-12-30T00:00:00+09:00", end: "2025-01-06T00:00:00+09:00", bucket: "2025-W01"},
		{name: "New York Sunday while UTC Monday", zone: "America/New_York", period: PeriodWeek,
			t:     "2024-12-30T03:00:00Z", // 2024-12-29 22:00 EST, a Sunday
			start: "2024-12-23T00:00:00-05:00", end: "2024-12-30T00:00:00-05:00", bucket: "2024-W52"},
	})
}

func TestCalendarLeapYears(t *testing.T) {
	const day = 24 * time.Hour
	runCalCases(t, []calCase{
		{name: "2024-02-29 day", period: PeriodDay, t: "2024-02-29T13:00:00Z",
			start: "2024-02-29T00:00:00Z", end: "2024-03-01T00:00:00Z", bucket: "2024-02-29", length: day},
		{name: "2024-02-28 day", period: PeriodDay, t: "2024-02-28T13:00:00Z",
			end: "2024-02-29T00:00:00Z", bucket: "2024-02-28"},
		{name: "February 2024", period: PeriodMonth, t: "2024-02-29T23:59:59Z",
			start: "2024-02-01T00:00:00Z", end: "2024-03-01T00:00:00Z", bucket: "2024-02", length: 29 * day},
		{name: "February 2023", period: PeriodMonth, t: "2023-02-28T23:59:59Z",
			start: "2023-02-01T00:00:00Z", end: "2023-03-01T00:00:00Z", bucket: "2023-02", length: 28 * day},
		{name: "2023-02-28 day", period: PeriodDay, t: "2023-02-28T12:00:00Z",
			end: "2023-03-01T00:00:00Z", bucket: "2023-02-28"},
		{name: "February 2100 not leap", period: PeriodMonth, t: "2100-02-15T00:00:00Z",
			start: "2100-02-01T00:00:00Z", end: "2100-03-01T00:00:00Z", bucket: "2100-02", length: 28 * day},
		{name: "2100-02-28 day", period: PeriodDay, t: "2100-02-28T12:00:00Z",
			end: "2100-03-01T00:00:00Z", bucket: "2100-02-28"},
		{name: "February 2000 leap", period: PeriodMonth, t: "2000-02-29T12:00:00Z",
			start: "2000-02-01T00:00:00Z", end: "2000-03-01T00:00:00Z", bucket: "2000-02", length: 29 * day},
		{name: "2000-02-29 day", period: PeriodDay, t: "2000-02-29T12:00:00Z",
			end: "2000-03-01T00:00:00Z", bucket: "2000-02-29"},
		{name: "year 2024", period: PeriodYear, t: "2024-02-29T00:00:00Z",
			start: "2024-01-01T00:00:00Z", end: "2025-01-01T00:00:00Z", bucket: "2024", length: 366 * day},
		{name: "year 2023", period: PeriodYear, t: "2023-06-01T00:00:00Z",
			length: 365 * day, bucket: "2023"},
		{name: "year 2100", period: PeriodYear, t: "2100-06-01T00:00:00Z",
			start: "2100-01-01T00:00:00Z", end: "2101-01-01T00:00:00Z", bucket: "2100", length: 365 * day},
		{name: "year 2000", period: PeriodYear, t: "2000-06-01T00:00:00Z",
			length: 366 * day, bucket: "2000"},
		{name: "Berlin February 2024", zone: "Europe/Berlin", period: PeriodMonth, t: "2024-02-29T23:30:00+01:00",
			start: "2024-02-01T00:00:00+01:00", end: "2024-03-01T00:00:00+01:00", bucket: "2024-02", length: 29 * day},
	})
}

func TestCalendarYearEnd(t *testing.T) {
	runCalCases(t, []calCase{
		{name: "Berlin last millisecond day", zone: "Europe/Berlin", period: PeriodDay,
			t:     "2024-12-31T23:59:59.999+01:00",
			start: "2024-12-31T00:00:00+01:00", end: "2025-01-01T00:00:00+01:00", bucket: "2024-12-31"},
		{name: "Berlin last millisecond month", zone: "Europe/Berlin", period: PeriodMonth,
			t:     "2024-12-31T23:59:59.999+01:00",
			start: "2024-12-01T00:00:00+01:00", end: "2025-01-01T00:00:00+01:00", bucket: "2024-12"},
		{name: "Berlin last millisecond year", zone: "Europe/Berlin", period: PeriodYear,
			t:     "2024-12-31T23:59:59.999+01:00",
			start: "2024-01-01T00:00:00+01:00", end: "2025-01-01T00:00:00+01:00", bucket: "2024"},
		{name: "Berlin first instant of year", zone: "Europe/Berlin", period: PeriodYear,
			t:     "2025-01-01T00:00:00+01:00",
			start: "2025-01-01T00:00:00+01:00", end: "2026-01-01T00:00:00+01:00", bucket: "2025"},
		{name: "UTC last nanosecond year", period: PeriodYear,
			t:     "2024-12-31T23:59:59.999999999Z",
			start: "2024-01-01T00:00:00Z", end: "2025-01-01T00:00:00Z", bucket: "2024"},

		// 2024-12-31T23:30Z is 2025-01-01 08:30 in Tokyo.
		{name: "Tokyo already next year", zone: "Asia/Tokyo", period: PeriodYear,
			t:     "2024-12-31T23:30:00Z",
			start: "2025-01-01T00:00:00+09:00", end: "2026-01-01T00:00:00+09:00", bucket: "2025"},
		{name: "Tokyo already next month", zone: "Asia/Tokyo", period: PeriodMonth,
			t: "2024-12-31T23:30:00Z", end: "2025-02-01T00:00:00+09:00", bucket: "2025-01"},
		{name: "Tokyo already next day", zone: "Asia/Tokyo", period: PeriodDay,
			t: "2024-12-31T23:30:00Z", start: "2025-01-01T00:00:00+09:00", bucket: "2025-01-01"},
		{name: "UTC still this year", period: PeriodYear,
			t: "2024-12-31T23:30:00Z", end: "2025-01-01T00:00:00Z", bucket: "2024"},
		// 2025-01-01T03:00Z is still 2024-12-31 22:00 in New York.
		{name: "New York still this year", zone: "America/New_York", period: PeriodYear,
			t: "2025-01-01T03:00:00Z", end: "2025-01-01T00:00:00-05:00", bucket: "2024"},
	})
}

func TestCalendarTTLUntilEnd(t *testing.T) {
	for _, c := range []struct {
		name   string
		zone   string
		period Period
		now    string
		slack  time.Duration
		want   time.Duration
	}{
		{"UTC day", "", PeriodDay, "2024-06-10T18:00:00Z", 0, 6 * time.Hour},
		{"UTC day with slack", "", PeriodDay, "2024-06-10T18:00:00Z", 5 * time.Minute, 6*time.Hour + 5*time.Minute},
		{"UTC week", "", PeriodWeek, "2024-06-16T12:00:00Z", 0, 12 * time.Hour},
		{"UTC month leap", "", PeriodMonth, "2024-02-28T12:00:00Z", time.Second, 36*time.Hour + time.Second},
		{"UTC year", "", PeriodYear, "2024-12-31T23:00:00Z", 30 * time.Second, time.Hour + 30*time.Second},
		{"Berlin spring forward", "Europe/Berlin", PeriodDay, "2024-03-31T00:00:00+01:00", 0, 23 * time.Hour},
		{"Berlin spring forward with slack", "Europe/Berlin", PeriodDay, "2024-03-31T00:00:00+01:00", 10 * time.Minute, 23*time.Hour + 10*time.Minute},
		{"Berlin fall back", "Europe/Berlin", PeriodDay, "2024-10-27T00:00:00+02:00", time.Minute, 25*time.Hour + time.Minute},
		{"New York fall back afternoon", "America/New_York", PeriodDay, "2024-11-03T12:00:00-05:00", 0, 12 * time.Hour},
		{"Santiago gap day", "America/Santiago", PeriodDay, "2024-09-08T01:00:00-03:00", 0, 23 * time.Hour},
		{"Tokyo year from UTC", "Asia/Tokyo", PeriodYear, "2025-12-31T14:00:00Z", 0, time.Hour},
		{"exactly two milliseconds", "", PeriodDay, "2024-06-10T23:59:59.998Z", 0, 2 * time.Millisecond},
		{"half a millisecond", "", PeriodDay, "2024-06-10T23:59:59.9995Z", 0, time.Millisecond},
		{"one nanosecond", "", PeriodDay, "2024-06-10T23:59:59.999999999Z", 0, time.Millisecond},
		{"negative slack past end", "", PeriodDay, "2024-06-10T23:30:00Z", -time.Hour, time.Millisecond},
		{"negative slack before end", "", PeriodDay, "2024-06-10T22:00:00Z", -time.Hour, time.Hour},
		{"none", "", PeriodNone, "2024-06-10T22:00:00Z", time.Hour, time.Millisecond},
	} {
		t.Run(c.name, func(t *testing.T) {
			var loc *time.Location
			if c.zone != "" {
				loc = calLoc(t, c.zone)
			}
			now := calTime(t, c.now)
			if got := c.period.TTLUntilEnd(now, loc, c.slack); got != c.want {
				t.Errorf("TTLUntilEnd(%s, %s) = %s, want %s", now, c.slack, got, c.want)
			}
		})
	}
}

// TestPeriodProperties checks, for instants every 7h13m from 2019 to 2028
// in several zones, that Start(t) <= t < End(t), that End(t) starts the next
// period, and that the bucket changes exactly there.
func TestCalendarProperties(t *testing.T) {
	zones := []string{"UTC", "Europe/Berlin", "America/New_York", "America/Santiago",
		"America/Havana", "Asia/Beirut", "Asia/Amman", "Asia/Tokyo", "Australia/Lord_Howe"}
	periods := []Period{PeriodDay, PeriodWeek, PeriodMonth, PeriodYear}
	from := time.Date(2019, 1, 1, 0, 0, 0, 0, time.UTC)
	to := time.Date(2029, 1, 1, 0, 0, 0, 0, time.UTC)
	step := 7*time.Hour + 13*time.Minute // not a divisor of a day, so the clock times vary
	if testing.Short() {
		step = 31*time.Hour + 13*time.Minute
	}
	for _, zone := range zones {
		loc := calLoc(t, zone)
		t.Run(zone, func(t *testing.T) {
			t.Parallel()
			failures := 0
			for tm := from; tm.Before(to); tm = tm.Add(step) {
				for _, p := range periods {
					start, end := p.Start(tm, loc), p.End(tm, loc)
					b := p.Bucket(tm, loc)
					var problems []string
					if start.After(tm) || !tm.Before(end) {
						problems = append(problems, "not Start <= t < End")
					}
					if s := p.Start(end, loc); !s.Equal(end) {
						problems = append(problems, "Start(End) = "+s.String())
					}
					if s := p.Start(start, loc); !s.Equal(start) {
						problems = append(problems, "Start(Start) = "+s.String())
					}
					if got := p.Bucket(start, loc); got != b {
						problems = append(problems, "Bucket(Start) = "+got)
					}
					if got := p.Bucket(end, loc); got == b {
						problems = append(problems, "Bucket(End) = Bucket(t)")
					}
					if got := p.Bucket(end.Add(-time.Nanosecond), loc); got != b {
						problems = append(problems, "Bucket(End - 1ns) = "+got)
					}
					if p == PeriodDay {
						if h := end.Sub(start); h < 22*time.Hour || h > 26*time.Hour {
							problems = append(problems, "day lasts "+h.String())
						}
					}
					if start.Location() != loc || end.Location() != loc {
						problems = append(problems, "Start or End not in loc")
					}
					if len(problems) > 0 {
						t.Errorf("%s t=%s (%s): Start=%s End=%s Bucket=%q: %s",
							p, tm.Format(time.RFC3339), tm.In(loc), start, end, b, strings.Join(problems, "; "))
						if failures++; failures > 20 {
							t.Fatal("too many failures")
						}
					}
				}
			}
		})
	}
}
