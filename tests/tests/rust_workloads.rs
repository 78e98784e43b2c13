//! Rust workloads with tidemark as the global allocator (`TIDEMARK_MALLOC` picks plain or
//! debug): collections, strings, threads handing objects to each other. Exact results.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::mpsc;

#[global_allocator]
static GLOBAL: tidemark_alloc::Tidemark = tidemark_alloc::Tidemark::new();

#[test]
fn collections_and_strings() {
    let mut index: HashMap<String, Vec<u32>> = HashMap::new();
    for i in 0..50_000u32 {
        index.entry(format!("key{}", i % 997)).or_default().push(i);
    }
    assert_eq!(index.len(), 997);
    assert_eq!(index["key0"].len(), 51);
    let mut keys: Vec<&String> = index.keys().collect();
    keys.sort();
    assert_eq!(keys[0], "key0");
    assert_eq!(keys[996], "key996");

    let tree: BTreeMap<u64, String> = (0..20_000u64)
        .map(|i| (i * 7919 % 20_011, i.to_string()))
        .collect();
    assert_eq!(tree.len(), 20_000);
    let joined: String = tree.values().take(3).cloned().collect::<Vec<_>>().join(",");
    assert_eq!(joined.split(',').count(), 3);

    let mut queue: VecDeque<Box<[u8]>> = VecDeque::new();
    let mut total = 0usize;
    for i in 0..100_000usize {
        queue.push_back(vec![i as u8; i % 700].into_boxed_slice());
        if queue.len() > 1000 {
            let b = queue.pop_front().unwrap();
            assert!(b.iter().all(|&x| x == b[0]));
            total += b.len();
        }
    }
    assert_eq!(
        total + queue.iter().map(|b| b.len()).sum::<usize>(),
        (0..100_000).map(|i| i % 700).sum::<usize>()
    );
}

#[test]
fn threads_hand_objects_to_each_other() {
    let (tx, rx) = mpsc::channel::<Vec<String>>();
    let producers: Vec<_> = (0..3)
        .map(|t| {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for round in 0..300 {
                    tx.send((0..50).map(|i| format!("{t}-{round}-{i}")).collect())
                        .unwrap();
                }
            })
        })
        .collect();
    drop(tx);
    let mut count = 0;
    let mut bytes = 0;
    for batch in rx {
        count += batch.len();
        bytes += batch.iter().map(String::len).sum::<usize>();
    }
    for p in producers {
        p.join().unwrap();
    }
    assert_eq!(count, 3 * 300 * 50);
    let expected: usize = (0..3)
        .flat_map(|t| {
            (0..300).flat_map(move |r| (0..50).map(move |i| format!("{t}-{r}-{i}").len()))
        })
        .sum();
    assert_eq!(bytes, expected);
}
