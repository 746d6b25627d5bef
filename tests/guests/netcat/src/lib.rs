//! A check that opens a TCP connection. Its component imports wasi:sockets, which
//! mmvip never links: it must be refused before it runs.

use mmvip_sdk::{Call, Outcome, Plugin, failed};

struct NetCat;

impl Plugin for NetCat {
    fn run(_call: &Call) -> Outcome {
        match std::net::TcpStream::connect("127.0.0.1:3306") {
            Ok(_) => Ok("connected".into()),
            Err(e) => Err(failed(e.to_string())),
        }
    }
}

mmvip_sdk::export!(NetCat {
    kind: check,
    about: "opens a TCP connection: must be refused for importing wasi:sockets",
    grants: ["log"],
    timeout_ms: 1000,
});
