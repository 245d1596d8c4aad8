//! A small assembler for the eBPF instruction set: just the instructions
//! the kernel path's two programs use, with forward labels. It does no I/O;
//! the result is the encoded instructions `sys::bpf::load_tc_program`
//! takes.
//!
//! Why hand-assembled and not compiled C: two programs of a few dozen
//! instructions do not justify a C compiler (clang with a BPF target) and
//! an ELF loader in every build; their constants (addresses, ports,
//! interface indexes) are written in at load time instead of patched into
//! an object file. The verifier checks every program at load either way.

/// A register. `R0` holds return values, `R1`–`R5` are call arguments
/// (clobbered by calls), `R6`–`R9` survive calls, `R10` is the read-only
/// frame pointer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reg(u8);

pub const R0: Reg = Reg(0);
pub const R1: Reg = Reg(1);
pub const R2: Reg = Reg(2);
pub const R3: Reg = Reg(3);
pub const R4: Reg = Reg(4);
pub const R5: Reg = Reg(5);
pub const R6: Reg = Reg(6);
pub const R7: Reg = Reg(7);
pub const R8: Reg = Reg(8);
pub const R9: Reg = Reg(9);
pub const FP: Reg = Reg(10);

/// Memory access width.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Size {
    B,
    H,
    W,
    DW,
}

impl Size {
    fn bits(self) -> u8 {
        match self {
            Size::W => 0x00,
            Size::H => 0x08,
            Size::B => 0x10,
            Size::DW => 0x18,
        }
    }
}

/// Arithmetic operations (64-bit unless stated).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alu {
    Add,
    Sub,
    Or,
    And,
    Rsh,
    Xor,
    Mov,
}

impl Alu {
    fn bits(self) -> u8 {
        match self {
            Alu::Add => 0x00,
            Alu::Sub => 0x10,
            Alu::Or => 0x40,
            Alu::And => 0x50,
            Alu::Rsh => 0x70,
            Alu::Xor => 0xa0,
            Alu::Mov => 0xb0,
        }
    }
}

/// Conditions of a jump; unsigned comparisons.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cond {
    Eq,
    Ne,
    Gt,
}

impl Cond {
    fn bits(self) -> u8 {
        match self {
            Cond::Eq => 0x10,
            Cond::Gt => 0x20,
            Cond::Ne => 0x50,
        }
    }
}

const CLASS_LD: u8 = 0x00;
const CLASS_LDX: u8 = 0x01;
const CLASS_ST: u8 = 0x02;
const CLASS_STX: u8 = 0x03;
const CLASS_ALU: u8 = 0x04;
const CLASS_JMP: u8 = 0x05;
const CLASS_JMP32: u8 = 0x06;
const CLASS_ALU64: u8 = 0x07;
const MODE_IMM: u8 = 0x00;
const MODE_MEM: u8 = 0x60;
const SRC_X: u8 = 0x08;
const OP_END: u8 = 0xd0;
const OP_CALL: u8 = 0x80;
const OP_EXIT: u8 = 0x90;
const OP_JA: u8 = 0x00;
/// `src_reg` of a 64-bit immediate load that names a map by fd.
const PSEUDO_MAP_FD: u8 = 1;

/// A place in the program a jump can target, defined later.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Label(usize);

/// One instruction: opcode, registers, offset, immediate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Insn {
    pub code: u8,
    pub dst: u8,
    pub src: u8,
    pub off: i16,
    pub imm: i32,
}

impl Insn {
    /// The instruction as the kernel reads it (the host's byte order).
    pub fn encode(self) -> u64 {
        let bytes = self.off.to_ne_bytes();
        let imm = self.imm.to_ne_bytes();
        let regs = if cfg!(target_endian = "little") { (self.src << 4) | self.dst } else { (self.dst << 4) | self.src };
        u64::from_ne_bytes([self.code, regs, bytes[0], bytes[1], imm[0], imm[1], imm[2], imm[3]])
    }
}

/// A program being assembled.
#[derive(Debug, Default)]
pub struct Asm {
    insns: Vec<Insn>,
    labels: Vec<Option<usize>>,
    fixups: Vec<(usize, Label)>,
}

impl Asm {
    pub fn new() -> Asm {
        Asm::default()
    }

