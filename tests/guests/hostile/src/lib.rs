//! A check plugin that does, with the grants it is given, whatever its arguments say:
//! each action tries to make the host do more than its grants or bounds allow.
//!
//! `set NAME VALUE`      sql-admin set-global-variable
//! `long-names COUNT`    sql-read with a 100 KB variable name, COUNT times (log flood)
//! `log-flood COUNT`     COUNT log lines of 64 KB
//! `state-flood COUNT`   COUNT state keys with 4 KB values
//! `state-get KEY`       the value of a state key
//! `raw STATEMENT`       sql-raw query; answers with the row count
//! `exit CODE`           calls exit() instead of returning
//! `long-message BYTES`  fails with a message of BYTES bytes

use mmvip_sdk::{Call, Outcome, Plugin, failed, log, sql, state, usage};

struct Hostile;

fn count(call: &Call) -> Result<usize, mmvip_sdk::HookError> {
    call.args()
        .get(1)
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| usage("needs a count"))
}

impl Plugin for Hostile {
    fn run(call: &Call) -> Outcome {
        let arg = |i: usize| call.args().get(i).map(String::as_str).unwrap_or_default();
        match arg(0) {
            "set" => match sql::admin::set_global_variable(arg(1), arg(2), 1000) {
                Ok(true) => Ok(format!("set {}", arg(1))),
                Ok(false) => Err(failed(format!("{} not set within 1 s", arg(1)))),
                Err(e) => Err(failed(e.to_string())),
            },
            "long-names" => {
                let name = "a".repeat(100_000);
                for _ in 0..count(call)? {
                    let _ = sql::read::global_variable(&name);
                }
                Ok("asked".into())
            }
            "log-flood" => {
                let line = "x".repeat(64 << 10);
                for _ in 0..count(call)? {
                    log::info(&line);
                }
                Ok("logged".into())
            }
            "state-flood" => {
                let value = "v".repeat(4 << 10);
                for n in 0..count(call)? {
                    state::set(&format!("key-{n}"), Some(&value))
                        .map_err(|why| failed(format!("state refused: {why}")))?;
                }
                Ok("stored".into())
            }
            "state-get" => Ok(state::get(arg(1)).unwrap_or_else(|| "(none)".into())),
            "raw" => sql::raw::query(arg(1))
                .map(|rows| format!("{} rows", rows.len()))
                .map_err(|e| failed(e.to_string())),
            "exit" => std::process::exit(arg(1).parse().unwrap_or(3)),
            "long-message" => Err(failed("m".repeat(count(call)?))),
            other => Err(usage(format!("unknown action `{other}`"))),
        }
    }
}

mmvip_sdk::export!(Hostile {
    kind: check,
    about: "uses its grants to try to exhaust or subvert the host",
    grants: ["log"],
    timeout_ms: 1000,
});
