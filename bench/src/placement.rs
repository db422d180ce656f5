//! Where the parts of a run execute. Unpinned, everything shares every core, as the kernel
//! schedules it. Pinned (`--pin`), the system under test gets a core of its own: the proxy's
//! runtime and its `redis-server` on one core, the load generator, the worker, the
//! OpenAI-compatible stand-in and the reference cldmemory on the other, so the proxy's latency
//! is not its neighbours' CPU time. This is what `taskset` does (`sched_setaffinity`), applied
//! to the threads of this process by role and to every thread of Redis. The load generator
//! also runs at a real-time priority when allowed: the worker's drain can keep the core they
//! share busy, and at the default priority the generator then reads an answer only after the
//! worker's time slice, milliseconds the proxy did not spend (see [`GENERATOR_PRIORITY`]).

use std::fmt;

use anyhow::Context;
use nix::sched::{sched_setaffinity, CpuSet};
use nix::unistd::Pid;
use serde::Serialize;

/// The cores a pinned run uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Cores {
    /// The proxy's runtime and Redis.
    pub system: usize,
    /// The load generator, the worker, the stand-ins and the reference.
    pub rest: usize,
    /// Whether the load generator runs at [`GENERATOR_PRIORITY`] (not allowed without root or
    /// `CAP_SYS_NICE`: then it shares its core at the default priority).
    pub realtime_generator: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase", tag = "kind")]
pub enum Placement {
    /// The kernel places every thread anywhere.
    Unpinned,
    Pinned(Cores),
}

impl Placement {
    /// Pinned on this machine's first two cores the process may use.
    pub fn pinned() -> anyhow::Result<Self> {
        let allowed = sched_getaffinity_self()?;
        anyhow::ensure!(
            allowed.len() >= 2,
            "--pin needs two cores this process may run on; it may use {:?}",
            allowed
        );
        Ok(Self::Pinned(Cores {
            system: allowed[0],
            rest: allowed[1],
            realtime_generator: false,
        }))
    }

    /// The core the proxy's threads go to, if pinned.
    pub fn system_core(&self) -> Option<usize> {
        match self {
            Self::Unpinned => None,
            Self::Pinned(cores) => Some(cores.system),
        }
    }

    /// Records that the load generator runs at [`GENERATOR_PRIORITY`].
    pub fn set_realtime_generator(&mut self) {
        if let Self::Pinned(cores) = self {
            cores.realtime_generator = true;
        }
    }

    /// The core of everything else, if pinned.
    pub fn rest_core(&self) -> Option<usize> {
        match self {
            Self::Unpinned => None,
            Self::Pinned(cores) => Some(cores.rest),
        }
    }
}

impl fmt::Display for Placement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unpinned => f.write_str("unpinned (every part on every core)"),
            Self::Pinned(Cores {
                system,
                rest,
                realtime_generator,
            }) => write!(
                f,
                "pinned: proxy and Redis on CPU {system}; load generator ({}), worker, stand-in \
                 and reference on CPU {rest}",
                if *realtime_generator {
                    "real-time priority"
                } else {
                    "default priority: raising it was not allowed"
                }
            ),
        }
    }
}

fn one_core(core: usize) -> anyhow::Result<CpuSet> {
    let mut set = CpuSet::new();
    set.set(core).with_context(|| format!("CPU {core}"))?;
    Ok(set)
}

/// The cores this process may run on, in order.
fn sched_getaffinity_self() -> anyhow::Result<Vec<usize>> {
    let set = nix::sched::sched_getaffinity(Pid::from_raw(0)).context("sched_getaffinity")?;
    Ok((0..CpuSet::count())
        .filter(|&core| set.is_set(core).unwrap_or(false))
        .collect())
}

/// Pins the calling thread (threads it starts later inherit the core).
pub fn pin_current_thread(core: usize) -> anyhow::Result<()> {
    sched_setaffinity(Pid::from_raw(0), &one_core(core)?)
        .with_context(|| format!("pinning a thread to CPU {core}"))
}

/// Pins every thread of another process (`taskset -a -p`): a process's affinity is per thread,
/// and Redis starts its background threads before we see it.
pub fn pin_process(pid: u32, core: usize) -> anyhow::Result<()> {
    for (tid, _) in threads(&pid.to_string())? {
        pin_thread(tid, core)?;
    }
    Ok(())
}

