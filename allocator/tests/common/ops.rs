//! The random operation sequences the property tests (`properties.rs`, `debug_props.rs`) run
//! through an allocator: allocations of sizes 1..=4096 and alignments 1..=4096 (small sizes
//! favored, where the pools are), frees and reallocs of a live block picked at random.

use proptest::prelude::*;

#[derive(Debug, Clone)]
pub enum Op {
    Alloc {
        size: usize,
        align_log: u32,
        zeroed: bool,
    },
    Free {
        pick: usize,
    },
    Realloc {
        pick: usize,
        size: usize,
    },
}

pub fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (1usize..=4096, 0u32..=12, any::<bool>())
            .prop_map(|(size, align_log, zeroed)| Op::Alloc { size, align_log, zeroed }),
        3 => (1usize..=512, 0u32..=4, any::<bool>())
            .prop_map(|(size, align_log, zeroed)| Op::Alloc { size, align_log, zeroed }),
        2 => any::<usize>().prop_map(|pick| Op::Free { pick }),
        2 => (any::<usize>(), 1usize..=4096).prop_map(|(pick, size)| Op::Realloc { pick, size }),
    ]
}
