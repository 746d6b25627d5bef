use mmvip::cli::{self, Ended};
use mmvip::error::Error;
use mmvip::runtime::Verdict;

fn main() {
    exit(cli::run(std::env::args_os(), exit))
}

/// The one way out of mmvip: how a command ended, as its exit status. Everything is
/// logged by now; a hook's instance is not torn down first (the kernel reclaims it
/// in one go, faster than unmapping it piece by piece).
fn exit(ended: Ended) -> ! {
    let status: u8 = match &ended {
        Ended::Done | Ended::Hook(Verdict::Pass, _) => 0,
        Ended::Hook(Verdict::Fail | Verdict::Crash | Verdict::Timeout, _) => 1,
        Ended::Failed(Error::Failed(_)) => 1,
        Ended::Hook(Verdict::Usage, _) | Ended::Failed(Error::Usage(_)) => 2,
    };
    std::process::exit(i32::from(status))
}
