//! Figures: latency percentiles, and what the server process costs (from `/proc`).
//!
//! Latencies are kept as raw samples and sorted once at the end: the scenarios are bounded,
//! so the samples fit in memory, and exact percentiles beat a histogram's buckets.

use std::time::Duration;

use serde::Serialize;

use super::LoadError;

/// Percentiles of a set of durations, in microseconds.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub struct Latency {
    pub count: usize,
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
    pub max_us: u64,
    pub mean_us: u64,
}

impl Latency {
    /// Summarise samples given in nanoseconds (sorts them in place).
    pub fn from_nanos(samples: &mut [u64]) -> Latency {
        if samples.is_empty() {
            return Latency::default();
        }
        samples.sort_unstable();
        let at = |q: f64| {
            // Nearest rank: the smallest sample with at least q of the samples at or below it.
            let rank = ((q * samples.len() as f64).ceil() as usize).clamp(1, samples.len());
            samples[rank - 1] / 1000
        };
        let sum: u128 = samples.iter().map(|&s| u128::from(s)).sum();
        Latency {
            count: samples.len(),
            p50_us: at(0.50),
            p90_us: at(0.90),
            p99_us: at(0.99),
            max_us: samples[samples.len() - 1] / 1000,
            mean_us: (sum / samples.len() as u128 / 1000) as u64,
        }
    }

    /// `p50 1.2 ms, p99 3.4 ms, max 9.9 ms`.
    pub fn human(&self) -> String {
        format!(
            "p50 {}, p99 {}, max {}",
            ms(self.p50_us),
            ms(self.p99_us),
            ms(self.max_us)
        )
    }
}

fn ms(us: u64) -> String {
    format!("{:.2} ms", us as f64 / 1000.0)
}

/// Nanoseconds in a duration, saturating.
pub fn nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

/// A rate per second, rounded.
pub fn per_second(count: u64, elapsed: Duration) -> f64 {
    let secs = elapsed.as_secs_f64();
    if secs > 0.0 {
        (count as f64 / secs).round()
    } else {
        0.0
    }
}

/// A server process watched through `/proc/<pid>`.
#[derive(Debug, Clone, Copy)]
pub struct Process {
    pid: u32,
}

/// A reading of a process's memory and CPU.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Sample {
    /// Resident set size, KiB (`VmRSS`).
    pub rss_kib: u64,
    /// The anonymous part of it, KiB (`RssAnon`): heap and stacks, without the pages of
    /// LMDB's memory map that reads happened to touch.
    pub anon_kib: u64,
    /// User plus system CPU time so far, milliseconds.
    pub cpu_ms: u64,
}

impl Process {
    /// Watch `pid`; it must exist and be readable.
    pub fn new(pid: u32) -> Result<Process, LoadError> {
        let process = Process { pid };
        process.sample()?;
        Ok(process)
    }

    pub fn sample(&self) -> Result<Sample, LoadError> {
        let (rss_kib, anon_kib) = self.memory_kib()?;
        Ok(Sample {
            rss_kib,
            anon_kib,
            cpu_ms: self.cpu_ms()?,
        })
    }

    /// `VmRSS` and `RssAnon` from `/proc/<pid>/status`, in KiB.
    fn memory_kib(&self) -> Result<(u64, u64), LoadError> {
        let path = format!("/proc/{}/status", self.pid);
        let status = std::fs::read_to_string(&path)
            .map_err(|err| LoadError::Usage(format!("reading {path}: {err} (is --pid right?)")))?;
        let rss = status_kib(&status, "VmRSS:")
            .ok_or_else(|| LoadError::Usage(format!("{path} has no VmRSS line")))?;
        Ok((rss, status_kib(&status, "RssAnon:").unwrap_or(rss)))
    }

    /// utime + stime from `/proc/<pid>/stat`, in milliseconds.
    pub fn cpu_ms(&self) -> Result<u64, LoadError> {
        let path = format!("/proc/{}/stat", self.pid);
        let stat = std::fs::read_to_string(&path)
            .map_err(|err| LoadError::Usage(format!("reading {path}: {err}")))?;
        let ticks =
            parse_cpu_ticks(&stat).ok_or_else(|| LoadError::Usage(format!("{path} is garbled")))?;
        // SAFETY: sysconf only reads a configuration value.
        let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        let per_second = u64::try_from(per_second).unwrap_or(100).max(1);
        Ok(ticks * 1000 / per_second)
    }
}

/// A `Name:   123 kB` line of `/proc/<pid>/status`.
fn status_kib(status: &str, name: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with(name))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Fields 14 and 15 of `stat` (utime, stime), counted after the `(comm)` that may hold spaces.
fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    let after_comm = &stat[stat.rfind(')')? + 1..];
    let mut fields = after_comm.split_whitespace();
    // after_comm starts at field 3 (state); utime is field 14.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// Server figures over a phase: memory at both ends, CPU spent between them.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct ServerCost {
    pub rss_before_kib: u64,
    pub rss_after_kib: u64,
    pub anon_before_kib: u64,
    pub anon_after_kib: u64,
    pub cpu_ms: u64,
}

impl ServerCost {
    pub fn between(before: Sample, after: Sample) -> ServerCost {
        ServerCost {
            rss_before_kib: before.rss_kib,
            rss_after_kib: after.rss_kib,
            anon_before_kib: before.anon_kib,
            anon_after_kib: after.anon_kib,
            cpu_ms: after.cpu_ms.saturating_sub(before.cpu_ms),
        }
    }

    /// A summary line: `  <who>: 1.23 CPU s <when>, RSS a -> b KiB`.
    pub fn describe(&self, who: &str, when: &str) -> String {
        format!(
            "  {who}: {:.2} CPU s {when}, RSS {} -> {} KiB\n",
            self.cpu_ms as f64 / 1000.0,
            self.rss_before_kib,
            self.rss_after_kib
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_by_nearest_rank() {
        let mut samples: Vec<u64> = (1..=100).map(|ms| ms * 1_000_000).collect();
        let l = Latency::from_nanos(&mut samples);
        assert_eq!(l.count, 100);
        assert_eq!(l.p50_us, 50_000);
        assert_eq!(l.p99_us, 99_000);
        assert_eq!(l.max_us, 100_000);
        assert_eq!(Latency::from_nanos(&mut []), Latency::default());
        let mut one = [7_000];
        assert_eq!(Latency::from_nanos(&mut one).p99_us, 7);
    }

    #[test]
    fn reads_proc_files() {
        let status = "Name:\thearth\nVmPeak:\t  100 kB\nVmRSS:\t   2048 kB\nRssAnon:\t 1024 kB\n";
        assert_eq!(status_kib(status, "VmRSS:"), Some(2048));
        assert_eq!(status_kib(status, "RssAnon:"), Some(1024));
        assert_eq!(status_kib("Name: x\n", "VmRSS:"), None);
        let stat = "42 (a b) S 1 42 42 0 -1 4194560 100 0 0 0 150 25 0 0 20 0 3 0";
        assert_eq!(parse_cpu_ticks(stat), Some(175));
        assert_eq!(parse_cpu_ticks("garbage"), None);
    }

    #[test]
    fn reads_this_process() {
        let me = Process::new(std::process::id()).expect("own /proc");
        assert!(me.sample().expect("sample").rss_kib > 0);
    }
}