/// Pins every thread of this process except those whose name starts with `except` (the
/// proxy's runtime, pinned since it started); returns how many moved. Seeding and indexing run
/// before this, on both cores; threads started later inherit their creator's core.
pub fn pin_this_process_except(except: &str, core: usize) -> anyhow::Result<usize> {
    let mut moved = 0;
    for (tid, name) in threads("self")? {
        if !name.starts_with(except) {
            pin_thread(tid, core)?;
            moved += 1;
        }
    }
    Ok(moved)
}

/// The load generator's real-time priority (`SCHED_FIFO`) in a pinned run. In the issue-14
/// runs at the default priority it had about 6% of its core while the worker drained 500
/// creates a second there, and waited up to milliseconds for a time slice before it read an
/// answer: `create` p99 4–17 ms at the client while the proxy acknowledged 99.3–99.8% of
/// creates within 2.5 ms (`memgate_request_duration_seconds`); with this priority, 1.2–1.4 ms.
/// A lower priority for the rest (nice 10) did not remove that wait. The generator sleeps
/// between sends, so the worker keeps the rest of the core.
pub const GENERATOR_PRIORITY: u8 = 10;

/// Runs the calling thread under `SCHED_FIFO` at `priority` (`chrt`, util-linux), with threads
/// it starts later back at the default policy (`--reset-on-fork`). Needs root or
/// `CAP_SYS_NICE`.
pub fn make_current_thread_realtime(priority: u8) -> anyhow::Result<()> {
    let tid = nix::unistd::gettid().as_raw().to_string();
    let output = std::process::Command::new("chrt")
        .args([
            "--fifo",
            "--reset-on-fork",
            "--pid",
            &priority.to_string(),
            &tid,
        ])
        .output()
        .context("running chrt (util-linux)")?;
    anyhow::ensure!(
        output.status.success(),
        "chrt --fifo {priority} of thread {tid}: {}",
        String::from_utf8_lossy(&output.stderr).trim()
    );
    Ok(())
}

/// Whether this process holds `CAP_SYS_NICE` (bit 23 of `CapEff` in `/proc/self/status`),
/// which [`make_current_thread_realtime`] needs.
pub fn may_raise_priority() -> bool {
    const CAP_SYS_NICE: u32 = 23;
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let effective = status
                .lines()
                .find_map(|line| line.strip_prefix("CapEff:"))?;
            u64::from_str_radix(effective.trim(), 16).ok()
        })
        .is_some_and(|effective| effective & (1 << CAP_SYS_NICE) != 0)
}

/// `(thread id, name)` of every thread of a process (`self` or a pid).
fn threads(process: &str) -> anyhow::Result<Vec<(i32, String)>> {
    let tasks = std::fs::read_dir(format!("/proc/{process}/task"))
        .with_context(|| format!("the threads of process {process}"))?;
    let mut threads = Vec::new();
    for task in tasks {
        let task = task?;
        let tid: i32 = task
            .file_name()
            .to_string_lossy()
            .parse()
            .context("a thread id in /proc")?;
        // A thread may end between the listing and this read: it needs no pinning then.
        let Ok(name) = std::fs::read_to_string(task.path().join("comm")) else {
            continue;
        };
        threads.push((tid, name.trim_end().to_string()));
    }
    Ok(threads)
}

fn pin_thread(tid: i32, core: usize) -> anyhow::Result<()> {
    sched_setaffinity(Pid::from_raw(tid), &one_core(core)?)
        .with_context(|| format!("pinning thread {tid} to CPU {core}"))
}

/// A runtime whose every thread (workers and blocking pool) runs on `core`, or anywhere.
pub fn runtime(
    name: &str,
    worker_threads: usize,
    core: Option<usize>,
) -> anyhow::Result<tokio::runtime::Runtime> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder
        .worker_threads(worker_threads)
        .thread_name(name)
        .enable_all();
    if let Some(core) = core {
        // Validated here, so the hook (which cannot fail) only repeats a call that works.
        ensure_usable(core)?;
        builder.on_thread_start(move || {
            if let Err(error) = pin_current_thread(core) {
                tracing::warn!("{error:#}");
            }
        });
    }
    builder
        .build()
        .with_context(|| format!("the {name} runtime"))
}

