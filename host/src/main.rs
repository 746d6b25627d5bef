use std::process::ExitCode;

fn main() -> ExitCode {
    ExitCode::from(mmvip::cli::main(std::env::args_os()))
}
