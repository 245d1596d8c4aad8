use super::*;
use crate::wire::{Ipv4Packet, Ipv6Packet, UdpPacket};

/// A classic-BPF interpreter for the instructions [`program`] uses, with the
/// kernel's semantics: a load beyond the packet ends the program with 0.
fn run(prog: &[libc::sock_filter], pkt: &[u8]) -> u32 {
    use libc::*;
    let (mut a, mut x, mut mem, mut pc) = (0u32, 0u32, [0u32; 16], 0usize);
    let byte = |at: usize| pkt.get(at).map(|&b| u32::from(b));
    let word = |at: usize| pkt.get(at..at + 4).map(|w| u32::from_be_bytes(w.try_into().unwrap()));
    loop {
        let i = prog[pc];
        let (code, k) = (u32::from(i.code), i.k);
        pc += 1;
        match code {
            c if c == BPF_LD | BPF_B | BPF_ABS => match byte(k as usize) {
                Some(v) => a = v,
                None => return 0,
            },
            c if c == BPF_LD | BPF_W | BPF_ABS => match word(k as usize) {
                Some(v) => a = v,
                None => return 0,
            },
            c if c == BPF_LD | BPF_W | BPF_IND => match word((x + k) as usize) {
                Some(v) => a = v,
                None => return 0,
            },
            c if c == BPF_LDX | BPF_B | BPF_MSH => match byte(k as usize) {
                Some(v) => x = 4 * (v & 0xf),
                None => return 0,
            },
            c if c == BPF_LD | BPF_MEM => a = mem[k as usize],
            c if c == BPF_ST => mem[k as usize] = a,
            c if c == BPF_MISC | BPF_TAX => x = a,
            c if c == BPF_ALU | BPF_RSH | BPF_K => a >>= k,
            c if c == BPF_ALU | BPF_AND | BPF_K => a &= k,
            c if c == BPF_ALU | BPF_XOR | BPF_X => a ^= x,
            c if c == BPF_ALU | BPF_MOD | BPF_K => a %= k,
            c if c == BPF_ALU | BPF_MUL | BPF_K => a = a.wrapping_mul(k),
            c if c == BPF_JMP | BPF_JA => pc += k as usize,
            c if c == BPF_JMP | BPF_JEQ | BPF_K => pc += usize::from(if a == k { i.jt } else { i.jf }),
            c if c == BPF_RET | BPF_A => return a,
            c if c == BPF_RET | BPF_K => return k,
            other => panic!("instruction {other:#x} not modelled"),
        }
    }
}

/// 40 bytes that the program reads as IPv4 of `proto` with these
/// addresses and ports (and nothing else set: the program reads nothing else).
fn v4(proto: u8, src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16) -> Vec<u8> {
    let mut p = vec![0u8; 40];
    let mut ip = Ipv4Packet::new_unchecked(&mut p[..]);
    ip.set_version_and_header_len(20);
    ip.set_protocol(proto);
    ip.set_src_addr(src.into());
    ip.set_dst_addr(dst.into());
    write_ports(&mut p[20..], sport, dport);
    p
}

/// 60 bytes that the program reads as IPv6 of `proto`; the addresses are
/// `::src_low` and `::dst_low` (the program hashes their last words).
fn v6(proto: u8, src_low: u32, dst_low: u32, sport: u16, dport: u16) -> Vec<u8> {
    let mut p = vec![0u8; 60];
    let mut ip = Ipv6Packet::new_unchecked(&mut p[..]);
    ip.set_version_class_and_flow(0, 0);
    ip.set_next_header(proto);
    ip.set_src_addr(u128::from(src_low).into());
    ip.set_dst_addr(u128::from(dst_low).into());
    write_ports(&mut p[40..], sport, dport);
    p
}

/// Source and destination port at the start of `l4` (TCP and UDP alike).
fn write_ports(l4: &mut [u8], sport: u16, dport: u16) {
    let mut t = UdpPacket::new_unchecked(l4);
    t.set_src_port(sport);
    t.set_dst_port(dport);
}

