//! Keeping HTTP/1 connections across a restart in systemd's file descriptor store.
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
//! socket and is answered first. systemd closes stored connections on a real stop, and drops
//! one whose client closes it while it is stored (it polls them).
//!
//! This needs to know how many descriptors the unit may store (`FileDescriptorStoreMax=`): more
//! are closed by systemd, which would cut connections the drain had promised to keep. systemd
//! 254 and newer put that number in `$FDSTORE`; the packaged unit sets the same variable for
//! older versions. Without it (or without `NOTIFY_SOCKET`, or with `shutdown.keep_connections =
//! false`), or once the store is full, connections drain as before.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use sd_notify::NotifyState;

/// `FDNAME=` of stored connections, and how the next process tells them from listeners.
pub(crate) const CONNECTION_NAME: &str = "connection";
/// The variable in which systemd (254+) or the unit says how many fds may be stored.
const FDSTORE: &str = "FDSTORE";
/// The variable naming the manager's notification socket.
const NOTIFY_SOCKET: &str = "NOTIFY_SOCKET";

/// The part of systemd's fd store this process may fill with connections.
#[derive(Debug)]
pub(crate) struct Store {
    /// `FileDescriptorStoreMax=`, as told by `$FDSTORE`.
    capacity: usize,
    /// Places promised to connections (stored, or to be stored once idle).
    reserved: AtomicUsize,
    /// Connections actually sent to systemd.
    stored: AtomicUsize,
    /// Cleared when nothing more may be stored (a successor took over by an upgrade).
    open: AtomicBool,
}

impl Store {
    /// The store systemd offers this process, if any: `NOTIFY_SOCKET` and a positive
    /// `$FDSTORE` must both be set.
    pub(crate) fn from_env() -> Option<Store> {
        std::env::var_os(NOTIFY_SOCKET)?;
        let capacity = std::env::var(FDSTORE).ok()?.trim().parse().ok()?;
        Store::with_capacity(capacity)
    }

    /// A store for `capacity` connections; `None` if that is zero.
    fn with_capacity(capacity: usize) -> Option<Store> {
        (capacity > 0).then(|| Store {
            capacity,
            reserved: AtomicUsize::new(0),
            stored: AtomicUsize::new(0),
            open: AtomicBool::new(true),
        })
    }

    /// Promises a place to one connection; `false` when the store is full, and that connection
    /// drains instead.
    pub(crate) fn reserve(&self) -> bool {
        self.open.load(Ordering::Acquire)
            && self
                .reserved
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                    (n < self.capacity).then_some(n + 1)
                })
                .is_ok()
    }

    /// Refuses every later reservation: connections drain as without a store.
    pub(crate) fn refuse(&self) {
        self.open.store(false, Ordering::Release);
    }

    /// Gives back a place a connection did not use (it ended, or could not be kept).
    pub(crate) fn release(&self) {
        self.reserved.fetch_sub(1, Ordering::AcqRel);
    }

    /// Sends `fd` to systemd with `FDSTORE=1`, in a place reserved before. Our copy may be
    /// closed afterwards: systemd holds the connection now.
    pub(crate) async fn keep(&self, fd: OwnedFd) -> io::Result<()> {
        // The crate's send blocks while systemd's queue is full, so keep it off the runtime's
        // threads.
        let sent = tokio::task::spawn_blocking(move || {
            sd_notify::notify_with_fds(
                &[NotifyState::FdStore, NotifyState::FdName(CONNECTION_NAME)],
                &[fd.as_fd()],
            )
        })
        .await
        .unwrap_or_else(|join| Err(io::Error::other(join)));
        match sent {
            Ok(()) => {
                self.stored.fetch_add(1, Ordering::AcqRel);
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_stop_at_the_capacity() {
        let store = Store::with_capacity(2).expect("capacity 2");
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
    fn no_capacity_means_no_store() {
        assert!(Store::with_capacity(0).is_none());
    }
}
