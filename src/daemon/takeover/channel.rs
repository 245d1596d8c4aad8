//! One end of a handover connection: [`Message`]s with fds over a
//! `SOCK_SEQPACKET` socket, every wait bounded, every failure a
//! [`ChannelError`] that says what was expected.

use std::os::fd::{BorrowedFd, OwnedFd};
use std::time::Duration;

use super::protocol::{self, DecodeError, MAX_MESSAGE, Message};
use crate::sys::fdpass::{PeerCred, SeqpacketConn};

/// How long a send may wait for room in the peer's queue.
const SEND_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a message could not be exchanged.
#[derive(Debug, thiserror::Error)]
pub enum ChannelError {
    /// The socket failed (the message says which operation).
    #[error("{what}: {source}")]
    Io { what: &'static str, source: std::io::Error },
    /// The peer closed the connection (it exited, or gave up).
    #[error("the peer closed the connection while this side waited for {0}")]
    Closed(&'static str),
    #[error("no {0} from the peer in time")]
    Timeout(&'static str),
    /// The peer sent something that is not a valid message.
    #[error("bad message from the peer (waiting for {expected}): {source}")]
    Malformed { expected: &'static str, source: DecodeError },
    /// A valid message, but not one that may come now.
    #[error("unexpected message from the peer: {got} (waiting for {expected})")]
    Unexpected { expected: &'static str, got: &'static str },
    /// The message came with the wrong number of fds.
    #[error("{message} came with {got} fds, expected {expected}")]
    Fds { message: &'static str, got: usize, expected: usize },
}

/// A connection speaking the handover protocol.
pub struct Channel {
    conn: SeqpacketConn,
    buf: Vec<u8>,
}

impl Channel {
    pub fn new(conn: SeqpacketConn) -> Channel {
        Channel { conn, buf: vec![0; MAX_MESSAGE] }
    }

    /// Who is at the other end.
    pub fn peer(&self) -> Result<PeerCred, ChannelError> {
        self.conn.peer().map_err(|source| ChannelError::Io { what: "reading the peer's credentials", source })
    }

    /// Sends `message` with `fds` attached.
    pub fn send(&self, message: &Message, fds: &[BorrowedFd<'_>]) -> Result<(), ChannelError> {
        let bytes = protocol::encode(message);
        self.conn.send(&bytes, fds, SEND_TIMEOUT).map_err(|source| ChannelError::Io { what: message.name(), source })
    }

    /// Receives the next message (waiting at most `timeout`); `expected`
    /// names what the caller waits for, in errors.
    pub fn recv(&mut self, expected: &'static str, timeout: Duration) -> Result<(Message, Vec<OwnedFd>), ChannelError> {
        let got = self.conn.recv(&mut self.buf, timeout).map_err(|source| match source.kind() {
            std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::ConnectionReset => ChannelError::Closed(expected),
            std::io::ErrorKind::TimedOut => ChannelError::Timeout(expected),
            _ => ChannelError::Io { what: expected, source },
        })?;
        let message = protocol::decode(&self.buf[..got.len]).map_err(|source| ChannelError::Malformed { expected, source })?;
        Ok((message, got.fds))
    }

    /// Receives a message that must come without fds.
    pub fn recv_plain(&mut self, expected: &'static str, timeout: Duration) -> Result<Message, ChannelError> {
        let (message, fds) = self.recv(expected, timeout)?;
        if !fds.is_empty() {
            return Err(ChannelError::Fds { message: message.name(), got: fds.len(), expected: 0 });
        }
        Ok(message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_and_surprises_are_errors() {
        let (a, b) = SeqpacketConn::pair().unwrap();
        let mut rx = Channel::new(b);
        a.send(b"not json", &[], SEND_TIMEOUT).unwrap();
        assert!(matches!(rx.recv("hello", Duration::from_secs(1)), Err(ChannelError::Malformed { .. })));
        let tx = Channel::new(a);
        tx.send(&Message::Done, &[]).unwrap();
        assert!(matches!(rx.recv_plain("ready", Duration::from_secs(1)), Ok(Message::Done)));
        let f = std::fs::File::open("/proc/self/stat").unwrap();
        use std::os::fd::AsFd;
        tx.send(&Message::Ready, &[f.as_fd()]).unwrap();
        assert!(matches!(rx.recv_plain("ready", Duration::from_secs(1)), Err(ChannelError::Fds { got: 1, .. })));
        assert!(matches!(rx.recv("ready", Duration::from_millis(20)), Err(ChannelError::Timeout("ready"))));
        drop(tx);
        assert!(matches!(rx.recv("ready", Duration::from_secs(1)), Err(ChannelError::Closed("ready"))));
    }
}