/// The reference: what the program is meant to compute.
fn reference(addr_xor: u32, ports: Option<u32>, sockets: u32) -> u32 {
    let h = addr_xor ^ ports.unwrap_or(0);
    let h = (h ^ (h >> 16)) & 0xffff;
    (h.wrapping_mul(0x9E37_79B1) >> 16) % sockets
}

#[test]
fn program_computes_the_documented_hash() {
    let (a, b) = ([100, 96, 1, 2], [100, 96, 2, 3]);
    let xor = u32::from_be_bytes(a) ^ u32::from_be_bytes(b);
    for sockets in [1, 2, 3, 4, 7] {
        let prog = program(sockets, 0);
        for (sport, dport) in [(40000u16, 5201u16), (1, 2), (65535, 0)] {
            let ports = Some((u32::from(sport) << 16) | u32::from(dport));
            assert_eq!(run(&prog, &v4(6, a, b, sport, dport)), reference(xor, ports, sockets));
            assert_eq!(run(&prog, &v4(17, a, b, sport, dport)), reference(xor, ports, sockets));
            // Other protocols: addresses only.
            assert_eq!(run(&prog, &v4(1, a, b, sport, dport)), reference(xor, None, sockets));
            assert_eq!(run(&prog, &v6(6, 0x0203, 0x0305, sport, dport)), reference(0x0203 ^ 0x0305, ports, sockets));
            assert_eq!(run(&prog, &v6(58, 0x0203, 0x0305, sport, dport)), reference(0x0203 ^ 0x0305, None, sockets));
        }
    }
}

#[test]
fn v4_options_move_the_ports() {
    let mut p = v4(6, [100, 96, 1, 2], [100, 96, 2, 3], 0, 0);
    Ipv4Packet::new_unchecked(&mut p[..]).set_version_and_header_len(24); // the ports start at 24
    write_ports(&mut p[24..], 0x9c40, 0x1451);
    let plain = v4(6, [100, 96, 1, 2], [100, 96, 2, 3], 0x9c40, 0x1451);
    for sockets in [2, 3, 5] {
        assert_eq!(run(&program(sockets, 0), &p), run(&program(sockets, 0), &plain));
    }
}

#[test]
fn both_directions_of_a_flow_get_the_same_socket() {
    for sockets in [2, 3, 4] {
        let prog = program(sockets, 0);
        for port in 30000..30100u16 {
            let there = v4(6, [100, 96, 1, 2], [100, 96, 2, 3], port, 5201);
            let back = v4(6, [100, 96, 2, 3], [100, 96, 1, 2], 5201, port);
            assert_eq!(run(&prog, &there), run(&prog, &back));
        }
    }
}

#[test]
fn flows_spread_over_every_socket() {
    for sockets in [2u32, 3, 4] {
        let prog = program(sockets, 0);
        let mut seen = vec![0u32; sockets as usize];
        for port in 40000..40064u16 {
            let i = run(&prog, &v4(6, [100, 96, 1, 2], [100, 96, 2, 3], port, 5201));
            seen[i as usize] += 1;
        }
        // Consecutive ephemeral ports: every socket gets a fair share.
        assert!(seen.iter().all(|&n| n >= 64 / sockets / 2), "{sockets} sockets: {seen:?}");
    }
}

