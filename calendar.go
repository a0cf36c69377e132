package tiercache

import (
	"fmt"
	"strings"
	"time"
)

// Period is a calendar period to which the expiry of a keyspace's entries
// can be aligned: an entry written during a period expires at the end of
// that period, in a given time zone. The zero value, PeriodNone, means no
// alignment.
//
// Days start at local midnight, so a day that contains a daylight saving
// time change usually lasts 23 or 25 hours. Weeks are ISO 8601 weeks, which
// start on Monday.
//
// The methods of Period treat a value that is not one of the constants below
// like PeriodNone.
type Period string

// The calendar periods.
const (
	PeriodNone  Period = ""      // no calendar alignment
	PeriodDay   Period = "day"   // calendar day, from local midnight to local midnight
	PeriodWeek  Period = "week"  // ISO 8601 week, Monday to Sunday
	PeriodMonth Period = "month" // calendar month
	PeriodYear  Period = "year"  // calendar year
)

// ParsePeriod returns the Period named by s. It accepts "", "day", "week",
// "month" and "year", ignoring case and leading and trailing white space; the
// empty string gives PeriodNone. For any other value it returns PeriodNone
// and an error wrapping ErrInvalidConfig that names the value and the
// accepted ones.
func ParsePeriod(s string) (Period, error) {
	p := Period(strings.ToLower(strings.TrimSpace(s)))
	if !p.Valid() {
		return PeriodNone, fmt.Errorf(`%w: unknown calendar period %q (want "", "day", "week", "month" or "year")`,
			ErrInvalidConfig, s)
	}
	return p, nil
}

// Valid reports whether p is one of PeriodNone, PeriodDay, PeriodWeek,
// PeriodMonth and PeriodYear.
func (p Period) Valid() bool {
	switch p {
	case PeriodNone, PeriodDay, PeriodWeek, PeriodMonth, PeriodYear:
		return true
	}
	return false
}

// Start returns the first instant of the period of kind p that contains t,
// expressed in loc: local midnight of the period's first day, which for a
// week is the Monday. t is first converted to loc, and a nil loc means
// time.UTC. If local midnight does not exist on that day because a daylight
// saving time change skips it, Start returns the first instant that exists
// on that day, the moment of the change. For PeriodNone, Start returns t
// unchanged.
func (p Period) Start(t time.Time, loc *time.Location) time.Time {
	if loc == nil {
		loc = time.UTC
	}
	lt := t.In(loc)
	y, m, d := lt.Date()
	switch p {
	case PeriodDay:
		return dayStart(y, m, d, loc)
	case PeriodWeek:
		return dayStart(y, m, d-daysSinceMonday(lt), loc)
	case PeriodMonth:
		return dayStart(y, m, 1, loc)
	case PeriodYear:
		return dayStart(y, time.January, 1, loc)
	}
	return t
}

// End returns the exclusive end of the period of kind p that contains t,
// which is the first instant of the next period, expressed in loc (for a
// week, the next Monday at local midnight). t is first converted to loc, and
// a nil loc means time.UTC. For PeriodNone, End returns the zero Time.
func (p Period) End(t time.Time, loc *time.Location) time.Time {
	if loc == nil {
		loc = time.UTC
	}
	lt := t.In(loc)
	y, m, d := lt.Date()
	switch p {
	case PeriodDay:
		return dayStart(y, m, d+1, loc)
	case PeriodWeek:
		return dayStart(y, m, d-daysSinceMonday(lt)+7, loc)
	case PeriodMonth:
		return dayStart(y, m+1, 1, loc)
	case PeriodYear:
		return dayStart(y+1, time.January, 1, loc)
	}
	return time.Time{}
}

// Bucket returns the label of the period of kind p that contains t in loc,
// suitable as part of a cache key: "2024-06-10" for a day, "2024-W24" for an
// ISO week, "2024-06" for a month and "2024" for a year. The week number has
// two digits and is preceded by the ISO week-numbering year, which differs
// from the calendar year around January 1: 2021-01-03 is in "2020-W53" and
// 2024-12-30 in "2025-W01". t is first converted to loc, and a nil loc means
// time.UTC. For PeriodNone, Bucket returns "".
func (p Period) Bucket(t time.Time, loc *time.Location) string {
	if loc == nil {
		loc = time.UTC
	}
	lt := t.In(loc)
	switch p {
	case PeriodDay:
		return fmt.Sprintf("%04d-%02d-%02d", lt.Year(), lt.Month(), lt.Day())
	case PeriodWeek:
		y, w := lt.ISOWeek()
		return fmt.Sprintf("%04d-W%02d", y, w)
	case PeriodMonth:
		return fmt.Sprintf("%04d-%02d", lt.Year(), lt.Month())
	case PeriodYear:
		return fmt.Sprintf("%04d", lt.Year())
	}
	return ""
}

