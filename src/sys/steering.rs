//! Flow steering across the workers' `SO_REUSEPORT` sockets.
//!
//! Every datagram between two nodes has the same outer addresses and ports,
//! so the kernel's default reuseport choice (a hash of the outer 4-tuple)
//! hands all of a peer's traffic to one socket, hence one worker. That
//! worker then also writes every flow's packets to its own TUN queue, and
//! the TUN's flow table sends the replies of all those flows back out
//! through that same queue: one worker per node carries everything.
//!
//! [`steer_by_inner_flow`] attaches a classic BPF program to the group
//! that picks the socket from the *inner* packet instead: a hash of the
//! inner addresses and, for TCP and UDP, ports, folded to 16 bits (so both
//! directions of a flow get the same index), mixed by a multiplication
//! (`wire::flow::MIX`, high half) and taken modulo the number of sockets. A flow stays on one worker (no reordering); different flows
//! spread over all of them. The program sees the UDP payload (the kernel
//! has pulled the UDP header); a datagram that is not IPv4 or IPv6 gets an
//! out-of-range index, and the kernel falls back to its own hash.

use std::io;
use std::mem;
use std::os::fd::{AsRawFd, BorrowedFd};

use super::cvt;

/// asm-generic/socket.h; libc does not export it for Linux.
const SO_ATTACH_REUSEPORT_CBPF: libc::c_int = 51;

/// Index returned for datagrams that are not IP: beyond any group, so the
/// kernel uses its default selection.
const FALLBACK: u32 = u32::MAX;

const fn stmt(code: u32, k: u32) -> libc::sock_filter {
    libc::sock_filter { code: code as u16, jt: 0, jf: 0, k }
}

const fn jump(code: u32, k: u32, jt: u8, jf: u8) -> libc::sock_filter {
    libc::sock_filter { code: code as u16, jt, jf, k }
}

/// The steering program for a group of `sockets` sockets (≥ 1), for inner
/// IP packets `inner_offset` bytes into the UDP payload (0 for flannel's
/// udp format, 22 behind VXLAN and Ethernet headers).
pub fn program(sockets: u32, inner_offset: u32) -> Vec<libc::sock_filter> {
    let mut prog = program_at_zero(sockets);
    // Every packet load (absolute, indexed, or the IHL load) moves by the offset.
    for i in &mut prog {
        let code = u32::from(i.code);
        let class = code & 0x07;
        let mode = code & 0xe0;
        let load = class == libc::BPF_LD || class == libc::BPF_LDX;
        if load && (mode == libc::BPF_ABS || mode == libc::BPF_IND || mode == libc::BPF_MSH) {
            i.k += inner_offset;
        }
    }
    prog
}

