//! The global allocator: mimalloc, called the way its C API is fastest.
//!
//! pingora's HTTP/1 path allocates ~100 times per request; with glibc's malloc
//! that was a quarter of the instructions per request (callgrind), with
//! mimalloc's thread-local free lists about an eighth. Built without
//! transparent huge pages: a 2 MiB page per arena would add megabytes to an
//! idle proxy.
//!
//! The `mimalloc` crate sends every allocation through `mi_malloc_aligned`,
//! whose fast path only takes blocks up to 1 KiB: every larger one (header
//! buffers, request futures, read buffers: ~28 per request) went through its
//! generic over-allocating path at ~210 instructions each. mimalloc aligns
//! every block of 16 bytes or more to 16 (a smaller one to its size), so only
//! larger alignments need that path.

// The workspace denies unsafe code; a GlobalAlloc cannot be written without it.
#![allow(unsafe_code)]

use libmimalloc_sys as mi;
use std::alloc::{GlobalAlloc, Layout};
use std::ffi::c_void;

/// What `mi_malloc` guarantees (MI_MAX_ALIGN_SIZE), for blocks at least that
/// large; a smaller block is aligned to its size's power of two (8 for 8).
const NATURAL_ALIGN: usize = 16;

/// Whether `mi_malloc(size)` already returns blocks aligned to `align`.
#[inline]
fn natural(size: usize, align: usize) -> bool {
    align <= NATURAL_ALIGN && align <= size
}

pub struct MiMalloc;

// SAFETY: each call forwards to the mimalloc function of the same contract;
// an alignment above what mimalloc guarantees goes to its aligned variants.
unsafe impl GlobalAlloc for MiMalloc {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if natural(layout.size(), layout.align()) {
            mi::mi_malloc(layout.size()) as *mut u8
        } else {
            mi::mi_malloc_aligned(layout.size(), layout.align()) as *mut u8
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if natural(layout.size(), layout.align()) {
            mi::mi_zalloc(layout.size()) as *mut u8
        } else {
            mi::mi_zalloc_aligned(layout.size(), layout.align()) as *mut u8
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        mi::mi_free(ptr as *mut c_void);
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if natural(new_size, layout.align()) {
            mi::mi_realloc(ptr as *mut c_void, new_size) as *mut u8
        } else {
            mi::mi_realloc_aligned(ptr as *mut c_void, new_size, layout.align()) as *mut u8
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_keep_their_alignment_and_contents() {
        let a = MiMalloc;
        for align in [1, 8, 16, 32, 64, 128, 4096] {
            for size in [1, 2, 8, 12, 16, 24, 1000, 1025, 5_800, 70_000] {
                let layout = Layout::from_size_align(size, align).unwrap();
                unsafe {
                    let p = a.alloc(layout);
                    assert!(!p.is_null());
                    assert_eq!(p as usize % align, 0, "size {size} align {align}");
                    p.write_bytes(0xab, size);
                    let q = a.realloc(p, layout, size * 3);
                    assert_eq!(q as usize % align, 0, "realloc size {size} align {align}");
                    assert_eq!(*q.add(size - 1), 0xab);
                    a.dealloc(q, Layout::from_size_align(size * 3, align).unwrap());
                    let z = a.alloc_zeroed(layout);
                    assert_eq!(z as usize % align, 0);
                    assert!((0..size).all(|i| *z.add(i) == 0));
                    a.dealloc(z, layout);
                }
            }
        }
    }
}
