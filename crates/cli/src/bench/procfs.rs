//! The broker's memory and CPU from /proc/PID/status and /proc/PID/stat (Linux only), for
//! `--broker-pid`.

use serde::Serialize;
use std::time::Instant;

/// Clock ticks per second of the utime/stime fields. USER_HZ is 100 on every Linux
/// architecture we run on; reading it properly needs `sysconf`, i.e. libc and unsafe code.
const TICKS_PER_SEC: f64 = 100.0;

/// `VmRSS` in kB from the text of /proc/PID/status.
pub(crate) fn parse_rss_kb(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// utime + stime in clock ticks from the text of /proc/PID/stat.
///
/// The command name (field 2) is in parentheses and may hold spaces or ')', so fields are
/// counted after the last ')': state is field 3, utime field 14 and stime field 15.
pub(crate) fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// CPU use in percent of one core between two tick readings `secs` apart.
pub(crate) fn cpu_percent(ticks_before: u64, ticks_after: u64, secs: f64) -> f64 {
    if secs <= 0.0 {
        return 0.0;
    }
    ticks_after.saturating_sub(ticks_before) as f64 / TICKS_PER_SEC / secs * 100.0
}

/// Samples one process.
#[derive(Debug)]
pub(crate) struct Probe {
    pid: u32,
    start_ticks: u64,
    start: Instant,
    rss_start_kb: u64,
    rss_peak_kb: u64,
}

/// What the report shows about the broker.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct BrokerStats {
    /// The broker's process id.
    pub(crate) pid: u32,
    /// RSS when the bench started, before any client connected.
    pub(crate) rss_start_kb: u64,
    /// RSS at the end of the run.
    pub(crate) rss_end_kb: u64,
    /// Highest RSS seen by the samples taken during the run.
    pub(crate) rss_peak_kb: u64,
    /// Average CPU use over the run, in percent of one core.
    pub(crate) cpu_percent: f64,
}

impl Probe {
    /// Fails when the process does not exist or /proc is not readable.
    pub(crate) fn new(pid: u32) -> anyhow::Result<Probe> {
        let (rss, ticks) = read(pid)?;
        Ok(Probe {
            pid,
            start_ticks: ticks,
            start: Instant::now(),
            rss_start_kb: rss,
            rss_peak_kb: rss,
        })
    }

    /// RSS when the probe was created.
    pub(crate) fn rss_start_kb(&self) -> u64 {
        self.rss_start_kb
    }

    /// Takes a sample (for the peak) and returns the current RSS in kB.
    pub(crate) fn sample(&mut self) -> Option<u64> {
        let (rss, _) = read(self.pid).ok()?;
        self.rss_peak_kb = self.rss_peak_kb.max(rss);
        Some(rss)
    }

    /// The figures since [`Probe::new`]; `None` when the process is gone.
    pub(crate) fn finish(&mut self) -> Option<BrokerStats> {
        let (rss, ticks) = read(self.pid).ok()?;
        self.rss_peak_kb = self.rss_peak_kb.max(rss);
        Some(BrokerStats {
            pid: self.pid,
            rss_start_kb: self.rss_start_kb,
            rss_end_kb: rss,
            rss_peak_kb: self.rss_peak_kb,
            cpu_percent: cpu_percent(self.start_ticks, ticks, self.start.elapsed().as_secs_f64()),
        })
    }
}

fn read(pid: u32) -> anyhow::Result<(u64, u64)> {
    use anyhow::Context;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("cannot read /proc/{pid}/status (is the broker running?)"))?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("cannot read /proc/{pid}/stat"))?;
    let rss = parse_rss_kb(&status).context("no VmRSS in /proc/PID/status")?;
    let ticks = parse_cpu_ticks(&stat).context("malformed /proc/PID/stat")?;
    Ok((rss, ticks))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rss_is_read_from_the_vmrss_line() {
        let status = "Name:\tthingmq\nVmPeak:\t  99999 kB\nVmRSS:\t    5432 kB\nThreads:\t3\n";
        assert_eq!(parse_rss_kb(status), Some(5432));
        assert_eq!(parse_rss_kb("Name:\tkthreadd\n"), None);
    }

    #[test]
    fn cpu_ticks_are_counted_after_a_command_name_with_spaces_and_parens() {
        // pid (comm) state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt
        // utime stime ...
        let stat = "1234 (my (odd) name) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 50 0 0 20 0";
        assert_eq!(parse_cpu_ticks(stat), Some(300));
        assert_eq!(parse_cpu_ticks("1234 (x) S 1"), None);
    }

    #[test]
    fn cpu_percent_is_of_one_core() {
        // 150 ticks = 1.5 s of CPU over 3 s of wall time.
        assert!((cpu_percent(100, 250, 3.0) - 50.0).abs() < 1e-9);
        assert_eq!(cpu_percent(5, 1, 1.0), 0.0);
        assert_eq!(cpu_percent(0, 10, 0.0), 0.0);
    }

    #[test]
    fn probe_reads_our_own_process() {
        let mut p = Probe::new(std::process::id()).unwrap();
        assert!(p.sample().unwrap() > 0);
        let s = p.finish().unwrap();
        assert!(s.rss_peak_kb >= s.rss_start_kb);
    }
}
