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
    cpu_ticks_of(&format!("/proc/{pid}/stat"))
}

/// utime + stime, in clock ticks, of this process's threads whose name (as the kernel keeps
/// it: at most 15 bytes) starts with `name`.
pub fn thread_cpu_ticks(name: &str) -> u64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0;
    };
    let name = &name[..name.len().min(15)];
    tasks
        .flatten()
        .filter(|t| {
            std::fs::read_to_string(t.path().join("comm"))
                .is_ok_and(|c| c.trim_end().starts_with(name))
        })
        .filter_map(|t| t.file_name().to_str()?.parse::<u32>().ok())
        .map(|tid| cpu_ticks_of(&format!("/proc/self/task/{tid}/stat")))
        .sum()
}

/// utime + stime from the `stat` file at `path` (0 when it cannot be read).
fn cpu_ticks_of(path: &str) -> u64 {
    let Ok(stat) = std::fs::read_to_string(path) else {
        return 0;
    };
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return 0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // After the command: state (3) ... utime (14), stime (15).
    field(11) + field(12)
}
