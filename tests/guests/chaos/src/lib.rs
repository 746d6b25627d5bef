//! A check plugin that plays a script from its arguments, for the property test of
//! the host-guest boundary (tests/guest_boundary.rs): some host calls, then an end
//! chosen by the test. Each argument is `ACTION` or `ACTION:TEXT`.
//!
//! Along the way: `log:TEXT`, `state:TEXT` (a key), `sql` (asks a server that is not
//! there), `work:N` (N thousand loop rounds), `fill:N` (keeps N MiB, so that a later
//! host call may run out of memory while handing its answer over).
//! Ends (the first one ends the run; none is a pass): `ok:TEXT`, `fail:TEXT`,
//! `usage:TEXT`, `long:N` (a pass with an N-byte message), `panic:TEXT`, `trap`
//! (an `unreachable` instruction), `exit:N`, `spin`, `oom`, `recurse`.

use mmvip_sdk::{Call, Outcome, Plugin, failed, log, sql, state, usage};

struct Chaos;

fn number(text: &str) -> usize {
    text.parse().unwrap_or(1)
}

/// Deep enough to overflow any stack; `black_box` keeps the recursion real.
fn recurse(depth: u64) -> u64 {
    let frame = std::hint::black_box([depth; 64]);
    if std::hint::black_box(depth) == u64::MAX {
        return frame[0];
    }
    recurse(depth + 1) + frame[0]
}

impl Plugin for Chaos {
    fn run(call: &Call) -> Outcome {
        let mut kept: Vec<Vec<u8>> = Vec::new();
        for arg in call.args() {
            let (action, text) = arg.split_once(':').unwrap_or((arg, ""));
            match action {
                "log" => log::info(text),
                "state" => {
                    let _ = state::set(text, Some(text));
                }
                "sql" => {
                    let _ = sql::read::global_variable("read_only");
                }
                "work" => {
                    let mut sum = 0u64;
                    for i in 0..number(text) * 1000 {
                        sum = std::hint::black_box(sum.wrapping_add(i as u64));
                    }
                    std::hint::black_box(sum);
                }
                "fill" => {
                    for _ in 0..number(text) {
                        kept.push(vec![1; 1 << 20]);
                    }
                    std::hint::black_box(&kept);
                }
                "ok" => return Ok(text.to_string()),
                "fail" => return Err(failed(text)),
                "usage" => return Err(usage(text)),
                "long" => return Ok("m".repeat(number(text))),
                "panic" => panic!("{text}"),
                "trap" => std::process::abort(),
                "exit" => std::process::exit(number(text) as i32),
                "spin" => loop {
                    std::hint::black_box(());
                },
                "oom" => {
                    let mut hoard: Vec<Vec<u8>> = Vec::new();
                    loop {
                        hoard.push(vec![1; 1 << 20]);
                        std::hint::black_box(&hoard);
                    }
                }
                "recurse" => return Ok(recurse(0).to_string()),
                _ => {}
            }
        }
        Ok("script done".into())
    }
}

mmvip_sdk::export!(Chaos {
    kind: check,
    about: "plays a script of host calls and ends as its arguments say (boundary property test)",
    grants: ["log", "state", "sql-read"],
    timeout_ms: 1000,
});
