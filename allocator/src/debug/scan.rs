//! Comparing a range of bytes with one mark: the write-after-free check reads back every byte
//! of every block leaving the quarantine, so this is the debug layer's hottest loop, and it
//! has a file of its own (the SIMD variants beside the portable one).

/// The first offset in `[ptr, ptr+len)` whose byte differs from `want`.
///
/// # Safety
/// The range must be readable.
#[inline]
pub unsafe fn first_not(ptr: *const u8, len: usize, want: u8) -> Option<usize> {
    // SAFETY: the caller guarantees the range is readable.
    if unsafe { all_equal(ptr, len, want) } {
        return None;
    }
    // Rare (a defect is being reported): find the offset byte by byte.
    // SAFETY: as above; u8 has no invalid values.
    let bytes = unsafe { core::slice::from_raw_parts(ptr, len) };
    bytes.iter().position(|&b| b != want)
}

/// Whether every byte of `[ptr, ptr+len)` is `want`. Eviction scans every freed block, so
/// this is the hot loop of the debug layer: with AVX2 (checked at run time, the build
/// targets baseline x86_64), 128 bytes per step (four 32-byte compares, ANDed, one mask
/// test); otherwise 64 bytes per step with SSE2; then the tail a vector at a time and one
/// overlapping load for the rest. Other targets compare u64 words, four per step.
///
/// # Safety
/// The range must be readable.
#[inline]
pub unsafe fn all_equal(ptr: *const u8, len: usize, want: u8) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        // The feature test is a load of std's cached CPUID bits (no allocation, no lock).
        if len >= 32 && std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: AVX2 is present (just checked); every load is inside the range.
            return unsafe { all_equal_avx2(ptr, len, want) };
        }
        if len >= 16 {
            // SAFETY: SSE2 is part of x86_64; every load is of 16 bytes inside the range.
            return unsafe { all_equal_sse2(ptr, len, want) };
        }
    }
    // SAFETY: as required by this function.
    unsafe { all_equal_words(ptr, len, want) }
}

/// [`all_equal`] with 32-byte compares.
///
/// # Safety
/// The CPU has AVX2; `len >= 32`; the range is readable.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn all_equal_avx2(ptr: *const u8, len: usize, want: u8) -> bool {
    use core::arch::x86_64::*;
    // SAFETY (all loads): `len >= 32`; every load reads 32 bytes inside `[ptr, ptr+len)`.
    unsafe {
        let w = _mm256_set1_epi8(want as i8);
        let load = |at: usize| _mm256_loadu_si256(ptr.add(at) as *const __m256i);
        let eq = |at: usize| _mm256_cmpeq_epi8(load(at), w);
        let mut i = 0;
        while i + 128 <= len {
            let all = _mm256_and_si256(
                _mm256_and_si256(eq(i), eq(i + 32)),
                _mm256_and_si256(eq(i + 64), eq(i + 96)),
            );
            if _mm256_movemask_epi8(all) != -1 {
                return false;
            }
            i += 128;
        }
        while i + 32 <= len {
            if _mm256_movemask_epi8(eq(i)) != -1 {
                return false;
            }
            i += 32;
        }
        // The last (overlapping) 32 bytes cover the remaining 0..31.
        _mm256_movemask_epi8(eq(len - 32)) == -1
    }
}

#[cfg(target_arch = "x86_64")]
#[inline]
unsafe fn all_equal_sse2(ptr: *const u8, len: usize, want: u8) -> bool {
    use core::arch::x86_64::*;
    // SAFETY (all loads): `len >= 16`; every load reads 16 bytes inside `[ptr, ptr+len)`.
    unsafe {
        let w = _mm_set1_epi8(want as i8);
        let load = |at: usize| _mm_loadu_si128(ptr.add(at) as *const __m128i);
        let eq = |at: usize| _mm_cmpeq_epi8(load(at), w);
        let mut i = 0;
        while i + 64 <= len {
            let all = _mm_and_si128(
                _mm_and_si128(eq(i), eq(i + 16)),
                _mm_and_si128(eq(i + 32), eq(i + 48)),
            );
            if _mm_movemask_epi8(all) != 0xFFFF {
                return false;
            }
            i += 64;
        }
        while i + 16 <= len {
            if _mm_movemask_epi8(eq(i)) != 0xFFFF {
                return false;
            }
            i += 16;
        }
        // The last (overlapping) 16 bytes cover the remaining 0..15.
        _mm_movemask_epi8(eq(len - 16)) == 0xFFFF
    }
}

/// The portable version of [`all_equal`] (and its tail below 16 bytes on x86_64).
///
/// # Safety
/// The range must be readable.
#[inline]
unsafe fn all_equal_words(ptr: *const u8, len: usize, want: u8) -> bool {
    const W: usize = core::mem::size_of::<u64>();
    let word = u64::from_ne_bytes([want; W]);
    let mut i = 0;
    // SAFETY (all reads below): every read is of bytes inside `[ptr, ptr+len)`, which the
    // caller guarantees readable; unaligned reads of u64 are always allowed.
    unsafe {
        let load = |at: usize| (ptr.add(at) as *const u64).read_unaligned();
        while i + 4 * W <= len {
            let diff = (load(i) ^ word)
                | (load(i + W) ^ word)
                | (load(i + 2 * W) ^ word)
                | (load(i + 3 * W) ^ word);
            if diff != 0 {
                return false;
            }
            i += 4 * W;
        }
        while i + W <= len {
            if load(i) != word {
                return false;
            }
            i += W;
        }
        if len >= W {
            // The last (overlapping) word covers the remaining 1..7 bytes.
            return load(len - W) == word;
        }
        while i < len {
            if *ptr.add(i) != want {
                return false;
            }
            i += 1;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::debug::layout::DEADBYTE;

    #[test]
    fn first_not_finds_first_difference() {
        let mut buf = [DEADBYTE; 37];
        assert_eq!(unsafe { first_not(buf.as_ptr(), 37, DEADBYTE) }, None);
        buf[35] = 0;
        assert_eq!(unsafe { first_not(buf.as_ptr(), 37, DEADBYTE) }, Some(35));
        buf[9] = 1;
        assert_eq!(unsafe { first_not(buf.as_ptr(), 37, DEADBYTE) }, Some(9));
    }

    #[test]
    fn all_equal_words_sees_every_byte() {
        for len in 0..100 {
            let mut buf = vec![DEADBYTE; len];
            assert!(unsafe { all_equal_words(buf.as_ptr(), len, DEADBYTE) });
            for at in 0..len {
                buf[at] = 0;
                assert!(!unsafe { all_equal_words(buf.as_ptr(), len, DEADBYTE) });
                buf[at] = DEADBYTE;
            }
        }
    }

    #[test]
    fn all_equal_sees_every_byte() {
        for len in 0..200 {
            let mut buf = vec![DEADBYTE; len];
            assert!(
                unsafe { all_equal(buf.as_ptr(), len, DEADBYTE) },
                "len {len}"
            );
            for at in 0..len {
                buf[at] = 0;
                assert!(!unsafe { all_equal(buf.as_ptr(), len, DEADBYTE) });
                assert_eq!(unsafe { first_not(buf.as_ptr(), len, DEADBYTE) }, Some(at));
                buf[at] = DEADBYTE;
            }
        }
    }
}
