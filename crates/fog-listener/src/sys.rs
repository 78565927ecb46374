//! The few socket calls the kernel data path needs that `rustix` does not wrap. This is the
//! only module of the crate with `unsafe`: each block is one libc call on a borrowed,
//! open file descriptor, with pointers to locals that outlive the call.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

/// `setsockopt(SO_RCVLOWAT, 1)`. Besides setting the low-water mark (1 is the default), TCP
/// re-runs its data-ready check, which makes the sockmap verdict program look at bytes that
/// were already queued before the socket joined the map (Linux `tcp_set_rcvlowat`).
pub(crate) fn kick_receive_queue(fd: BorrowedFd<'_>) -> io::Result<()> {
    let one: libc::c_int = 1;
    // SAFETY: `fd` is an open socket for the duration of the call; `one` is a live c_int
    // and its size is passed.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVLOWAT,
            std::ptr::from_ref(&one).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Bytes ever put into this TCP socket's send queue: acknowledged by the peer
/// (`tcpi_bytes_acked`) plus still queued (`SIOCOUTQ`). Read in that order, the sum can
/// only lag the truth, never run ahead of it.
pub(crate) fn bytes_queued_for_send(fd: BorrowedFd<'_>) -> io::Result<u64> {
    // struct tcp_info, read as u64 words; tcpi_bytes_acked is at byte offset 120 (Linux
    // 4.1 and later).
    const BYTES_ACKED_WORD: usize = 120 / 8;
    let mut info = [0u64; 32];
    let mut len = std::mem::size_of_val(&info) as libc::socklen_t;
    // SAFETY: `fd` is an open socket; `info` is a writable buffer of `len` bytes, and the
    // kernel writes at most `len` bytes and stores the written length in `len`.
    let rc = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            info.as_mut_ptr().cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    if (len as usize) < (BYTES_ACKED_WORD + 1) * 8 {
        return Err(io::Error::other("tcp_info too short for tcpi_bytes_acked"));
    }
    let acked = info[BYTES_ACKED_WORD];
    let mut queued: libc::c_int = 0;
    // SAFETY: `fd` is an open socket; TIOCOUTQ (SIOCOUTQ) writes one c_int to `queued`.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCOUTQ, &mut queued) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(acked + u64::try_from(queued).unwrap_or(0))
}

/// Register a file descriptor this code owns (an epoll set) with tokio's reactor for
/// readability.
pub(crate) fn register_readable(
    fd: std::os::fd::OwnedFd,
) -> io::Result<tokio::io::unix::AsyncFd<std::os::fd::OwnedFd>> {
    // SAFETY: the AsyncFd takes ownership of `fd`, an `OwnedFd`: it stays open, and refers to
    // the same file description, until the AsyncFd drops it.
    unsafe { tokio::io::unix::AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) }
        .map_err(|e| e.into_parts().1)
}
