//! gmem's per-guest_memfd conversion path (`KVM_SET_MEMORY_ATTRIBUTES2`, in-place conversion
//! series v8) over `gmem::testing::SeriesModel`: arbitrary conversions, views, pinned pages
//! (EAGAIN, transient or lasting), ENOMEM and the module parameter, on a file created with or
//! without INIT_SHARED.
//!
//! Checked after every step: the handle's record of private pages is exactly the model's (the
//! kernel's) state; a refused or failed conversion says what the handle now records (its
//! `recorded_private` is the record inside the request) and names an `error_offset` only inside
//! the failing call; a call never goes past `EAGAIN_ATTEMPTS` attempts; input refusals reach
//! the model not at all; no private data is ever lost (the v8 partly-private case); a view maps
//! only where every page is shared in the model.
#![no_main]

use arbitrary::Arbitrary;
use gmem::testing::SeriesModel;
use gmem::{Error, GmemFlags, GmemSeries, GuestMemfd, MemoryState, EAGAIN_ATTEMPTS};
use libfuzzer_sys::fuzz_target;

const P: u64 = 4096;
const PAGES: u64 = 16;

#[derive(Arbitrary, Debug)]
enum Op {
    Convert {
        page: u8,
        pages: u8,
        private: bool,
        unaligned: bool,
    },
    Map {
        page: u8,
        pages: u8,
    },
    Pin {
        page: u8,
        calls: Option<u8>,
    },
    Unpin {
        page: u8,
    },
    Enomem,
}

#[derive(Arbitrary, Debug)]
struct Input {
    init_shared: bool,
    mmap: bool,
    module_param: bool,
    ops: Vec<Op>,
}

fn model_private(model: &SeriesModel) -> Vec<bool> {
    (0..PAGES).map(|p| model.is_private(p * P)).collect()
}

fn record_private(g: &GuestMemfd) -> Vec<bool> {
    let ranges = g.private_ranges();
    (0..PAGES)
        .map(|p| ranges.iter().any(|&(s, e)| s <= p * P && p * P < e))
        .collect()
}

fuzz_target!(|input: Input| {
    let model = SeriesModel::new(GmemSeries::V8, PAGES * P, input.init_shared)
        .module_param(input.module_param, true);
    let mut flags = GmemFlags::empty();
    if input.mmap {
        flags |= GmemFlags::MMAP;
    }
    if input.init_shared {
        flags |= GmemFlags::INIT_SHARED;
    }
    let Ok(mut g) =
        GuestMemfd::with_model(PAGES * P, flags, GmemSeries::V8, Box::new(model.clone()))
    else {
        return;
    };
    assert_eq!(record_private(&g), model_private(&model));
    for op in input.ops.into_iter().take(64) {
        match op {
            Op::Convert {
                page,
                pages,
                private,
                unaligned,
            } => {
                let offset = u64::from(page) * P + u64::from(unaligned);
                let len = u64::from(pages) * P;
                let to = if private {
                    MemoryState::Private
                } else {
                    MemoryState::Shared
                };
                let before_calls = model.calls().len();
                let before = record_private(&g);
                match g.convert(offset, len, to) {
                    Ok(()) => {
                        // Every page of the request is in the target state.
                        for p in offset / P..(offset + len) / P {
                            assert_eq!(model.is_private(p * P), private);
                        }
                    }
                    Err(Error::Conversion {
                        offset: o,
                        len: l,
                        call_offset,
                        call_len,
                        error_offset,
                        attempts,
                        recorded_private,
                        ..
                    }) => {
                        assert_eq!((o, l), (offset, len));
                        assert!(attempts >= 1 && attempts <= EAGAIN_ATTEMPTS);
                        assert!(call_offset >= offset && call_offset + call_len <= offset + len);
                        if let Some(at) = error_offset {
                            assert!(call_offset <= at && at < call_offset + call_len);
                        }
                        let inside: Vec<(u64, u64)> = g
                            .private_ranges()
                            .into_iter()
                            .filter_map(|(s, e)| {
                                let (s, e) = (s.max(offset), e.min(offset + len));
                                (s < e).then_some((s, e))
                            })
                            .collect();
                        assert_eq!(recorded_private, inside);
                    }
                    Err(_) => {
                        // An input refusal: nothing reached the model, nothing changed.
                        assert_eq!(model.calls().len(), before_calls);
                        assert_eq!(record_private(&g), before);
                    }
                }
                assert!(
                    model.calls().len() - before_calls
                        <= (PAGES as usize) * EAGAIN_ATTEMPTS as usize
                );
            }
            Op::Map { page, pages } => {
                let (offset, len) = (u64::from(page) * P, u64::from(pages) * P);
                if g.map_shared(offset, len).is_ok() {
                    assert!(input.mmap);
                    for p in offset / P..(offset + len) / P {
                        assert!(!model.is_private(p * P), "a view over private page {p}");
                    }
                }
            }
            Op::Pin { page, calls } => model.pin(
                u64::from(page % PAGES as u8) * P,
                calls.map(|c| u32::from(c) + 1),
            ),
            Op::Unpin { page } => model.unpin(u64::from(page % PAGES as u8) * P),
            Op::Enomem => model.fail_next_with_enomem(),
        }
        assert_eq!(
            record_private(&g),
            model_private(&model),
            "record and kernel differ"
        );
        assert!(
            model.lost_pages().is_empty(),
            "private data lost: {:?}",
            model.lost_pages()
        );
    }
});
