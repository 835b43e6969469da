//! Processes the harness starts (servers, demo apps) die with the test that started them,
//! even when the test process is killed with SIGKILL and no `Drop` runs.
//!
//! Each test runs this binary again as a child, in "holder" mode: the holder starts a
//! process through the harness, prints its pid and waits. The test kills the holder with
//! SIGKILL and watches the process it started.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use xtask::server::ServerKind;

/// Set in the holder's environment: what it starts (`stand-in`, `app`, `r-nacos`).
const HOLDER: &str = "XTASK_DIES_WITH_PARENT_HOLDER";

/// The holder: started by the tests below, never on its own.
#[test]
#[ignore = "run by the other tests of this file in a child process"]
fn holder() {
    let Ok(what) = std::env::var(HOLDER) else {
        // Run by `--include-ignored`: nothing to hold, and nothing to check here.
        eprintln!("holder: only the other tests of this file run it (with {HOLDER} set)");
        return;
    };
    // Kept alive (never dropped) until the process is killed.
    let pid = match what.as_str() {
        "stand-in" => {
            let child = xtask::child_command("sleep")
                .arg("600")
                .spawn()
                .expect("cannot start sleep");
            let pid = child.id();
            std::mem::forget(child);
            pid
        }
        "app" => {
            let app = xtask::App::start_with_args("sleep", &["600"], &[]);
            let pid = app.pid();
            std::mem::forget(app);
            pid
        }
        "r-nacos" => {
            let server = xtask::RNacos::start();
            let pid = server.pid().expect("r-nacos runs");
            std::mem::forget(server);
            pid
        }
        other => panic!("unknown holder mode {other:?}"),
    };
    println!("holder started pid {pid}");
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

/// Starts a holder in `mode` and returns it with the pid of the process it started.
fn start_holder(mode: &str) -> (Child, u32) {
    let mut holder = Command::new(std::env::current_exe().expect("the test binary"))
        .args(["--exact", "holder", "--ignored", "--nocapture"])
        .env(HOLDER, mode)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .expect("cannot run the holder");
    let stdout = holder.stdout.take().expect("piped");
    let pid = BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .find_map(|l| {
            l.strip_prefix("holder started pid ")
                .and_then(|p| p.parse().ok())
        });
    match pid {
        Some(pid) => (holder, pid),
        None => {
            drop(holder.kill());
            panic!(
                "the holder ({mode}) did not start its process: {:?}",
                holder.wait()
            );
        }
    }
}

/// `Some(ppid)` while `pid` runs; `None` once it is gone or a zombie (dead, not reaped).
fn running_parent(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // `pid (comm) state ppid ...`; comm may hold spaces and parentheses.
    let mut fields = stat[stat.rfind(')')? + 1..].split_whitespace();
    let state = fields.next()?;
    let ppid = fields.next()?.parse().ok()?;
    (state != "Z" && state != "X").then_some(ppid)
}

/// Starts a holder in `mode`, checks its process runs as the holder's child, kills the
/// holder with SIGKILL and waits up to 10 s for the process to be gone.
fn killed_holder_takes_its_process(mode: &str) {
    let (mut holder, pid) = start_holder(mode);
    // `setpriv` sets the parent-death signal, then executes the program: once the process
    // is no longer `setpriv`, the signal is armed. (A parent dying before that instant,
    // microseconds after the spawn, is not noticed: the window `prctl` leaves.)
    let armed = xtask::wait_for(Duration::from_secs(10), || {
        std::fs::read_to_string(format!("/proc/{pid}/comm"))
            .is_ok_and(|comm| comm.trim() != "setpriv")
            .then_some(())
    });
    assert!(
        armed.is_some(),
        "the {mode} process {pid} never left setpriv"
    );
    assert_eq!(
        running_parent(pid),
        Some(holder.id()),
        "the {mode} process {pid} runs as the holder's child"
    );
    holder.kill().expect("SIGKILL the holder");
    holder.wait().expect("reap the holder");
    let gone = xtask::wait_for(Duration::from_secs(10), || {
        running_parent(pid).is_none().then_some(())
    });
    if gone.is_none() {
        drop(
            Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status(),
        );
        panic!("the {mode} process {pid} outlived its holder, killed with SIGKILL, by 10 s");
    }
}

#[test]
fn a_process_started_through_the_spawn_helper_dies_with_a_killed_test() {
    killed_holder_takes_its_process("stand-in");
}

#[test]
fn a_demo_app_dies_with_a_killed_test() {
    killed_holder_takes_its_process("app");
}

#[test]
fn r_nacos_dies_with_a_killed_test() {
    if xtask::skip_without(ServerKind::RNacos) {
        return;
    }
    killed_holder_takes_its_process("r-nacos");
}
