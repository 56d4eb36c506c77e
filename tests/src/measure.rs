//! Small measuring aids of the benchmarks and soaks: percentiles of samples and what `/proc`
//! says of a process.

use std::time::Duration;

/// The `p` quantile (0.0 to 1.0) of `sorted` samples, nearest rank; zero when empty.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

/// A kB field of `/proc/<pid>/status` (`"VmRSS:"`, `"VmHWM:"`, ...); `None` when the process
/// or the field is gone.
pub fn proc_status_kb(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// utime + stime of process `pid`, in clock ticks (0 when it is gone).
pub fn cpu_ticks(pid: u32) -> u64 {
    let f = stat_fields(&format!("/proc/{pid}/stat"));
    f.utime + f.stime
}

/// CPU time and page faults of a process or thread, from its `stat` file.
#[derive(Debug, Default, Clone, Copy)]
pub struct TaskStat {
    /// Minor page faults (fresh memory touched, among others).
    pub minor_faults: u64,
    /// User time, clock ticks.
    pub utime: u64,
    /// System time, clock ticks.
    pub stime: u64,
}

/// Sum of [`TaskStat`]s of this process's threads whose name (as the kernel keeps it: at
/// most 15 bytes) starts with `name`.
pub fn threads_stat(name: &str) -> TaskStat {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return TaskStat::default();
    };
    let name = &name[..name.len().min(15)];
    tasks
        .flatten()
        .filter(|t| {
            std::fs::read_to_string(t.path().join("comm"))
                .is_ok_and(|c| c.trim_end().starts_with(name))
        })
        .map(|t| stat_fields(&t.path().join("stat").to_string_lossy()))
        .fold(TaskStat::default(), |a, b| TaskStat {
            minor_faults: a.minor_faults + b.minor_faults,
            utime: a.utime + b.utime,
            stime: a.stime + b.stime,
        })
}

/// The calling thread's [`TaskStat`].
pub fn this_thread_stat() -> TaskStat {
    stat_fields("/proc/thread-self/stat")
}

/// The fields of the `stat` file at `path` (zeros when it cannot be read).
fn stat_fields(path: &str) -> TaskStat {
    let Ok(stat) = std::fs::read_to_string(path) else {
        return TaskStat::default();
    };
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return TaskStat::default();
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // After the command: state (3) ... minflt (10), ..., utime (14), stime (15).
    TaskStat {
        minor_faults: field(7),
        utime: field(11),
        stime: field(12),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let ms = |v: u64| Duration::from_millis(v);
        let samples: Vec<Duration> = (1..=100).map(ms).collect();
        assert_eq!(percentile(&samples, 0.50), ms(51));
        assert_eq!(percentile(&samples, 0.99), ms(99));
        assert_eq!(percentile(&samples, 1.0), ms(100));
        assert_eq!(percentile(&[], 0.5), Duration::ZERO);
    }

    #[test]
    fn our_own_resident_memory_is_read() {
        let kb = proc_status_kb(std::process::id(), "VmRSS:").expect("VmRSS of this process");
        assert!(kb > 0);
        assert_eq!(proc_status_kb(std::process::id(), "NoSuchField:"), None);
    }
}
