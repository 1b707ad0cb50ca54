//! Keeping HTTP/1 connections across a restart (in systemd's file descriptor store) and across
//! a binary upgrade (handed to the successor).
//!
//! A restart used to close every keep-alive connection: a busy one after a response carrying
//! `Connection: close`, an idle one after `shutdown.linger`. A client that reuses an idle
//! connection without checking it first (most simple clients and scripts) then fails its next
//! request, and every client reconnects.
//!
//! systemd keeps the file descriptors a service sends it with `FDSTORE=1` while the service
//! restarts, and passes them to the next process after the socket unit's listeners, named by
//! `FDNAME=`. So when the drain starts, a connection that is idle at a request boundary (no
//! request in progress, nothing read ahead) is stored instead of closed; a busy one is stored
//! once its response has gone out. The next process adopts every stored connection, tells
//! systemd to forget its copies (`FDSTOREREMOVE=1`, or they would keep the TCP connection open
//! for ever), and serves them like any other: a request the client sent in between waits in the
//! socket and is answered first. systemd closes stored connections on a real stop.
//!
//! This needs to know how many descriptors the unit may store (`FileDescriptorStoreMax=`): more
//! are closed by systemd, which would cut connections the drain had promised to keep. systemd
//! 254 and newer put that number in `$FDSTORE`; the packaged unit sets the same variable for
//! older versions. Without it (or without `NOTIFY_SOCKET`, or with `shutdown.keep_connections =
//! false`), or once the store is full, connections drain as before.
//!
//! After a binary upgrade the successor already runs when the drain starts, so nothing passes
//! through systemd: the connections go over the socket pair the successor was started with
//! (see `upgrade`), one `SCM_RIGHTS` message each, and the successor serves them as they come.

use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use nix::sys::socket::{ControlMessage, ControlMessageOwned, MsgFlags, recvmsg, sendmsg};
use sd_notify::NotifyState;
use tokio::io::Interest;
use tokio::net::UnixStream;

/// `FDNAME=` of stored connections, and how the next process tells them from listeners.
pub(crate) const CONNECTION_NAME: &str = "connection";
/// The variable in which systemd (254+) or the unit says how many fds may be stored.
const FDSTORE: &str = "FDSTORE";
/// The variable naming the manager's notification socket.
const NOTIFY_SOCKET: &str = "NOTIFY_SOCKET";
/// The most fds one message carries (the kernel's `SCM_MAX_FD`).
const MAX_FDS_PER_MESSAGE: usize = 253;

/// Where the drain keeps connections: systemd's fd store, or a successor after an upgrade.
#[derive(Debug)]
pub(crate) struct Store {
    /// `FileDescriptorStoreMax=`, as told by `$FDSTORE`; 0 without a store.
    capacity: usize,
    /// Places promised to connections (kept, or to be kept once idle).
    reserved: AtomicUsize,
    /// Connections sent to systemd.
    stored: AtomicUsize,
    /// Connections handed to a successor.
    handed: AtomicUsize,
    /// Cleared when nothing more may be kept.
    open: AtomicBool,
    /// Set when a successor took over by an upgrade: connections go to it instead.
    successor: OnceLock<Handover>,
}

impl Store {
    /// The store for this process: systemd's, when `NOTIFY_SOCKET` and a positive `$FDSTORE`
    /// are both set; otherwise one that keeps connections only for an upgrade's successor.
    pub(crate) fn from_env() -> Store {
        let capacity = std::env::var_os(NOTIFY_SOCKET)
            .and_then(|_| std::env::var(FDSTORE).ok())
            .and_then(|max| max.trim().parse().ok())
            .unwrap_or(0);
        Store::with_capacity(capacity)
    }

    /// A store for `capacity` connections in systemd's store.
    fn with_capacity(capacity: usize) -> Store {
        Store {
            capacity,
            reserved: AtomicUsize::new(0),
            stored: AtomicUsize::new(0),
            handed: AtomicUsize::new(0),
            open: AtomicBool::new(true),
            successor: OnceLock::new(),
        }
    }

    /// Promises a place to one connection; `false` when there is none (no store, the store
    /// is full, or keeping was refused), and that connection drains instead.
    pub(crate) fn reserve(&self) -> bool {
        if !self.open.load(Ordering::Acquire) {
            return false;
        }
        if self.successor.get().is_some() {
            // The successor takes every connection (its own limits apply once it serves them).
            self.reserved.fetch_add(1, Ordering::AcqRel);
            return true;
        }
        self.reserved
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.capacity).then_some(n + 1)
            })
            .is_ok()
    }

    /// Refuses every later reservation: connections drain as without a store.
    pub(crate) fn refuse(&self) {
        self.open.store(false, Ordering::Release);
    }

    /// From now on, connections go to the successor that took over by an upgrade.
    pub(crate) fn hand_to(&self, successor: Handover) {
        if self.successor.set(successor).is_err() {
            // A second successor cannot happen (a process hands over once); refuse rather
            // than guess.
            self.refuse();
        }
    }

    /// Gives back a place a connection did not use (it ended, or could not be kept).
    pub(crate) fn release(&self) {
        self.reserved.fetch_sub(1, Ordering::AcqRel);
    }

    /// Sends `fd` where connections are kept, in a place reserved before. Our copy may be
    /// closed afterwards: the store or the successor holds the connection now.
    pub(crate) async fn keep(&self, fd: OwnedFd) -> io::Result<()> {
        let sent = match self.successor.get() {
            Some(successor) => successor.send(fd.as_fd()).await.map(|()| &self.handed),
            None => store_in_systemd(fd).await.map(|()| &self.stored),
        };
        match sent {
            Ok(counter) => {
                counter.fetch_add(1, Ordering::AcqRel);
                Ok(())
            }
            Err(error) => {
                self.release();
                Err(error)
            }
        }
    }

    /// How many connections were sent to systemd.
    pub(crate) fn stored(&self) -> usize {
        self.stored.load(Ordering::Acquire)
    }

    /// How many connections were handed to a successor.
    pub(crate) fn handed(&self) -> usize {
        self.handed.load(Ordering::Acquire)
    }
}

