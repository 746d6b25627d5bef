//! What the two guards say to each other: one request and one answer per TCP
//! connection, each a line of words ending in an HMAC-SHA256 (hex) of the rest of the
//! line under the secret both nodes share. An answer echoes the request's nonce, so
//! an old answer cannot be passed off as a new one.
//!
//! ```text
//! VOTE <instance> <from> <nonce>      →  GRANT <instance> <nonce> <valid_ms>
//!                                      |  DENY <instance> <nonce> <holder> <left_ms>
//! RELEASE <instance> <from> <nonce>   →  OK <nonce>
//! ```

use std::io::{BufRead as _, BufReader, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use sha2::{Digest, Sha256};

/// Longest line either side accepts.
const MAX_LINE: usize = 512;

/// The shared secret.
#[derive(Clone)]
pub struct Secret(Vec<u8>);

impl Secret {
    pub fn new(bytes: Vec<u8>) -> Result<Secret, String> {
        if bytes.len() < 16 {
            return Err("the guard secret must be at least 16 bytes".into());
        }
        Ok(Secret(bytes))
    }

    fn mac(&self, message: &str) -> String {
        let mut key = [0u8; 64];
        if self.0.len() > 64 {
            key[..32].copy_from_slice(&Sha256::digest(&self.0));
        } else {
            key[..self.0.len()].copy_from_slice(&self.0);
        }
        let pad = |byte: u8| key.iter().map(|k| k ^ byte).collect::<Vec<u8>>();
        let inner = Sha256::new()
            .chain_update(pad(0x36))
            .chain_update(message.as_bytes())
            .finalize();
        let outer = Sha256::new()
            .chain_update(pad(0x5c))
            .chain_update(inner)
            .finalize();
        outer.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// `message` with its MAC appended.
    pub fn sign(&self, message: &str) -> String {
        format!("{message} {}\n", self.mac(message))
    }

    /// The words of a signed line, if its MAC is right.
    pub fn verify<'a>(&self, line: &'a str) -> Option<Vec<&'a str>> {
        let line = line.trim_end();
        let (message, mac) = line.rsplit_once(' ')?;
        let expected = self.mac(message);
        // Compared in constant time: the MAC must not leak through timing.
        let same = mac.len() == expected.len()
            && mac
                .bytes()
                .zip(expected.bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0;
        same.then(|| message.split(' ').collect())
    }
}

/// A fresh random nonce.
pub fn nonce() -> String {
    let mut bytes = [0u8; 16];
    // getrandom only fails before the kernel's pool is ready; a zero nonce then is
    // still unique enough with the MAC, and nothing else depends on it.
    let _ = rustix::rand::getrandom(&mut bytes, rustix::rand::GetRandomFlags::empty());
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Sends `request` to one address and returns the verified answer's words.
pub fn ask(
    secret: &Secret,
    address: SocketAddr,
    request: &str,
    timeout: Duration,
) -> Result<Vec<String>, String> {
    let mut stream = TcpStream::connect_timeout(&address, timeout).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(timeout))
        .and_then(|()| stream.set_write_timeout(Some(timeout)))
        .map_err(|e| e.to_string())?;
    let _ = stream.set_nodelay(true);
    stream
        .write_all(secret.sign(request).as_bytes())
        .map_err(|e| e.to_string())?;
    let line = read_line(&stream)?;
    let words = secret
        .verify(&line)
        .ok_or_else(|| "answer not signed with the shared secret".to_string())?;
    Ok(words.into_iter().map(String::from).collect())
}

/// Reads one line of at most [`MAX_LINE`] bytes.
pub fn read_line(stream: &TcpStream) -> Result<String, String> {
    let mut reader = BufReader::new(stream.take(MAX_LINE as u64));
    let mut line = String::new();
    reader.read_line(&mut line).map_err(|e| e.to_string())?;
    if !line.ends_with('\n') {
        return Err("no complete line".into());
    }
    Ok(line)
}

use std::io::Read as _;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signed_line_verifies_and_a_changed_one_does_not() {
        let secret = Secret::new(b"0123456789abcdef-shared".to_vec()).unwrap();
        let line = secret.sign("VOTE VI_1 node1 abcd");
        assert_eq!(
            secret.verify(&line),
            Some(vec!["VOTE", "VI_1", "node1", "abcd"])
        );
        let forged = line.replace("node1", "node2");
        assert_eq!(secret.verify(&forged), None);
        let other = Secret::new(b"another-secret-of-16".to_vec()).unwrap();
        assert_eq!(other.verify(&line), None);
        assert!(Secret::new(b"short".to_vec()).is_err());
    }

    #[test]
    fn hmac_matches_the_rfc_4231_vector() {
        // RFC 4231 test case 2 (key "Jefe").
        let secret = Secret(b"Jefe".to_vec());
        assert_eq!(
            secret.mac("what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    mod properties {
        use std::net::TcpListener;

        use proptest::prelude::*;

        use super::*;

        fn secret() -> Secret {
            Secret::new(b"0123456789abcdef-shared".to_vec()).unwrap()
        }

        /// A line as it may arrive: a signed one, one with a changed byte, garbage.
        fn line() -> impl Strategy<Value = String> {
            let words = prop::collection::vec("[A-Za-z0-9_.:-]{1,12}", 1..6);
            prop_oneof![
                words.clone().prop_map(|w| secret().sign(&w.join(" "))),
                (words, any::<prop::sample::Index>(), any::<char>()).prop_map(|(w, at, c)| {
                    let mut chars: Vec<char> = secret().sign(&w.join(" ")).chars().collect();
                    let at = at.index(chars.len());
                    chars[at] = c;
                    chars.into_iter().collect()
                }),
                // Cut short anywhere, the MAC included.
                (
                    prop::collection::vec("[A-Za-z0-9_.:-]{1,12}", 1..6),
                    any::<prop::sample::Index>()
                )
                    .prop_map(|(w, at)| {
                        let signed = secret().sign(&w.join(" "));
                        signed[..at.index(signed.len())].to_string()
                    }),
                any::<String>(),
            ]
        }

        proptest! {
            #![proptest_config(crate::proptest_config(2000))]

            #[test]
            fn only_lines_signed_with_the_secret_verify(
                words in prop::collection::vec("[A-Za-z0-9_.:-]{1,12}", 1..6),
                forged in line(),
            ) {
                let message = words.join(" ");
                let signed = secret().sign(&message);
                prop_assert_eq!(secret().verify(&signed), Some(words.iter().map(String::as_str).collect()));
                if let Some(verified) = secret().verify(&forged) {
                    // Whatever verifies is exactly what was signed.
                    let signed_again = secret().sign(&verified.join(" "));
                    prop_assert_eq!(signed_again.trim_end(), forged.trim_end());
                }
            }
        }

        proptest! {
            // Each case opens a loopback connection.
            #![proptest_config(crate::proptest_config(200))]

            #[test]
            fn a_read_line_is_one_bounded_line_or_an_error(
                bytes in prop_oneof![
                    prop::collection::vec(any::<u8>(), 0..1200),
                    line().prop_map(String::into_bytes),
                    (1..4000usize).prop_map(|n| vec![b'A'; n]),
                ],
            ) {
                let listener = TcpListener::bind("127.0.0.1:0").unwrap();
                let mut client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
                let (server, _) = listener.accept().unwrap();
                server.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                client.write_all(&bytes).unwrap();
                drop(client);
                match read_line(&server) {
                    Ok(line) => {
                        prop_assert!(line.len() <= MAX_LINE);
                        prop_assert!(line.ends_with('\n'));
                        prop_assert_eq!(line.matches('\n').count(), 1);
                        prop_assert!(bytes.starts_with(line.as_bytes()));
                    }
                    Err(why) => prop_assert!(!why.is_empty()),
                }
            }
        }
    }
}
