// Package bench measures imagegate beside the tools a user would otherwise
// use: skopeo, the docker CLI and Debian's distribution registry. Each
// benchmark is a Go benchmark run once (`make bench` passes -benchtime=1x),
// starts its own daemons through internal/testenv, and prints a small table
// with times, throughput, memory and the ratio against the alternative.
// Nothing here asserts on time: the numbers are for reading.
package bench

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"text/tabwriter"
	"time"
)

var printMu sync.Mutex

// Table prints a titled table to stdout: rows of cells, the first row a
// header.
func Table(title string, rows [][]string) { FprintTable(os.Stdout, title, rows) }

// FprintTable prints a titled table to w.
func FprintTable(w io.Writer, title string, rows [][]string) {
	printMu.Lock()
	defer printMu.Unlock()
	fmt.Fprintf(w, "\n== %s\n", title)
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	for _, r := range rows {
		fmt.Fprintln(tw, strings.Join(r, "\t"))
	}
	tw.Flush()
}

// Ratio formats a/b as "2.31x", or "n/a" when b is zero.
func Ratio(a, b float64) string {
	if b == 0 {
		return "n/a"
	}
	return fmt.Sprintf("%.2fx", a/b)
}

// Seconds formats a duration in seconds with millisecond precision.
func Seconds(d time.Duration) string { return fmt.Sprintf("%.3fs", d.Seconds()) }

// MBps formats a throughput in MB/s (10^6 bytes per second).
func MBps(bytes int64, d time.Duration) string {
	if d <= 0 {
		return "n/a"
	}
	return fmt.Sprintf("%.1f MB/s", float64(bytes)/1e6/d.Seconds())
}

// MiB formats a byte count in MiB.
func MiB(bytes int64) string { return fmt.Sprintf("%.1f MiB", float64(bytes)/(1<<20)) }

// PeakRSS returns the peak resident set size (VmHWM) of process pid, in
// bytes.
func PeakRSS(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			var kb int64
			if _, err := fmt.Sscanf(strings.TrimSpace(rest), "%d kB", &kb); err != nil {
				return 0, err
			}
			return kb << 10, nil
		}
	}
	return 0, fmt.Errorf("no VmHWM in /proc/%d/status", pid)
}

// TreePeakRSS returns the sum of the peak resident set sizes (VmHWM) of
// process pid and of its descendants: an upper bound of the tree's peak,
// for servers that fork workers.
func TreePeakRSS(pid int) (int64, error) {
	total, err := PeakRSS(pid)
	if err != nil {
		return 0, err
	}
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", pid))
	for _, f := range tasks {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		for _, c := range strings.Fields(string(b)) {
			var child int
			if _, err := fmt.Sscan(c, &child); err != nil {
				continue
			}
			// A child that exited in between is not counted.
			if n, err := TreePeakRSS(child); err == nil {
				total += n
			}
		}
	}
	return total, nil
}
