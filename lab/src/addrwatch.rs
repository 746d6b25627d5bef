//! Event-driven view of one node's IPv4 addresses: a thread inside the node's
//! namespace listens to the kernel's rtnetlink address notifications, so a VIP added
//! or removed by keepalived is seen when it happens, not at the next poll.
//!
//! The socket joins the notification group before it asks for the current addresses,
//! so no change between the two is missed.

use std::collections::BTreeSet;
use std::ffi::CString;
use std::io;
use std::mem::size_of;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

/// How long one `recv` waits before the thread looks at its stop flag again.
const RECV_TIMEOUT: Duration = Duration::from_millis(50);
const DUMP_SEQ: u32 = 1;

/// A netlink route socket subscribed to IPv4 address changes of the namespace the
/// calling thread is in.
pub struct AddressEvents {
    fd: OwnedFd,
    /// The interface whose addresses are tracked.
    interface: u32,
    addresses: BTreeSet<Ipv4Addr>,
    buffer: Vec<u8>,
}

/// One batch of messages applied: whether the address set changed, and whether the
/// initial dump has ended.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Applied {
    pub changed: bool,
    pub dump_done: bool,
}

impl AddressEvents {
    /// Subscribes, then requests the current addresses of `interface`. Call from the
    /// thread that entered the node's namespace.
    pub fn open(interface: &str) -> io::Result<AddressEvents> {
        let name = CString::new(interface).map_err(|_| io::ErrorKind::InvalidInput)?;
        // SAFETY: `name` is a valid NUL-terminated string.
        let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
        if index == 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: plain socket(2) call; the result is checked before use.
        let raw = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::NETLINK_ROUTE,
            )
        };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a fresh descriptor this function owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: sockaddr_nl is plain data; zeroed is a valid value.
        let mut local: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        local.nl_family = libc::AF_NETLINK as u16;
        local.nl_groups = libc::RTMGRP_IPV4_IFADDR as u32;
        // SAFETY: `local` is a valid sockaddr_nl of the size passed.
        let bound = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&local as *const libc::sockaddr_nl).cast(),
                size_of::<libc::sockaddr_nl>() as u32,
            )
        };
        if bound < 0 {
            return Err(io::Error::last_os_error());
        }
        let timeout = libc::timeval {
            tv_sec: 0,
            tv_usec: RECV_TIMEOUT.as_micros() as libc::suseconds_t,
        };
        // SAFETY: `timeout` is a valid timeval of the size passed.
        let set = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&timeout as *const libc::timeval).cast(),
                size_of::<libc::timeval>() as u32,
            )
        };
        if set < 0 {
            return Err(io::Error::last_os_error());
        }
        let events = AddressEvents {
            fd,
            interface: index,
            addresses: BTreeSet::new(),
            buffer: vec![0; 64 * 1024],
        };
        events.request_dump()?;
        Ok(events)
    }

    fn request_dump(&self) -> io::Result<()> {
        let header = libc::nlmsghdr {
            nlmsg_len: (size_of::<libc::nlmsghdr>() + size_of::<libc::ifaddrmsg>()) as u32,
            nlmsg_type: libc::RTM_GETADDR,
            nlmsg_flags: (libc::NLM_F_REQUEST | libc::NLM_F_DUMP) as u16,
            nlmsg_seq: DUMP_SEQ,
            nlmsg_pid: 0,
        };
        let body = libc::ifaddrmsg {
            ifa_family: libc::AF_INET as u8,
            ifa_prefixlen: 0,
            ifa_flags: 0,
            ifa_scope: 0,
            ifa_index: 0,
        };
        let mut message = Vec::with_capacity(header.nlmsg_len as usize);
        // SAFETY: both are plain repr(C) structs without padding; viewing them as
        // bytes is sound.
        unsafe {
            message.extend_from_slice(std::slice::from_raw_parts(
                (&header as *const libc::nlmsghdr).cast::<u8>(),
                size_of::<libc::nlmsghdr>(),
            ));
            message.extend_from_slice(std::slice::from_raw_parts(
                (&body as *const libc::ifaddrmsg).cast::<u8>(),
                size_of::<libc::ifaddrmsg>(),
            ));
        }
        // SAFETY: sockaddr_nl is plain data; zeroed (pid 0) addresses the kernel.
        let mut kernel: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        kernel.nl_family = libc::AF_NETLINK as u16;
        // SAFETY: valid buffer and address of the sizes passed.
        let sent = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                message.as_ptr().cast(),
                message.len(),
                0,
                (&kernel as *const libc::sockaddr_nl).cast(),
                size_of::<libc::sockaddr_nl>() as u32,
            )
        };
        if sent < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// The tracked interface's IPv4 addresses as last reported.
    pub fn addresses(&self) -> Vec<Ipv4Addr> {
        self.addresses.iter().copied().collect()
    }

    /// Waits up to the receive timeout for one batch of messages and applies it.
    /// `Ok(None)`: nothing arrived.
    pub fn receive(&mut self) -> io::Result<Option<Applied>> {
        // SAFETY: the buffer is valid for writes of its length.
        let received = unsafe {
            libc::recv(
                self.fd.as_raw_fd(),
                self.buffer.as_mut_ptr().cast(),
                self.buffer.len(),
                0,
            )
        };
        if received < 0 {
            let error = io::Error::last_os_error();
            return match error.kind() {
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => Ok(None),
                io::ErrorKind::Interrupted => Ok(None),
                _ => Err(error),
            };
        }
        let length = received as usize;
        let mut applied = Applied::default();
        for message in messages(&self.buffer[..length]) {
            match message {
                Message::Address { add, index, addr } if index == self.interface => {
                    applied.changed |= if add {
                        self.addresses.insert(addr)
                    } else {
                        self.addresses.remove(&addr)
                    };
                }
                Message::Done => applied.dump_done = true,
                Message::Address { .. } | Message::Other => {}
            }
        }
        Ok(Some(applied))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Message {
    Address {
        add: bool,
        index: u32,
        addr: Ipv4Addr,
    },
    Done,
    Other,
}

const HEADER: usize = 16;
const IFADDRMSG: usize = 8;

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

fn u16_at(bytes: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(bytes.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
}

/// The netlink messages in one datagram; a malformed tail ends the list.
fn messages(bytes: &[u8]) -> Vec<Message> {
    let mut out = Vec::new();
    let mut offset = 0;
    while offset + HEADER <= bytes.len() {
        let Some(length) = u32_at(bytes, offset).map(|l| l as usize) else {
            break;
        };
        let Some(kind) = u16_at(bytes, offset + 4) else {
            break;
        };
        if length < HEADER || offset + length > bytes.len() {
            break;
        }
        let body = &bytes[offset + HEADER..offset + length];
        out.push(match kind {
            libc::RTM_NEWADDR | libc::RTM_DELADDR => {
                parse_address(body, kind == libc::RTM_NEWADDR).unwrap_or(Message::Other)
            }
            k if k == libc::NLMSG_DONE as u16 => Message::Done,
            _ => Message::Other,
        });
        offset += align4(length);
    }
    out
}

/// An `ifaddrmsg` and its attributes: the IPv4 address is `IFA_LOCAL` (or
/// `IFA_ADDRESS` without it).
fn parse_address(body: &[u8], add: bool) -> Option<Message> {
    let family = *body.first()?;
    if i32::from(family) != libc::AF_INET {
        return None;
    }
    let index = u32_at(body, 4)?;
    let mut local = None;
    let mut address = None;
    let mut at = IFADDRMSG;
    while at + 4 <= body.len() {
        let length = usize::from(u16_at(body, at)?);
        let kind = u16_at(body, at + 2)?;
        if length < 4 || at + length > body.len() {
            break;
        }
        let data = &body[at + 4..at + length];
        if data.len() == 4 {
            let addr = Ipv4Addr::new(data[0], data[1], data[2], data[3]);
            match kind {
                libc::IFA_LOCAL => local = Some(addr),
                libc::IFA_ADDRESS => address = Some(addr),
                _ => {}
            }
        }
        at += align4(length);
    }
    Some(Message::Address {
        add,
        index,
        addr: local.or(address)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn address_message(kind: u16, index: u32, addr: [u8; 4]) -> Vec<u8> {
        let mut body = vec![libc::AF_INET as u8, 24, 0, 0];
        body.extend_from_slice(&index.to_ne_bytes());
        for attr in [libc::IFA_ADDRESS, libc::IFA_LOCAL] {
            body.extend_from_slice(&8u16.to_ne_bytes());
            body.extend_from_slice(&attr.to_ne_bytes());
            body.extend_from_slice(&addr);
        }
        let mut message = ((HEADER + body.len()) as u32).to_ne_bytes().to_vec();
        message.extend_from_slice(&kind.to_ne_bytes());
        message.extend_from_slice(&[0; 10]);
        message.extend_from_slice(&body);
        message
    }

    #[test]
    fn parses_new_and_deleted_addresses_and_the_dump_end() {
        let mut bytes = address_message(libc::RTM_NEWADDR, 3, [10, 77, 1, 99]);
        bytes.extend(address_message(libc::RTM_DELADDR, 3, [10, 77, 1, 98]));
        let mut done = (HEADER as u32 + 4).to_ne_bytes().to_vec();
        done.extend_from_slice(&(libc::NLMSG_DONE as u16).to_ne_bytes());
        done.extend_from_slice(&[0; 14]);
        bytes.extend(done);
        assert_eq!(
            messages(&bytes),
            vec![
                Message::Address {
                    add: true,
                    index: 3,
                    addr: Ipv4Addr::new(10, 77, 1, 99)
                },
                Message::Address {
                    add: false,
                    index: 3,
                    addr: Ipv4Addr::new(10, 77, 1, 98)
                },
                Message::Done,
            ]
        );
    }

    #[test]
    fn a_truncated_message_ends_the_list() {
        let bytes = address_message(libc::RTM_NEWADDR, 3, [10, 77, 1, 99]);
        assert!(messages(&bytes[..bytes.len() - 3]).is_empty());
    }
}
