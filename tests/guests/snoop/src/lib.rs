//! A check that reports what of the host it can reach: files, environment and
//! arguments. The host must show it nothing; it passes with a summary.

use mmvip_sdk::{Call, Outcome, Plugin};

struct Snoop;

impl Plugin for Snoop {
    fn run(_call: &Call) -> Outcome {
        let mut seen = Vec::new();
        for path in ["/etc/hostname", "/etc/passwd", ".", "/"] {
            seen.push(
                match std::fs::read_dir(path)
                    .map(|_| ())
                    .or_else(|_| std::fs::read(path).map(|_| ()))
                {
                    Ok(()) => format!("file {path}: READABLE"),
                    Err(_) => format!("file {path}: denied"),
                },
            );
        }
        let env_count = std::env::vars_os().count();
        seen.push(format!("env vars: {env_count}"));
        seen.push(format!("process args: {}", std::env::args_os().count()));
        eprintln!("snoop was here");
        Ok(seen.join("; "))
    }
}

mmvip_sdk::export!(Snoop {
    kind: check,
    about: "reports what of the host it can see: files, environment, arguments",
    grants: ["log"],
    timeout_ms: 1000,
});