/// [`program`] for inner packets at the start of the payload. Jump offsets
/// count instructions after the jump; the labels in the comments name the
/// targets.
fn program_at_zero(sockets: u32) -> Vec<libc::sock_filter> {
    use libc::{
        BPF_A, BPF_ABS, BPF_ALU, BPF_AND, BPF_B, BPF_IND, BPF_JA, BPF_JEQ, BPF_JMP, BPF_K, BPF_LD, BPF_LDX, BPF_MEM, BPF_MISC, BPF_MOD,
        BPF_MSH, BPF_MUL, BPF_RET, BPF_RSH, BPF_ST, BPF_TAX, BPF_W, BPF_X, BPF_XOR,
    };
    const TCP: u32 = 6;
    const UDP: u32 = 17;
    vec![
        /* 0 */ stmt(BPF_LD | BPF_B | BPF_ABS, 0),
        /* 1 */ stmt(BPF_ALU | BPF_RSH | BPF_K, 4),
        /* 2 */ jump(BPF_JMP | BPF_JEQ | BPF_K, 4, 1, 0), // v4 → 4
        /* 3 */ jump(BPF_JMP | BPF_JEQ | BPF_K, 6, 14, 38), // v6 → 18, else fallback → 42
        // v4: addresses, then ports at the IHL.
        /* 4 */ stmt(BPF_LD | BPF_W | BPF_ABS, 12),
        /* 5 */ stmt(BPF_MISC | BPF_TAX, 0),
        /* 6 */ stmt(BPF_LD | BPF_W | BPF_ABS, 16),
        /* 7 */ stmt(BPF_ALU | BPF_XOR | BPF_X, 0),
        /* 8 */ stmt(BPF_ST, 0),
        /* 9 */ stmt(BPF_LD | BPF_B | BPF_ABS, 9),
        /* 10 */ jump(BPF_JMP | BPF_JEQ | BPF_K, TCP, 1, 0), // → ports4 12
        /* 11 */ jump(BPF_JMP | BPF_JEQ | BPF_K, UDP, 0, 19), // else → no ports 31
        /* 12 */ stmt(BPF_LDX | BPF_B | BPF_MSH, 0),
        /* 13 */ stmt(BPF_LD | BPF_W | BPF_IND, 0),
        /* 14 */ stmt(BPF_MISC | BPF_TAX, 0),
        /* 15 */ stmt(BPF_LD | BPF_MEM, 0),
        /* 16 */ stmt(BPF_ALU | BPF_XOR | BPF_X, 0),
        /* 17 */ stmt(BPF_JMP | BPF_JA, 14), // → mix 32
        // v6: the last word of each address, then ports after the fixed header.
        /* 18 */ stmt(BPF_LD | BPF_W | BPF_ABS, 20),
        /* 19 */ stmt(BPF_MISC | BPF_TAX, 0),
        /* 20 */ stmt(BPF_LD | BPF_W | BPF_ABS, 36),
        /* 21 */ stmt(BPF_ALU | BPF_XOR | BPF_X, 0),
        /* 22 */ stmt(BPF_ST, 0),
        /* 23 */ stmt(BPF_LD | BPF_B | BPF_ABS, 6),
        /* 24 */ jump(BPF_JMP | BPF_JEQ | BPF_K, TCP, 1, 0), // → ports6 26
        /* 25 */ jump(BPF_JMP | BPF_JEQ | BPF_K, UDP, 0, 5), // else → no ports 31
        /* 26 */ stmt(BPF_LD | BPF_W | BPF_ABS, 40),
        /* 27 */ stmt(BPF_MISC | BPF_TAX, 0),
        /* 28 */ stmt(BPF_LD | BPF_MEM, 0),
        /* 29 */ stmt(BPF_ALU | BPF_XOR | BPF_X, 0),
        /* 30 */ stmt(BPF_JMP | BPF_JA, 1), // → mix 32
        // no ports: the address hash alone.
        /* 31 */ stmt(BPF_LD | BPF_MEM, 0),
        // mix: fold to 16 bits (symmetric in source and destination), then
        // multiply, keep the high half (wire::flow::flow_key) and pick the socket.
        /* 32 */
        stmt(BPF_ST, 1),
        /* 33 */ stmt(BPF_ALU | BPF_RSH | BPF_K, 16),
        /* 34 */ stmt(BPF_MISC | BPF_TAX, 0),
        /* 35 */ stmt(BPF_LD | BPF_MEM, 1),
        /* 36 */ stmt(BPF_ALU | BPF_XOR | BPF_X, 0),
        /* 37 */ stmt(BPF_ALU | BPF_AND | BPF_K, 0xffff),
        /* 38 */ stmt(BPF_ALU | BPF_MUL | BPF_K, crate::wire::flow::MIX),
        /* 39 */ stmt(BPF_ALU | BPF_RSH | BPF_K, 16),
        /* 40 */ stmt(BPF_ALU | BPF_MOD | BPF_K, sockets.max(1)),
        /* 41 */ stmt(BPF_RET | BPF_A, 0),
        // fallback (reached from 3 only; 41 above returns first).
        /* 42 */ stmt(BPF_RET | BPF_K, FALLBACK),
    ]
}

/// Attaches [`program`] to the reuseport group `fd` belongs to (any member
/// will do; the program is the group's). Sockets are numbered in the order
/// they joined the group.
pub fn steer_by_inner_flow(fd: BorrowedFd<'_>, sockets: u32, inner_offset: u32) -> io::Result<()> {
    let mut prog = program(sockets, inner_offset);
    let fprog = libc::sock_fprog { len: prog.len() as u16, filter: prog.as_mut_ptr() };
    // SAFETY: fprog points at `prog`, which outlives the call; the kernel
    // copies the program before returning.
    cvt(unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            SO_ATTACH_REUSEPORT_CBPF,
            (&fprog as *const libc::sock_fprog).cast(),
            mem::size_of::<libc::sock_fprog>() as libc::socklen_t,
        )
    })?;
    Ok(())
}

#[cfg(test)]
mod tests;
