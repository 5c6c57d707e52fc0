//! Where a layer's packed weights live: one zeroed block of vectors per layer, `W_ih` and
//! `W_hh` together, starting on a 64-byte line. On Linux a block of at least three quarters of
//! a transparent huge page (2 MiB on x86-64) gets a mapping of its own on a huge-page boundary,
//! advised into huge pages (`madvise(MADV_HUGEPAGE)`) before its first write
//! ([`mapped_bytes`] says how long).
//!
//! Every step streams all of a layer's `W_hh` (its worker's share), every chunk all of `W_ih`:
//! on 4 KiB pages, 256 pages per MiB, more than the first-level TLB holds from a few hundred
//! KiB on, and in a virtual machine, as on the Intel Xeon this was measured on (a KVM guest),
//! every miss that reaches the page tables walks two of them. Blocks on 2 MiB pages against
//! the heap, 2026-11-30, `gru bench`, alternating rounds (medians of the rounds' time ratios,
//! 2 threads unless said):
//!
//! - B = 1, I = H = 512: GRU 0.90×, LSTM 0.81× (8 rounds, 8 of 8 faster); one thread 0.87× and
//!   0.89× (4 rounds); a streaming step 0.82× and 0.93× (6 rounds);
//! - B = 1, I = H = 1024 (T = 50): 0.92× and 0.94× (8 of 8);
//! - B = 1, I = H = 256, whose block of 1.5 MiB (GRU) or 2 MiB (LSTM) takes one huge page:
//!   0.97× each (8 rounds, 7 of 8); a streaming step on one thread 0.89× and 0.85× (6 of 6),
//!   on two 0.99× (8 rounds);
//! - B = 64, whose tiles reuse every line of weights for many rows: 0.98–1.00× at I = H = 256,
//!   512 and 1024 (8 rounds); one thread 0.98–1.01× at 512 and 1024.
//!
//! The system's other buffers were no better for it: with transparent huge pages for every
//! allocation (`always`), B = 1 moved no further (0.99–1.00×, 6 rounds) and B = 64 0.97× at
//! I = H = 1024 (0.99× at 512); the projection's buffer advised alone took 1.02× (GRU) and
//! 1.06× (LSTM) there.
//!
//! One block per layer rather than one per pack: the GRU's two 3 MiB packs, each mapped on its
//! own, left a third of their lines on small pages and gained only 0.99× at B = 1,
//! I = H = 512; together they fill three huge pages.
//!
//! The system decides: with transparent huge pages disabled (`never`), the advice fails and the
//! block stays on small pages, as it does on other systems and for smaller blocks.

use wide::f32x8;

/// Two vectors on one 64-byte cache line: the storage of blocks that are not mapped, so that
/// every pair of panels starts on a line and a 16-lane load never straddles two. With the data
/// shifted by one vector instead, so that every such load straddled two lines, the GRU took
/// 1.07× the time at B = 64, I = H = 256, 1.09× at 512 and 1.24× at B = 1, I = H = 512 (2
/// threads, 4 alternating rounds, all slower; one thread 1.10× at B = 64, 512).
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Line([f32x8; 2]);

/// A zeroed block of vectors that starts on a 64-byte line (see the module docs).
pub(crate) struct PackStorage {
    memory: Memory,
    len: usize,
}

/// The block's size and where it lives, not its megabytes of weights.
impl std::fmt::Debug for PackStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let place = match self.memory {
            Memory::Lines(_) => "heap",
            #[cfg(target_os = "linux")]
            Memory::Mapped(_) => "own mapping",
        };
        write!(f, "PackStorage({} vectors, {place})", self.len)
    }
}

enum Memory {
    /// On the heap, in lines.
    Lines(Vec<Line>),
    /// A mapping of its own, on a huge-page boundary.
    #[cfg(target_os = "linux")]
    Mapped(huge::Mapping),
}

impl PackStorage {
    /// `len` zero vectors.
    pub(crate) fn zeroed(len: usize) -> Self {
        let bytes = len.saturating_mul(size_of::<f32x8>());
        #[cfg(target_os = "linux")]
        if let Some(huge_page) = huge_page_bytes()
            && let Some(mapped) = mapped_bytes(bytes, huge_page)
            && let Some(mapping) = huge::Mapping::new(mapped, huge_page)
        {
            return Self {
                memory: Memory::Mapped(mapping),
                len,
            };
        }
        Self {
            memory: Memory::Lines(vec![Line([f32x8::ZERO; 2]); len.div_ceil(2)]),
            len,
        }
    }

    /// The vectors.
    pub(crate) fn vectors(&self) -> &[f32x8] {
        match &self.memory {
            Memory::Lines(lines) => &line_vectors(lines)[..self.len],
            #[cfg(target_os = "linux")]
            Memory::Mapped(mapping) => mapping.vectors(self.len),
        }
    }

