//! `cargo xtask test`'s reading of `cargo test --no-fail-fast` output: which tests failed,
//! in which test binary, to list them together once every binary has run.

/// The failures seen so far in `cargo test` output, fed one line at a time.
#[derive(Debug, Default)]
pub struct Failures {
    /// The current binary's `Running ...` / `Doc-tests ...` line.
    binary: Option<String>,
    /// Tests reported `FAILED` by the current binary.
    pending: Vec<String>,
    /// Finished binaries that failed: cargo's command to run them again (or the `Running`
    /// line when cargo gave none) and their failed tests.
    failed: Vec<(String, Vec<String>)>,
}

impl Failures {
    /// Reads one line of `cargo test`'s combined stdout and stderr.
    pub fn line(&mut self, line: &str) {
        let trimmed = line.trim();
        if let Some(rest) = trimmed
            .strip_prefix("Running ")
            .or_else(|| trimmed.strip_prefix("Doc-tests "))
        {
            // A new binary: failures of the previous one that cargo did not attribute.
            self.flush(None);
            self.binary = Some(if trimmed.starts_with("Doc-tests") {
                format!("doc-tests of {rest}")
            } else {
                rest.to_owned()
            });
        } else if let Some(name) = trimmed
            .strip_prefix("test ")
            .and_then(|rest| rest.strip_suffix(" ... FAILED"))
        {
            if !self.pending.iter().any(|p| p == name) {
                self.pending.push(name.to_owned());
            }
        } else if let Some(rerun) = trimmed
            .strip_prefix("error: ")
            .and_then(|rest| rest.split_once(" failed, to rerun pass `"))
            .and_then(|(_, rest)| rest.strip_suffix('`'))
        {
            // `error: test failed, ...` or `error: doctest failed, ...`.
            self.flush(Some(rerun.to_owned()));
        }
    }

    fn flush(&mut self, rerun: Option<String>) {
        let tests = std::mem::take(&mut self.pending);
        let binary = self.binary.take();
        if rerun.is_none() && tests.is_empty() {
            return;
        }
        let label = rerun
            .map(|r| format!("cargo test {r}"))
            .or(binary)
            .unwrap_or_else(|| "?".to_owned());
        self.failed.push((label, tests));
    }

    /// Whether a test or a test binary failed.
    pub fn any(&self) -> bool {
        !self.failed.is_empty() || !self.pending.is_empty()
    }

    /// Every failure, one test binary per block, once the run is over; `None` when
    /// nothing failed.
    pub fn summary(mut self) -> Option<String> {
        self.flush(None);
        if self.failed.is_empty() {
            return None;
        }
        let count: usize = self.failed.iter().map(|(_, t)| t.len()).sum();
        let mut out = format!(
            "{count} failed test{} in {} test binar{}:\n",
            if count == 1 { "" } else { "s" },
            self.failed.len(),
            if self.failed.len() == 1 { "y" } else { "ies" }
        );
        for (binary, tests) in &self.failed {
            out.push_str(&format!("  {binary}\n"));
            if tests.is_empty() {
                out.push_str("      (no test reported FAILED: the binary did not build, crashed or was killed; its output is above)\n");
            }
            for test in tests {
                out.push_str(&format!("      {test}\n"));
            }
        }
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(text: &str) -> Failures {
        let mut failures = Failures::default();
        for line in text.lines() {
            failures.line(line);
        }
        failures
    }

    #[test]
    fn failed_tests_are_listed_under_their_binary() {
        let failures = read(
            "     Running unittests src/lib.rs (target/debug/deps/nacos_core-1)\n\
             running 3 tests\n\
             test config::tests::ok ... ok\n\
             test config::tests::bad ... FAILED\n\
             test task::tests::slow ... FAILED\n\
             \n\
             failures:\n\
             \n\
             ---- config::tests::bad stdout ----\n\
             thread 'config::tests::bad' panicked\n\
             \n\
             failures:\n\
             \x20   config::tests::bad\n\
             \x20   task::tests::slow\n\
             \n\
             test result: FAILED. 1 passed; 2 failed\n\
             \n\
             error: test failed, to rerun pass `-p nacos-core --lib`\n\
             \x20    Running tests/e2e.rs (target/debug/deps/e2e-2)\n\
             test all_good ... ok\n\
             test result: ok. 1 passed\n\
             \x20  Doc-tests axum_demo\n\
             test README.md - Readme (line 53) ... FAILED\n\
             error: doctest failed, to rerun pass `-p axum-demo --doc`\n\
             error: 2 targets failed:\n\
             \x20   `-p nacos-core --lib`\n\
             \x20   `-p axum-demo --doc`\n",
        );
        assert!(failures.any());
        let summary = failures.summary().unwrap();
        assert_eq!(
            summary,
            "3 failed tests in 2 test binaries:\n\
             \x20 cargo test -p nacos-core --lib\n\
             \x20     config::tests::bad\n\
             \x20     task::tests::slow\n\
             \x20 cargo test -p axum-demo --doc\n\
             \x20     README.md - Readme (line 53)\n"
        );
    }

    #[test]
    fn a_binary_that_fails_without_a_failed_test_is_listed() {
        let failures = read(
            "     Running tests/e2e.rs (target/debug/deps/e2e-2)\n\
             running 4 tests\n\
             error: test failed, to rerun pass `-p actix-demo --test e2e`\n\
             \n\
             Caused by:\n\
             \x20 process didn't exit successfully (signal: 9, SIGKILL: kill)\n",
        );
        let summary = failures.summary().unwrap();
        assert!(summary.starts_with("0 failed tests in 1 test binary:\n"));
        assert!(summary.contains("cargo test -p actix-demo --test e2e\n"));
        assert!(summary.contains("no test reported FAILED"));
    }

    #[test]
    fn a_passing_run_has_no_summary() {
        let failures = read(
            "     Running unittests src/lib.rs (target/debug/deps/xtask-1)\n\
             test msrv::tests::versions_parse_and_print_as_written ... ok\n\
             test result: ok. 1 passed; 0 failed\n",
        );
        assert!(!failures.any());
        assert_eq!(failures.summary(), None);
    }
}
