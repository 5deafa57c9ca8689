//! A data-parallel job must not hang when a rank does: a collective that waits longer than the
//! configured time ends this process with a message, and the launcher then ends the others.
//! A rank that the launcher stops (SIGTERM) says why before it goes.
//!
//! MPI itself has no timeouts on collectives, and a rank that dies is noticed by the launcher
//! (`mpirun`, `srun --kill-on-bad-exit`), not by the ranks waiting for it; a rank that stops
//! answering without dying (a hung driver, a stopped process, a lost node) is noticed by nobody.
//! The watchdog covers that case from inside each process.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

static START: OnceLock<Instant> = OnceLock::new();
/// Milliseconds since `START` when the current collective began, plus one; 0: none running.
static SINCE: AtomicU64 = AtomicU64::new(0);
/// Index into `WHAT` of the current collective's description.
static CURRENT: AtomicUsize = AtomicUsize::new(0);
static WHAT: OnceLock<std::sync::Mutex<Vec<&'static str>>> = OnceLock::new();
/// What every message ends with (where the last checkpoint is, how to go on).
static NOTE: OnceLock<String> = OnceLock::new();
/// The SIGTERM message, ready to be written from the signal handler.
static TERM_MESSAGE: OnceLock<Vec<u8>> = OnceLock::new();

fn now_ms() -> u64 {
    START.get_or_init(Instant::now).elapsed().as_millis() as u64 + 1
}

/// While the returned guard lives, this process is inside the collective `what`.
pub fn inside(what: &'static str) -> Guard {
    let table = WHAT.get_or_init(Default::default);
    let index = {
        let mut t = table.lock().unwrap_or_else(|e| e.into_inner());
        match t.iter().position(|w| *w == what) {
            Some(i) => i,
            None => {
                t.push(what);
                t.len() - 1
            }
        }
    };
    CURRENT.store(index, Ordering::Relaxed);
    SINCE.store(now_ms(), Ordering::Release);
    Guard { paused: false }
}

/// While the returned guard lives, collectives may wait without limit (the other ranks wait for
/// rank 0's end of epoch — kNN monitor, checkpoint, pictures — which can take long).
pub fn untimed() -> Guard {
    PAUSED.fetch_add(1, Ordering::AcqRel);
    Guard { paused: true }
}

static PAUSED: AtomicUsize = AtomicUsize::new(0);

pub struct Guard {
    paused: bool,
}

impl Drop for Guard {
    fn drop(&mut self) {
        match self.paused {
            true => {
                PAUSED.fetch_sub(1, Ordering::AcqRel);
            }
            false => SINCE.store(0, Ordering::Release),
        }
    }
}

/// Starts watching (once per process): a collective that lasts longer than `timeout` ends the
/// process; `prefix` names this rank in messages and `note` tells what to do next. Also makes a
/// SIGTERM print what it means before the process ends.
pub fn start(timeout: Option<Duration>, prefix: &str, note: String) {
    let _ = NOTE.set(note.clone());
    let term = format!(
        "\n{prefix}stopped by SIGTERM: the launcher ends every rank when one fails, is killed or times out (its \
         message is above), or the job was cancelled. {note}\n"
    );
    if TERM_MESSAGE.set(term.into_bytes()).is_ok() {
        // SAFETY: the handler only reads an initialised static and calls write(2) and _exit(2),
        // both async-signal-safe.
        unsafe { libc::signal(libc::SIGTERM, on_sigterm as *const () as libc::sighandler_t) };
    }
    let Some(timeout) = timeout else { return };
    START.get_or_init(Instant::now);
    let prefix = prefix.to_string();
    std::thread::Builder::new()
        .name("collective watchdog".into())
        .spawn(move || watch(timeout, prefix))
        .expect("starting the watchdog thread");
}

fn watch(timeout: Duration, prefix: String) {
    let tick = (timeout / 10).clamp(Duration::from_millis(50), Duration::from_secs(1));
    loop {
        std::thread::sleep(tick);
        let since = SINCE.load(Ordering::Acquire);
        if since == 0 || PAUSED.load(Ordering::Acquire) > 0 {
            continue;
        }
        let waited = Duration::from_millis(now_ms().saturating_sub(since));
        if waited > timeout {
            let what = WHAT.get().and_then(|t| t.lock().ok()?.get(CURRENT.load(Ordering::Relaxed)).copied()).unwrap_or("a collective");
            eprintln!(
                "\n{prefix}error: {what} has waited {:.0}s for the other ranks (train.dist_timeout = {}s): a rank has \
                 hung, or died without the launcher noticing. Ending this rank so that the launcher ends the job. {}",
                waited.as_secs_f64(),
                timeout.as_secs(),
                NOTE.get().map(String::as_str).unwrap_or("")
            );
            // Not exit(): it would run destructors and MPI's finalisation, which waits for the
            // ranks that are not answering.
            unsafe { libc::_exit(3) };
        }
    }
}

extern "C" fn on_sigterm(_: libc::c_int) {
    if let Some(m) = TERM_MESSAGE.get() {
        // SAFETY: write(2) of an initialised, never-freed buffer.
        unsafe { libc::write(2, m.as_ptr().cast(), m.len()) };
    }
    unsafe { libc::_exit(143) };
}
