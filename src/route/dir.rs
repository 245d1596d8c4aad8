//! IPv4 longest-prefix match as a 16-8-8 multibit trie with leaf pushing
//! (the DIR-16-8-8 layout of Gupta, Lin and McKeown's DIR-24-8): a lookup is
//! at most three dependent array loads, whatever the prefix lengths.
//!
//! Every entry is a `u32`: 0 for no route, `CHILD | n` for node `n` of the
//! next level, otherwise the route index plus one. Prefixes are inserted
//! shortest first, so a longer prefix only ever overwrites the expansion of a
//! shorter one, and a new node inherits the entry it replaces.

const CHILD: u32 = 1 << 31;
const NO_ROUTE: u32 = 0;

#[derive(Debug, Clone)]
pub struct Dir4 {
    root: Vec<u32>,
    mid: Vec<[u32; 256]>,
    leaf: Vec<[u32; 256]>,
}

impl Default for Dir4 {
    fn default() -> Self {
        Dir4 { root: vec![NO_ROUTE; 1 << 16], mid: Vec::new(), leaf: Vec::new() }
    }
}

impl Dir4 {
    /// Builds the trie from (network address, length, route index), in any
    /// order; prefixes must be distinct.
    pub fn build(prefixes: &mut [(u32, u8, u32)]) -> Dir4 {
        prefixes.sort_by_key(|p| p.1);
        let mut dir = Dir4::default();
        for &(addr, len, index) in prefixes.iter() {
            dir.insert(addr, len, index + 1);
        }
        dir
    }

    fn insert(&mut self, addr: u32, len: u8, value: u32) {
        let hi = (addr >> 16) as usize;
        if len <= 16 {
            let count = 1usize << (16 - len);
            self.root[hi..hi + count].fill(value);
            return;
        }
        let mid = self.child_of_root(hi);
        let m = ((addr >> 8) & 0xff) as usize;
        if len <= 24 {
            let count = 1usize << (24 - len);
            self.mid[mid][m..m + count].fill(value);
            return;
        }
        let leaf = self.child_of_mid(mid, m);
        let l = (addr & 0xff) as usize;
        let count = 1usize << (32 - len);
        self.leaf[leaf][l..l + count].fill(value);
    }

    fn child_of_root(&mut self, hi: usize) -> usize {
        let e = self.root[hi];
        if e & CHILD != 0 {
            return (e & !CHILD) as usize;
        }
        self.mid.push([e; 256]);
        let n = self.mid.len() - 1;
        self.root[hi] = CHILD | n as u32;
        n
    }

    fn child_of_mid(&mut self, mid: usize, m: usize) -> usize {
        let e = self.mid[mid][m];
        if e & CHILD != 0 {
            return (e & !CHILD) as usize;
        }
        self.leaf.push([e; 256]);
        let n = self.leaf.len() - 1;
        self.mid[mid][m] = CHILD | n as u32;
        n
    }

    /// The route index of the longest prefix containing `addr`.
    #[inline]
    pub fn lookup(&self, addr: u32) -> Option<u32> {
        let mut e = self.root[(addr >> 16) as usize];
        if e & CHILD != 0 {
            e = self.mid[(e & !CHILD) as usize][((addr >> 8) & 0xff) as usize];
            if e & CHILD != 0 {
                e = self.leaf[(e & !CHILD) as usize][(addr & 0xff) as usize];
            }
        }
        e.checked_sub(1)
    }

    /// Bytes held by the trie.
    pub fn bytes(&self) -> usize {
        self.root.len() * 4 + (self.mid.len() + self.leaf.len()) * 1024
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn longest_match_at_every_level() {
        let a = |s: &str| u32::from(s.parse::<std::net::Ipv4Addr>().unwrap());
        let mut p = vec![
            (a("10.0.0.0"), 8, 0),
            (a("10.1.2.0"), 24, 1),
            (a("10.1.0.0"), 16, 2),
            (a("10.1.2.128"), 25, 3),
            (a("10.1.2.129"), 32, 4),
            (0, 0, 5),
        ];
        let d = Dir4::build(&mut p);
        assert_eq!(d.lookup(a("10.9.9.9")), Some(0));
        assert_eq!(d.lookup(a("10.1.3.1")), Some(2));
        assert_eq!(d.lookup(a("10.1.2.1")), Some(1));
        assert_eq!(d.lookup(a("10.1.2.130")), Some(3));
        assert_eq!(d.lookup(a("10.1.2.129")), Some(4));
        assert_eq!(d.lookup(a("11.0.0.0")), Some(5));
        let d = Dir4::build(&mut [(a("10.1.2.128"), 25, 0)]);
        assert_eq!(d.lookup(a("10.1.2.127")), None);
        assert_eq!(d.lookup(a("10.1.2.255")), Some(0));
    }
}