/// `FDSTORE=1` with `FDNAME=connection` and the fd.
async fn store_in_systemd(fd: OwnedFd) -> io::Result<()> {
    // The crate's send blocks while systemd's queue is full, so keep it off the runtime's
    // threads.
    tokio::task::spawn_blocking(move || {
        sd_notify::notify_with_fds(
            &[NotifyState::FdStore, NotifyState::FdName(CONNECTION_NAME)],
            &[fd.as_fd()],
        )
    })
    .await
    .unwrap_or_else(|join| Err(io::Error::other(join)))
}

/// The old process's end of the socket pair to a successor: connections go out over it.
#[derive(Debug)]
pub(crate) struct Handover(UnixStream);

impl Handover {
    /// The old process's end of the pair.
    pub(crate) fn new(stream: UnixStream) -> Self {
        Handover(stream)
    }

    /// Sends one connection: one byte, with the fd attached.
    async fn send(&self, fd: BorrowedFd<'_>) -> io::Result<()> {
        let fds = [fd.as_raw_fd()];
        let control = [ControlMessage::ScmRights(&fds)];
        let raw = self.0.as_raw_fd();
        self.0
            .async_io(Interest::WRITABLE, || {
                sendmsg::<()>(
                    raw,
                    &[IoSlice::new(b"c")],
                    &control,
                    MsgFlags::empty(),
                    None,
                )
                .map_err(io::Error::from)
            })
            .await
            .map(|_| ())
    }
}

/// A successor's end of the socket pair: the connections its predecessor hands over.
#[derive(Debug)]
pub(crate) struct Inbound(UnixStream);

impl Inbound {
    /// The successor's end of the pair.
    pub(crate) fn new(stream: UnixStream) -> Self {
        Inbound(stream)
    }

    /// The next connections handed over; empty once the predecessor has exited.
    pub(crate) async fn next(&self) -> io::Result<Vec<OwnedFd>> {
        let raw = self.0.as_raw_fd();
        loop {
            let received = self.0.async_io(Interest::READABLE, || receive(raw)).await?;
            match received {
                // End of file: the predecessor is gone.
                None => return Ok(Vec::new()),
                Some(fds) if fds.is_empty() => continue,
                Some(fds) => return Ok(fds),
            }
        }
    }
}

/// One `recvmsg`: the fds it carried, or `None` at end of file.
fn receive(raw: RawFd) -> io::Result<Option<Vec<OwnedFd>>> {
    let mut bytes = [0u8; 64];
    let mut iov = [IoSliceMut::new(&mut bytes)];
    let mut space = nix::cmsg_space!([RawFd; MAX_FDS_PER_MESSAGE]);
    let message = recvmsg::<()>(raw, &mut iov, Some(&mut space), MsgFlags::MSG_CMSG_CLOEXEC)
        .map_err(io::Error::from)?;
    let mut fds = Vec::new();
    for control in message.cmsgs().map_err(io::Error::from)? {
        if let ControlMessageOwned::ScmRights(received) = control {
            #[allow(unsafe_code)]
            // SAFETY: the kernel just installed these fds in this process, for us alone.
            fds.extend(
                received
                    .into_iter()
                    .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
            );
        }
    }
    if message.bytes == 0 && fds.is_empty() {
        return Ok(None);
    }
    Ok(Some(fds))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_stop_at_the_capacity() {
        let store = Store::with_capacity(2);
        assert!(store.reserve());
        assert!(store.reserve());
        assert!(!store.reserve(), "full");
        store.release();
        assert!(store.reserve(), "a released place is free again");
        assert_eq!(store.stored(), 0, "nothing sent yet");
        store.release();
        store.refuse();
        assert!(!store.reserve(), "refused, though there is room");
    }

    #[test]
    fn no_capacity_keeps_nothing_until_a_successor_takes_over() {
        let store = Store::with_capacity(0);
        assert!(!store.reserve());
        let (ours, _theirs) = std::os::unix::net::UnixStream::pair().expect("pair");
        ours.set_nonblocking(true).expect("non-blocking");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
            .expect("runtime");
        let _guard = runtime.enter();
        store.hand_to(Handover::new(UnixStream::from_std(ours).expect("tokio")));
        assert!(store.reserve(), "the successor takes every connection");
    }

    #[tokio::test]
    async fn a_successor_receives_the_very_connection() {
        let (ours, theirs) = UnixStream::pair().expect("pair");
        let (handover, inbound) = (Handover::new(ours), Inbound::new(theirs));
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let client =
            std::net::TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
        let (accepted, peer) = listener.accept().expect("accept");
        handover.send(accepted.as_fd()).await.expect("send");
        drop(accepted);
        let fds = inbound.next().await.expect("receive");
        assert_eq!(fds.len(), 1);
        let received = std::net::TcpStream::from(fds.into_iter().next().expect("one fd"));
        assert_eq!(
            received.peer_addr().expect("peer"),
            peer,
            "the same connection"
        );
        assert_eq!(
            client.local_addr().expect("local"),
            peer,
            "and the client's end of it"
        );
        drop(handover);
        assert!(inbound.next().await.expect("end of file").is_empty());
    }
}