// TTLUntilEnd returns the time to live that makes an entry written at now
// expire slack after the end of its period: End(now, loc) + slack - now. The
// result is never less than one millisecond, so a negative slack that
// reaches back before now gives one millisecond. PeriodNone has no end, so
// for it TTLUntilEnd returns one millisecond; callers should check for
// PeriodNone first and use their own time to live.
func (p Period) TTLUntilEnd(now time.Time, loc *time.Location, slack time.Duration) time.Duration {
	const minTTL = time.Millisecond
	if p == PeriodNone || !p.Valid() {
		return minTTL
	}
	return max(p.End(now, loc).Add(slack).Sub(now), minTTL)
}

// daysSinceMonday returns the number of days from the Monday of t's week to
// t: 0 for a Monday, 6 for a Sunday.
func daysSinceMonday(t time.Time) int {
	return (int(t.Weekday()) + 6) % 7
}

// dayStart returns the first instant of the local calendar day y-m-d in loc.
// m and d may be out of range and are normalized as by time.Date, so
// dayStart(2024, 12, 32, loc) is the start of 2025-01-01.
//
// It starts from time.Date(y, m, d, 0, 0, 0, 0, loc), never from adding 24
// hours, so days with a daylight saving time change have their real length.
// For a local time that a zone transition skips or repeats, time.Date
// documents only that it returns a time that is correct in one of the two
// zones involved, without saying which. It reads the wall clock with the
// offset of one side of the transition, chosen by looking the wall clock up
// as if it were UTC, so the result differs between zones west and east of
// Greenwich (as of Go 1.26):
//
//   - A skipped midnight (America/Santiago on 2024-09-08, where clocks jump
//     from 00:00 -04 to 01:00 -03) read with the old offset gives an instant
//     after the gap: 01:00 on the right day (Asia/Beirut). Read with the new
//     offset it gives an instant before the gap: 23:00 on the previous day
//     (Santiago, America/Havana). dayStart moves that case forward to the
//     transition, the first instant of the day.
//   - A repeated midnight (Asia/Amman on 2021-10-29, where clocks go back
//     from 01:00 +03 to 00:00 +02) may give the second occurrence.
//     dayStart returns the first one, an hour earlier.
func dayStart(y int, m time.Month, d int, loc *time.Location) time.Time {
	want := time.Date(y, m, d, 0, 0, 0, 0, time.UTC) // the normalized date, as a UTC midnight
	t := time.Date(y, m, d, 0, 0, 0, 0, loc)
	if civilDate(t).Before(want) {
		// Midnight was skipped and t is just before the gap, on the
		// previous day. The day starts when the next zone period does.
		if _, end := t.ZoneBounds(); !end.IsZero() {
			t = end
		}
		return t
	}
	// Midnight may also have occurred earlier, just before a transition
	// that set clocks back. Try the offset in effect before t's zone period.
	start, _ := t.ZoneBounds()
	if start.IsZero() {
		return t
	}
	_, off := start.Add(-time.Nanosecond).Zone()
	earlier := want.Add(-time.Duration(off) * time.Second).In(loc)
	if earlier.Before(start) && isLocalMidnight(earlier, want) {
		t = earlier
	}
	return t
}

// civilDate returns the local calendar date of t as a UTC midnight.
func civilDate(t time.Time) time.Time {
	y, m, d := t.Date()
	return time.Date(y, m, d, 0, 0, 0, 0, time.UTC)
}

// isLocalMidnight reports whether the local clock of t reads 00:00:00 on the
// date of the UTC midnight day.
func isLocalMidnight(t, day time.Time) bool {
	h, mi, s := t.Clock()
	return h == 0 && mi == 0 && s == 0 && t.Nanosecond() == 0 && civilDate(t).Equal(day)
}