/// Whether `core` can be pinned to, without moving the calling thread.
fn ensure_usable(core: usize) -> anyhow::Result<()> {
    let allowed = sched_getaffinity_self()?;
    anyhow::ensure!(
        allowed.contains(&core),
        "CPU {core} is not one this process may use ({allowed:?})"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Mutex, MutexGuard};

    /// Affinity is per process as well as per thread: one test moving "the rest of this
    /// process" moves the other tests' threads too, so these tests take turns.
    fn one_at_a_time() -> MutexGuard<'static, ()> {
        static AFFINITY: Mutex<()> = Mutex::new(());
        AFFINITY
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    #[test]
    fn a_pinned_runtime_runs_its_tasks_on_its_core() {
        let _turn = one_at_a_time();
        let Ok(Placement::Pinned(cores)) = Placement::pinned() else {
            // One core: nothing to separate (the bench refuses --pin there too).
            return;
        };
        let rt = runtime("pinned-test", 1, Some(cores.rest)).expect("runtime");
        let allowed = rt
            .block_on(async {
                tokio::spawn(async { sched_getaffinity_self() })
                    .await
                    .expect("task")
            })
            .expect("affinity");
        assert_eq!(allowed, vec![cores.rest]);
        let blocking = rt
            .block_on(rt.spawn_blocking(sched_getaffinity_self))
            .expect("task")
            .expect("affinity");
        assert_eq!(blocking, vec![cores.rest]);
    }

    #[test]
    fn the_rest_of_this_process_moves_and_the_named_runtime_stays() {
        let _turn = one_at_a_time();
        let Ok(Placement::Pinned(cores)) = Placement::pinned() else {
            return;
        };
        let proxy = runtime("proxytest", 1, Some(cores.system)).expect("runtime");
        // The bench pins the rest long after the proxy's runtime started. A worker thread still
        // starting could be seen under its creator's name, moved, and only then pin itself:
        // wait until it has run a task, as it has by then in the bench.
        proxy
            .block_on(async { tokio::spawn(async {}).await })
            .expect("started");
        let (ready, parked) = std::sync::mpsc::channel::<()>();
        let other = std::thread::Builder::new()
            .name("other".into())
            .spawn(move || {
                let _ = parked.recv();
                sched_getaffinity_self()
            })
            .expect("thread");
        let before = sched_getaffinity_self().expect("affinity");
        pin_this_process_except("proxytest", cores.rest).expect("pinned");
        let _ = ready.send(());
        let other_cores = other.join().expect("joined").expect("affinity");
        let proxy_cores = proxy
            .block_on(async { tokio::spawn(async { sched_getaffinity_self() }).await })
            .expect("task")
            .expect("affinity");
        // Every thread moved (other tests' too) goes back where it was.
        let mut all = CpuSet::new();
        for core in before {
            all.set(core).expect("core");
        }
        for (tid, _) in threads("self").expect("threads") {
            let _ = sched_setaffinity(Pid::from_raw(tid), &all);
        }
        assert_eq!(other_cores, vec![cores.rest]);
        assert_eq!(proxy_cores, vec![cores.system]);
    }

    /// A thread's scheduling policy (`/proc/self/task/{tid}/stat`, field 41; 1 is
    /// `SCHED_FIFO`, 0 the default).
    fn policy_of(tid: i32) -> u32 {
        let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).expect("stat");
        // The name (field 2) is in parentheses and may hold spaces; the fields after it are
        // plain, from field 3 on.
        let after_name = &stat[stat.rfind(')').expect("name") + 2..];
        after_name
            .split(' ')
            .nth(41 - 3)
            .and_then(|field| field.parse().ok())
            .expect("policy")
    }

    #[test]
    fn the_generator_runs_real_time_and_threads_it_starts_do_not() {
        let generator = std::thread::spawn(|| {
            let raised = make_current_thread_realtime(GENERATOR_PRIORITY);
            let own = policy_of(nix::unistd::gettid().as_raw());
            let child = std::thread::spawn(|| policy_of(nix::unistd::gettid().as_raw()))
                .join()
                .expect("joined");
            (raised, own, child)
        });
        let (raised, own, child) = generator.join().expect("joined");
        if !may_raise_priority() {
            // The bench then reports the default priority.
            assert!(raised.is_err(), "raised without CAP_SYS_NICE");
            return;
        }
        raised.expect("CAP_SYS_NICE allows a real-time priority");
        assert_eq!(
            (own, child),
            (1, 0),
            "FIFO for the thread, default for its children"
        );
    }

    #[test]
    fn every_thread_of_a_process_is_pinned() {
        let _turn = one_at_a_time();
        let Ok(Placement::Pinned(cores)) = Placement::pinned() else {
            return;
        };
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .expect("sleep");
        pin_process(child.id(), cores.system).expect("pinned");
        let set = nix::sched::sched_getaffinity(Pid::from_raw(child.id() as i32)).expect("read");
        let _ = child.kill();
        let _ = child.wait();
        assert!(set.is_set(cores.system).expect("core"));
        assert!(!set.is_set(cores.rest).expect("core"));
    }
}