    /// The vectors, to write.
    pub(crate) fn vectors_mut(&mut self) -> &mut [f32x8] {
        match &mut self.memory {
            Memory::Lines(lines) => &mut line_vectors_mut(lines)[..self.len],
            #[cfg(target_os = "linux")]
            Memory::Mapped(mapping) => mapping.vectors_mut(self.len),
        }
    }

    /// Whether the block has a mapping of its own on a huge-page boundary (whether the system
    /// then backs it with huge pages is its own decision).
    #[cfg(test)]
    fn is_mapped(&self) -> bool {
        match self.memory {
            Memory::Lines(_) => false,
            #[cfg(target_os = "linux")]
            Memory::Mapped(_) => true,
        }
    }
}

/// The lines' vectors, in order.
fn line_vectors(lines: &[Line]) -> &[f32x8] {
    // SAFETY: `Line` is `repr(C)` around `[f32x8; 2]`, 64 bytes with no padding (two vectors
    // of 32 bytes), so a slice of lines is a slice of those arrays with the same length.
    let pairs: &[[f32x8; 2]] =
        unsafe { std::slice::from_raw_parts(lines.as_ptr().cast(), lines.len()) };
    pairs.as_flattened()
}

/// The lines' vectors, in order, to write.
fn line_vectors_mut(lines: &mut [Line]) -> &mut [f32x8] {
    // SAFETY: as in `line_vectors`; the borrow is the caller's exclusive one.
    let pairs: &mut [[f32x8; 2]] =
        unsafe { std::slice::from_raw_parts_mut(lines.as_mut_ptr().cast(), lines.len()) };
    pairs.as_flattened_mut()
}

/// Bytes to map for a block of `bytes`, given the size of a huge page: whole huge pages where
/// the last one's unused part is at most a third of the block (so blocks from three quarters
/// of a huge page on), else the block itself, its tail then on small pages (a block just over
/// one huge page maps itself, not two); `None`, the block staying on the heap, for a block
/// under one huge page that would leave more than that third of it unused.
#[cfg(any(target_os = "linux", test))]
fn mapped_bytes(bytes: usize, huge_page: usize) -> Option<usize> {
    let whole_pages = bytes.checked_next_multiple_of(huge_page)?;
    if whole_pages - bytes <= bytes / 3 && bytes > 0 {
        Some(whole_pages)
    } else if bytes >= huge_page {
        Some(bytes)
    } else {
        None
    }
}

/// The size of a transparent huge page, as the kernel reports it; `None` where it does not
/// (no THP support).
#[cfg(target_os = "linux")]
fn huge_page_bytes() -> Option<usize> {
    static BYTES: std::sync::OnceLock<Option<usize>> = std::sync::OnceLock::new();
    *BYTES.get_or_init(|| {
        let text =
            std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/hpage_pmd_size").ok()?;
        text.trim()
            .parse()
            .ok()
            .filter(|&b: &usize| b.is_power_of_two())
    })
}

#[cfg(target_os = "linux")]
mod huge {
    use std::ptr::NonNull;

    use wide::f32x8;

    /// An anonymous private mapping of `bytes` (whole pages) starting on a huge-page boundary,
    /// advised into huge pages; unmapped on drop.
    pub(super) struct Mapping {
        start: NonNull<f32x8>,
        bytes: usize,
    }

    // SAFETY: the mapping is owned by this value alone, as a `Vec`'s buffer is, and is only
    // written through `&mut self`.
    unsafe impl Send for Mapping {}
    // SAFETY: `&self` gives read access only.
    unsafe impl Sync for Mapping {}