#[test]
fn connects_even_ports_spread_too() {
    // Linux gives connect() even ephemeral ports (odd ones are left to
    // bind()), so the four streams of `iperf3 -P 4` come from four even
    // ports in a row. A hash whose low bit is the parity of the ports'
    // bits 0 and 8 put them all on one socket.
    for base in [40000u16, 40128, 51234, 60998] {
        for sockets in [2u32, 3, 4] {
            let prog = program(sockets, 0);
            let mut seen = vec![0u32; sockets as usize];
            for k in 0..64u16 {
                let i = run(&prog, &v4(6, [100, 96, 1, 2], [100, 96, 2, 3], base + 2 * k, 5201));
                seen[i as usize] += 1;
            }
            assert!(seen.iter().all(|&n| n >= 64 / sockets / 2), "ports {base}+2k, {sockets} sockets: {seen:?}");
        }
        // The four streams themselves: both of two workers carry some.
        let prog = program(2, 0);
        let four: Vec<u32> = (0..4u16).map(|k| run(&prog, &v4(6, [100, 96, 1, 2], [100, 96, 2, 3], base + 2 * k, 5201))).collect();
        assert!(four.contains(&0) && four.contains(&1), "ports {base}, {}, {}, {}: {four:?}", base + 2, base + 4, base + 6);
    }
}

#[test]
fn non_ip_and_short_datagrams_are_handled() {
    let prog = program(2, 0);
    // Not IP: the kernel's own choice.
    assert_eq!(run(&prog, &[0x10, 0, 0, 0]), FALLBACK);
    assert_eq!(run(&prog, &[]), 0);
    // Too short to hold the addresses: a load fails, the program returns 0
    // (socket 0); such a datagram is dropped by the ingress filter anyway.
    assert_eq!(run(&prog, &[0x45, 0, 0, 0, 0, 0, 0, 0, 0, 6]), 0);
}

#[test]
fn flow_key_is_symmetric_and_covers_ports() {
    use crate::wire::flow::flow_key;
    let (a, b) = ([100, 96, 1, 2], [100, 96, 2, 3]);
    assert_eq!(flow_key(&v4(6, a, b, 40000, 5201)), flow_key(&v4(6, b, a, 5201, 40000)));
    assert_ne!(flow_key(&v4(17, a, b, 40000, 5201)), flow_key(&v4(17, a, b, 40001, 5201)));
    // ICMP: addresses only.
    assert_eq!(flow_key(&v4(1, a, b, 1, 2)), flow_key(&v4(1, a, b, 3, 4)));
    assert_eq!(flow_key(&[0x45, 0, 0]), 0);
    assert_eq!(flow_key(&[]), 0);
}

/// The senders' run planning (`wire::flow::flow_key`) must agree with
/// the program on which socket each packet reaches, including truncated
/// packets, IPv4 options and other protocols.
#[test]
fn program_agrees_with_the_senders_flow_key() {
    use crate::wire::flow::flow_key;
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for _ in 0..20_000 {
        let len = (next() % 72) as usize;
        let mut pkt: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        if let Some(first) = pkt.first_mut() {
            *first = if next() % 2 == 0 { 0x40 | (*first & 0x0f) } else { 0x60 | (*first & 0x0f) };
        }
        let proto = [6u8, 17, 1, 58][(next() % 4) as usize];
        // Lengths may lie: the program hashes such packets too.
        let v4 = pkt.first().is_some_and(|b| b >> 4 == 4);
        if v4 && pkt.len() >= 20 {
            Ipv4Packet::new_unchecked(&mut pkt[..]).set_protocol(proto);
        } else if !v4 && pkt.len() >= 40 {
            Ipv6Packet::new_unchecked(&mut pkt[..]).set_next_header(proto);
        }
        for sockets in [2u32, 3, 4] {
            assert_eq!(run(&program(sockets, 0), &pkt), u32::from(flow_key(&pkt)) % sockets, "{sockets} sockets, packet {pkt:02x?}");
            // Behind VXLAN and Ethernet headers (whatever they hold), the same choice.
            let mut behind = vec![0x5a; 22];
            behind.extend_from_slice(&pkt);
            let want = if pkt.is_empty() { 0 } else { u32::from(flow_key(&pkt)) % sockets };
            if !pkt.is_empty() {
                assert_eq!(run(&program(sockets, 22), &behind), want, "{sockets} sockets, VXLAN packet {pkt:02x?}");
            }
        }
    }
}
