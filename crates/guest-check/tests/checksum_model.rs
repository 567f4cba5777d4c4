//! `checksum` against an independent closed form, and the position properties it promises.

use guest_check::checksum;
use proptest::prelude::*;

fn to_bytes(words: &[u64]) -> Vec<u8> {
    words.iter().flat_map(|w| w.to_le_bytes()).collect()
}

/// Closed form of the running sums over n words: a = 1 + sum(w[i]),
/// b = sum over steps k of a_k = n + sum((n - i) * w[i]); all mod 2^64.
fn closed_form(words: &[u64]) -> u64 {
    let n = words.len() as u64;
    let a = words.iter().fold(1u64, |a, w| a.wrapping_add(*w));
    let b = words.iter().enumerate().fold(n, |b, (i, w)| {
        b.wrapping_add((n - i as u64).wrapping_mul(*w))
    });
    a ^ b.rotate_left(32)
}

proptest! {
    #[test]
    fn matches_the_closed_form(words in proptest::collection::vec(any::<u64>(), 0..300)) {
        prop_assert_eq!(checksum(&to_bytes(&words)).unwrap(), closed_form(&words));
    }

    /// Swapping two different adjacent words leaves `a` alone and moves `b` by their difference,
    /// which is never 0 mod 2^64: the result always changes.
    #[test]
    fn adjacent_swap_changes_it(
        mut words in proptest::collection::vec(any::<u64>(), 2..100),
        at in any::<prop::sample::Index>(),
    ) {
        let i = at.index(words.len() - 1);
        prop_assume!(words[i] != words[i + 1]);
        let before = checksum(&to_bytes(&words)).unwrap();
        words.swap(i, i + 1);
        prop_assert_ne!(checksum(&to_bytes(&words)).unwrap(), before);
    }

    /// Lengths that are not a multiple of 8 are refused, never truncated.
    #[test]
    fn partial_words_are_refused(len in 0usize..200) {
        let bytes = vec![0xa5u8; len];
        prop_assert_eq!(checksum(&bytes).is_ok(), len % 8 == 0);
    }
}