    fn push(&mut self, code: u8, dst: Reg, src: Reg, off: i16, imm: i32) {
        self.insns.push(Insn { code, dst: dst.0, src: src.0, off, imm });
    }

    /// A label to jump to, placed later with [`Asm::place`].
    pub fn label(&mut self) -> Label {
        self.labels.push(None);
        Label(self.labels.len() - 1)
    }

    /// The next instruction is where `label` points.
    pub fn place(&mut self, label: Label) {
        self.labels[label.0] = Some(self.insns.len());
    }

    /// `dst op= imm` (64-bit; `imm` is sign-extended).
    pub fn alu_imm(&mut self, op: Alu, dst: Reg, imm: i32) {
        self.push(CLASS_ALU64 | op.bits(), dst, R0, 0, imm);
    }

    /// `dst op= src` (64-bit).
    pub fn alu_reg(&mut self, op: Alu, dst: Reg, src: Reg) {
        self.push(CLASS_ALU64 | op.bits() | SRC_X, dst, src, 0, 0);
    }

    /// `dst = imm` as a 32-bit move: the upper half is zeroed, so any
    /// `u32` can be loaded without sign extension.
    pub fn mov32_imm(&mut self, dst: Reg, imm: u32) {
        self.push(CLASS_ALU | Alu::Mov.bits(), dst, R0, 0, imm as i32);
    }

    /// Converts the low `bits` (16 or 32) of `dst` between host and
    /// network byte order, zeroing the rest.
    pub fn to_be(&mut self, dst: Reg, bits: i32) {
        self.push(CLASS_ALU | OP_END | SRC_X, dst, R0, 0, bits);
    }

    /// `dst = *(size *)(src + off)`.
    pub fn load(&mut self, size: Size, dst: Reg, src: Reg, off: i16) {
        self.push(CLASS_LDX | MODE_MEM | size.bits(), dst, src, off, 0);
    }

    /// `*(size *)(dst + off) = src`.
    pub fn store(&mut self, size: Size, dst: Reg, off: i16, src: Reg) {
        self.push(CLASS_STX | MODE_MEM | size.bits(), dst, src, off, 0);
    }

    /// `*(size *)(dst + off) = imm`.
    pub fn store_imm(&mut self, size: Size, dst: Reg, off: i16, imm: i32) {
        self.push(CLASS_ST | MODE_MEM | size.bits(), dst, R0, off, imm);
    }

    /// `dst = imm` for any 64-bit value (a two-slot wide load).
    pub fn mov64_imm(&mut self, dst: Reg, imm: u64) {
        self.push(CLASS_LD | MODE_IMM | Size::DW.bits(), dst, R0, 0, imm as u32 as i32);
        self.push(0, R0, R0, 0, (imm >> 32) as u32 as i32);
    }

    /// `dst = map` (the map's fd, resolved by the kernel at load).
    pub fn load_map(&mut self, dst: Reg, map_fd: i32) {
        self.push(CLASS_LD | MODE_IMM | Size::DW.bits(), dst, Reg(PSEUDO_MAP_FD), 0, map_fd);
        self.push(0, R0, R0, 0, 0);
    }

    /// `if dst <cond> imm goto label`, comparing the low 32 bits only (a
    /// 64-bit comparison would sign-extend `imm`).
    pub fn jump32_imm(&mut self, cond: Cond, dst: Reg, imm: u32, label: Label) {
        self.fixups.push((self.insns.len(), label));
        self.push(CLASS_JMP32 | cond.bits(), dst, R0, 0, imm as i32);
    }

    /// `if dst <cond> imm goto label` (64-bit, `imm` sign-extended): the
    /// form the verifier needs to learn that a pointer is not null.
    pub fn jump_imm(&mut self, cond: Cond, dst: Reg, imm: i32, label: Label) {
        self.fixups.push((self.insns.len(), label));
        self.push(CLASS_JMP | cond.bits(), dst, R0, 0, imm);
    }

    /// `if dst <cond> src goto label` (64-bit).
    pub fn jump_reg(&mut self, cond: Cond, dst: Reg, src: Reg, label: Label) {
        self.fixups.push((self.insns.len(), label));
        self.push(CLASS_JMP | cond.bits() | SRC_X, dst, src, 0, 0);
    }

