//! Replays every committed fuzz corpus (`fuzz/corpus/<target>/*`) through the same functions
//! the fuzz targets run, so seeds and fixed crashes stay fixed in `cargo test`.
//!
//! The crate's tests build it with the `fuzzing` feature (a dev-dependency on itself).
//! To read what one engine input does, step by step:
//! `FUZZ_INPUT=path/to/crash cargo test -p gslb-state-core --test fuzz_corpus -- --nocapture`.

use std::cell::RefCell;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::path::{Path, PathBuf};

use gslb_state_core::fuzz;

fn corpus(target: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|entry| entry.expect("a directory entry").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "{} holds no seeds", dir.display());
    files
}

/// Runs `run` on every file of `target`'s corpus; a failure names the file and the command
/// that replays it.
fn replay(target: &str, run: impl Fn(&Path, &[u8])) {
    for path in corpus(target) {
        let data = std::fs::read(&path).expect("a readable seed");
        if let Err(panic) = catch_unwind(AssertUnwindSafe(|| run(&path, &data))) {
            eprintln!(
                "fuzz seed {} failed; replay it with\n  cd fuzz && cargo fuzz run --sanitizer none {target} {}",
                path.display(),
                path.strip_prefix(Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz"))
                    .unwrap_or(&path)
                    .display()
            );
            resume_unwind(panic);
        }
    }
}

#[test]
fn codec_corpus() {
    replay("codec", |_, data| fuzz::codec(data));
}

#[test]
fn config_corpus() {
    replay("config", |path, data| {
        let accepted = fuzz::config(data);
        // Seeds named `hostile-*` are attacks: they must be refused, not just survived.
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        assert!(
            !(accepted && name.starts_with("hostile-")),
            "{name} was accepted"
        );
    });
}

#[test]
fn engine_corpus() {
    replay("engine", |_, data| run_engine_traced(data));
}

/// Runs one engine input, printing its last steps if it fails.
fn run_engine_traced(data: &[u8]) {
    const KEEP_STEPS: usize = 40;
    let steps = RefCell::new(Vec::<String>::new());
    let result = catch_unwind(AssertUnwindSafe(|| {
        fuzz::engine_traced(data, &mut |i, op| {
            let mut steps = steps.borrow_mut();
            if steps.len() == KEEP_STEPS {
                steps.remove(0);
            }
            steps.push(format!("{i:4} {op:?}"));
        })
    }));
    if let Err(panic) = result {
        eprintln!("last steps before the failure:");
        for line in steps.borrow().iter() {
            eprintln!("{line}");
        }
        resume_unwind(panic);
    }
}

/// `FUZZ_INPUT=<file>`: prints every step of one engine input and runs it.
#[test]
fn engine_input_from_env() {
    let Some(path) = std::env::var_os("FUZZ_INPUT") else {
        return;
    };
    let data = std::fs::read(&path).expect("FUZZ_INPUT names a readable file");
    fuzz::engine_traced(&data, &mut |i, op| println!("{i:4} {op:?}"));
}