    impl Mapping {
        /// At least `bytes`, zeroed, from a boundary of `huge_page` (a power of two); `None`
        /// if the system refuses the mapping.
        pub(super) fn new(bytes: usize, huge_page: usize) -> Option<Self> {
            // SAFETY: `sysconf` only reads a system value.
            let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).ok()?;
            if !page.is_power_of_two() || huge_page < page {
                return None;
            }
            let bytes = bytes.checked_next_multiple_of(page)?;
            // Room to slide the start to the next huge-page boundary: the kernel places a
            // mapping on page boundaries only.
            let span = bytes.checked_add(huge_page)?;
            // SAFETY: a new private anonymous mapping at an address of the kernel's choosing;
            // it touches no memory that exists yet.
            let raw = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    span,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                    -1,
                    0,
                )
            };
            if raw == libc::MAP_FAILED {
                return None;
            }
            let first = raw as usize;
            let start = first.next_multiple_of(huge_page);
            let (head, tail) = (start - first, first + span - (start + bytes));
            // SAFETY: both ranges are whole pages of the mapping just made (`first` and
            // `start` are page boundaries, `bytes` and `huge_page` whole pages), outside the
            // part kept, and nothing refers to them. A failed unmap leaves pages mapped that
            // no one uses, a leak of address space, not an error.
            unsafe {
                if head > 0 {
                    libc::munmap(raw, head);
                }
                if tail > 0 {
                    libc::munmap((start + bytes) as *mut libc::c_void, tail);
                }
            }
            // SAFETY: advice on the pages this mapping owns, given before any is touched so
            // that the first write faults in a huge page; it changes how the pages are backed,
            // never what they hold. Where it fails (huge pages disabled, or absent) the pages
            // stay small.
            unsafe { libc::madvise(start as *mut libc::c_void, bytes, libc::MADV_HUGEPAGE) };
            Some(Self {
                start: NonNull::new(start as *mut f32x8)?,
                bytes,
            })
        }

        /// The first `len` vectors.
        ///
        /// # Panics
        /// If `len` vectors do not fit the mapping.
        pub(super) fn vectors(&self, len: usize) -> &[f32x8] {
            assert!(len * size_of::<f32x8>() <= self.bytes);
            // SAFETY: the mapping holds `len` vectors (checked above), zeroed by the kernel or
            // written since, aligned (a huge-page boundary), and lives as long as `self`.
            unsafe { std::slice::from_raw_parts(self.start.as_ptr(), len) }
        }

        /// The first `len` vectors, to write.
        ///
        /// # Panics
        /// If `len` vectors do not fit the mapping.
        pub(super) fn vectors_mut(&mut self, len: usize) -> &mut [f32x8] {
            assert!(len * size_of::<f32x8>() <= self.bytes);
            // SAFETY: as in `vectors`, and `&mut self` makes the borrow exclusive.
            unsafe { std::slice::from_raw_parts_mut(self.start.as_ptr(), len) }
        }
    }

    impl Drop for Mapping {
        fn drop(&mut self) {
            // SAFETY: the mapping this value owns, which no borrow outlives.
            unsafe { libc::munmap(self.start.as_ptr().cast(), self.bytes) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_map_whole_huge_pages_when_little_is_left_over() {
        let mib = 1 << 20;
        let huge = 2 * mib;
        assert_eq!(mapped_bytes(0, huge), None);
        assert_eq!(mapped_bytes(mib, huge), None, "half of it unused");
        assert_eq!(mapped_bytes(3 * mib / 2 - 64, huge), None);
        assert_eq!(
            mapped_bytes(3 * mib / 2, huge),
            Some(huge),
            "a third of the block"
        );
        assert_eq!(mapped_bytes(huge, huge), Some(huge));
        assert_eq!(mapped_bytes(3 * mib, huge), Some(2 * huge));
        assert_eq!(mapped_bytes(5 * mib, huge), Some(6 * mib));
        let just_over = huge + 64 * 1024;
        assert_eq!(
            mapped_bytes(just_over, huge),
            Some(just_over),
            "not a second page"
        );
        assert_eq!(mapped_bytes(24 * mib, huge), Some(24 * mib));
        assert_eq!(mapped_bytes(usize::MAX, huge), None, "no room to round up");
    }

    /// Blocks around the sizes that decide: zeroed, writable, aligned to a line, and mapped on
    /// a huge-page boundary exactly when [`mapped_bytes`] says so (where the system has huge
    /// pages).
    #[test]
    fn blocks_are_zeroed_aligned_and_mapped_as_decided() {
        #[cfg(target_os = "linux")]
        let huge = huge_page_bytes();
        #[cfg(not(target_os = "linux"))]
        let huge: Option<usize> = None;
        let vector = size_of::<f32x8>();
        let per_huge_page = huge.map_or(1 << 16, |bytes| bytes / vector);
        for len in [
            0,
            1,
            3,
            per_huge_page / 2,
            per_huge_page * 3 / 4,
            per_huge_page,
            per_huge_page * 5 / 2 + 1,
        ] {
            let mut block = PackStorage::zeroed(len);
            assert_eq!(block.vectors().len(), len);
            assert!(block.vectors().iter().all(|v| *v == f32x8::ZERO));
            assert_eq!(block.vectors().as_ptr() as usize % 64, 0, "len {len}");
            let want_mapped = huge.is_some_and(|h| mapped_bytes(len * vector, h).is_some());
            assert_eq!(block.is_mapped(), want_mapped, "len {len}");
            if let (true, Some(huge)) = (block.is_mapped(), huge) {
                assert_eq!(block.vectors().as_ptr() as usize % huge, 0, "len {len}");
            }
            for (i, v) in block.vectors_mut().iter_mut().enumerate() {
                *v = f32x8::splat(i as f32);
            }
            if let Some(last) = len.checked_sub(1) {
                assert_eq!(block.vectors()[last], f32x8::splat(last as f32));
            }
        }
    }
}