    /// `if dst <cond> src goto label`, low 32 bits.
    pub fn jump32_reg(&mut self, cond: Cond, dst: Reg, src: Reg, label: Label) {
        self.fixups.push((self.insns.len(), label));
        self.push(CLASS_JMP32 | cond.bits() | SRC_X, dst, src, 0, 0);
    }

    /// `goto label`.
    pub fn jump(&mut self, label: Label) {
        self.fixups.push((self.insns.len(), label));
        self.push(CLASS_JMP | OP_JA, R0, R0, 0, 0);
    }

    /// Calls kernel helper number `helper` (arguments in R1–R5, result in R0).
    pub fn call(&mut self, helper: i32) {
        self.push(CLASS_JMP | OP_CALL, R0, R0, 0, helper);
    }

    /// Returns R0.
    pub fn exit(&mut self) {
        self.push(CLASS_JMP | OP_EXIT, R0, R0, 0, 0);
    }

    /// The finished program, every jump resolved; panics on a label that
    /// was never placed or a jump too far, which are bugs in the program's
    /// builder (covered by its tests), not in any input.
    pub fn finish(mut self) -> Vec<Insn> {
        for &(at, label) in &self.fixups {
            let target = self.labels[label.0].expect("jump to a label that was never placed");
            let off = target as i64 - at as i64 - 1;
            self.insns[at].off = i16::try_from(off).expect("jump out of range");
        }
        self.insns
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodings_match_the_instruction_set() {
        let mut a = Asm::new();
        let end = a.label();
        a.alu_reg(Alu::Mov, R6, R1); // r6 = r1
        a.load(Size::W, R2, R6, 16); // r2 = *(u32 *)(r6 + 16)
        a.jump32_imm(Cond::Ne, R2, 8, end);
        a.to_be(R3, 16);
        a.call(50);
        a.place(end);
        a.exit();
        let insns = a.finish();
        assert_eq!(insns[0], Insn { code: 0xbf, dst: 6, src: 1, off: 0, imm: 0 });
        assert_eq!(insns[1], Insn { code: 0x61, dst: 2, src: 6, off: 16, imm: 0 });
        assert_eq!(insns[2], Insn { code: 0x56, dst: 2, src: 0, off: 2, imm: 8 });
        assert_eq!(insns[3], Insn { code: 0xdc, dst: 3, src: 0, off: 0, imm: 16 });
        assert_eq!(insns[4], Insn { code: 0x85, dst: 0, src: 0, off: 0, imm: 50 });
        assert_eq!(insns[5].code, 0x95);
        if cfg!(target_endian = "little") {
            // llvm-objdump's bytes for `r6 = r1`: bf 16 00 00 00 00 00 00.
            assert_eq!(insns[0].encode().to_le_bytes(), [0xbf, 0x16, 0, 0, 0, 0, 0, 0]);
        }
    }

    #[test]
    fn a_map_load_takes_two_slots() {
        let mut a = Asm::new();
        a.load_map(R1, 7);
        let insns = a.finish();
        assert_eq!(insns.len(), 2);
        assert_eq!(insns[0], Insn { code: 0x18, dst: 1, src: 1, off: 0, imm: 7 });
        assert_eq!(insns[1], Insn { code: 0, dst: 0, src: 0, off: 0, imm: 0 });
    }

    #[test]
    fn a_wide_constant_is_split_low_half_first() {
        let mut a = Asm::new();
        a.mov64_imm(R4, 0x0e00_0000_0000_0053);
        let insns = a.finish();
        assert_eq!(insns[0], Insn { code: 0x18, dst: 4, src: 0, off: 0, imm: 0x53 });
        assert_eq!(insns[1], Insn { code: 0, dst: 0, src: 0, off: 0, imm: 0x0e00_0000 });
    }

    #[test]
    fn backward_and_forward_labels_resolve() {
        let mut a = Asm::new();
        let top = a.label();
        let out = a.label();
        a.place(top);
        a.jump(out);
        a.jump(top);
        a.place(out);
        a.exit();
        let insns = a.finish();
        assert_eq!(insns[0].off, 1);
        assert_eq!(insns[1].off, -2);
    }
}
