//! What the machine lets the bench use and what the processes under test consume: the
//! open-file limit, this process's CPU time, and a server process's CPU time and resident
//! memory read from `/proc`.

use std::path::Path;

/// Raises the soft open-file limit to the hard limit and returns the new soft limit. Each
/// viewer is one file descriptor, so the default soft limit (often 1024) would cap the bench
/// long before the machine does.
pub fn raise_open_file_limit() -> Result<u64, String> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own; no other memory is touched.
    #[allow(unsafe_code)]
    let got = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) };
    if got != 0 {
        return Err(format!("getrlimit: {}", std::io::Error::last_os_error()));
    }
    if limit.rlim_cur < limit.rlim_max {
        limit.rlim_cur = limit.rlim_max;
        // SAFETY: setrlimit reads the struct we own.
        #[allow(unsafe_code)]
        let set = unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) };
        if set != 0 {
            return Err(format!("setrlimit: {}", std::io::Error::last_os_error()));
        }
    }
    Ok(limit.rlim_cur)
}

/// CPU seconds (user + system) used by this process and its waited-for children.
pub fn own_cpu_seconds() -> f64 {
    [libc::RUSAGE_SELF, libc::RUSAGE_CHILDREN]
        .into_iter()
        .map(|who| {
            // SAFETY: an all-zero rusage is a valid value of this plain C struct.
            #[allow(unsafe_code)]
            let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
            // SAFETY: getrusage writes into the struct we own.
            #[allow(unsafe_code)]
            let got = unsafe { libc::getrusage(who, &mut usage) };
            if got != 0 {
                return 0.0;
            }
            let seconds = |time: libc::timeval| time.tv_sec as f64 + time.tv_usec as f64 / 1e6;
            seconds(usage.ru_utime) + seconds(usage.ru_stime)
        })
        .sum()
}

/// One process's CPU time and resident memory at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ProcessSample {
    pub cpu_s: f64,
    pub rss_kib: u64,
}

/// Reads `/proc/<pid>/stat` and `/proc/<pid>/status`; `None` when the process is gone.
pub fn sample_process(pid: u32) -> Option<ProcessSample> {
    let root = Path::new("/proc").join(pid.to_string());
    let stat = std::fs::read_to_string(root.join("stat")).ok()?;
    let status = std::fs::read_to_string(root.join("status")).ok()?;
    Some(ProcessSample {
        cpu_s: cpu_seconds_from_stat(&stat)?,
        rss_kib: rss_kib_from_status(&status)?,
    })
}

/// utime + stime (fields 14 and 15) of a `/proc/<pid>/stat` line, in seconds.
fn cpu_seconds_from_stat(stat: &str) -> Option<f64> {
    // The command name (field 2) is in parentheses and may hold spaces: count after it.
    let after_name = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // after_name starts at field 3, so field n is at index n - 3.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    // SAFETY: sysconf only reads a configuration value.
    #[allow(unsafe_code)]
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let ticks = if ticks > 0 { ticks as f64 } else { 100.0 };
    Some((utime + stime) as f64 / ticks)
}

fn rss_kib_from_status(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_and_memory_of_this_process_are_read() {
        let sample = sample_process(std::process::id()).unwrap();
        assert!(sample.rss_kib > 0);
        assert!(sample.cpu_s >= 0.0);
    }

    #[test]
    fn a_command_name_with_spaces_does_not_shift_the_fields() {
        let stat = "42 (a b) S 1 2 3 4 5 6 7 8 9 10 200 100 0 0";
        let one_second = cpu_seconds_from_stat("1 (x) S 1 2 3 4 5 6 7 8 9 10 0 0 0 0").unwrap();
        assert_eq!(one_second, 0.0);
        let seconds = cpu_seconds_from_stat(stat).unwrap();
        let per_tick = cpu_seconds_from_stat("1 (x) S 1 2 3 4 5 6 7 8 9 10 1 0 0 0").unwrap();
        assert!((seconds - 300.0 * per_tick).abs() < 1e-9);
    }

    #[test]
    fn the_open_file_limit_can_be_raised_to_the_hard_limit() {
        assert!(raise_open_file_limit().unwrap() >= 1);
    }
}
