//! TDX quotes read here against a second reading: version 4 quotes made and parsed by the
//! `tdx-quote` crate (its mock quotes, re-signed after the TD fields are set), version 5 built
//! from the layout in the Intel TDX DCAP Quoting Library API written out below.

use p256::ecdsa::signature::Signer;
use tdx_backend::quote::{ExpectedTd, Quote};

/// Body offsets (DCAP Quoting Library API, "TD Quote Body"), written out here.
const TD_ATTRIBUTES: usize = 120;
const XFAM: usize = 128;
const MRTD: usize = 136;
const MRCONFIGID: usize = 184;
const RTMR0: usize = 328;
const REPORTDATA: usize = 520;

fn fill(q: &mut [u8], body: usize) {
    q[body + TD_ATTRIBUTES..body + TD_ATTRIBUTES + 8]
        .copy_from_slice(&0x1000_0000u64.to_le_bytes());
    q[body + XFAM..body + XFAM + 8].copy_from_slice(&0x61ae7u64.to_le_bytes());
    q[body + MRTD..body + MRTD + 48].copy_from_slice(&[0xa1; 48]);
    q[body + MRCONFIGID..body + MRCONFIGID + 48].copy_from_slice(&[0xc1; 48]);
    for k in 0..4 {
        let at = body + RTMR0 + 48 * k;
        q[at..at + 48].copy_from_slice(&[0xe0 + k as u8; 48]);
    }
    q[body + REPORTDATA..body + REPORTDATA + 64].copy_from_slice(&[0x77; 64]);
}

/// A version 4 quote from `tdx-quote`'s mock, its TD fields set and re-signed so that the peer
/// still accepts it.
fn v4_quote() -> Vec<u8> {
    let attestation = tdx_quote::SigningKey::from_slice(&[3u8; 32]).unwrap();
    let pck = tdx_quote::SigningKey::from_slice(&[5u8; 32]).unwrap();
    let mock = tdx_quote::Quote::mock(attestation.clone(), pck, [0x77; 64], Vec::new());
    let mut q = mock.as_bytes();
    fill(&mut q, 48);
    // The attestation key signs header and body; the signature follows a 4-byte length.
    let signed = 48 + 584;
    let sig: p256::ecdsa::Signature = attestation.sign(&q[..signed]);
    q[signed + 4..signed + 68].copy_from_slice(&sig.to_bytes());
    q
}

#[test]
fn version_4_fields_are_where_tdx_quote_reads_them() {
    let q = v4_quote();
    let peer = tdx_quote::Quote::from_bytes(&q).expect("the peer accepts it");
    let ours = Quote::parse(&q).unwrap();
    assert_eq!((ours.version, ours.body_version), (4, 10));
    assert_eq!(ours.mrtd, peer.mrtd());
    assert_eq!(ours.mrtd, [0xa1; 48]);
    assert_eq!(ours.td_attributes.to_le_bytes(), peer.body.tdattributes);
    assert_eq!(ours.xfam.to_le_bytes(), peer.body.xfam);
    assert_eq!(ours.mr_config_id, peer.body.mrconfigid);
    assert_eq!(
        ours.rtmr,
        [peer.rtmr0(), peer.rtmr1(), peer.rtmr2(), peer.rtmr3()]
    );
    assert_eq!(ours.report_data, peer.report_input_data());
    assert_eq!(ours.report_data, [0x77; 64]);
}

#[test]
fn version_5_bodies_of_both_tdx_versions() {
    let v4 = v4_quote();
    for (ty, size) in [(2u16, 584usize), (3, 648)] {
        let mut q = v4[..48].to_vec();
        q[0..2].copy_from_slice(&5u16.to_le_bytes());
        q.extend_from_slice(&ty.to_le_bytes());
        q.extend_from_slice(&(size as u32).to_le_bytes());
        q.extend(std::iter::repeat_n(0u8, size));
        fill(&mut q, 54);
        let r = Quote::parse(&q).unwrap();
        assert_eq!(
            (r.version, r.body_version),
            (5, if ty == 2 { 10 } else { 15 })
        );
        assert_eq!(r.mrtd, [0xa1; 48]);
        assert_eq!((r.td_attributes, r.xfam), (0x1000_0000, 0x61ae7));
        // A descriptor whose size disagrees with its type, and a short body.
        let mut bad = q.clone();
        bad[50..54].copy_from_slice(&600u32.to_le_bytes());
        assert!(Quote::parse(&bad)
            .unwrap_err()
            .to_string()
            .contains("the descriptor says 600"));
        let e = Quote::parse(&q[..54 + size - 1]).unwrap_err().to_string();
        assert_eq!(
            e,
            format!(
                "TDX quote: {} bytes; the TD report body ends at {}",
                53 + size,
                54 + size
            )
        );
    }
}

#[test]
fn refusals_name_what_is_wrong() {
    let q = v4_quote();
    let mut sgx = q.clone();
    sgx[4..8].copy_from_slice(&0u32.to_le_bytes());
    assert_eq!(
        Quote::parse(&sgx).unwrap_err().to_string(),
        "TDX quote: tee_type 0x0: not a TDX quote (0x81)"
    );
    let mut v3 = q.clone();
    v3[0] = 3;
    assert_eq!(
        Quote::parse(&v3).unwrap_err().to_string(),
        "TDX quote: version 3: only 4 and 5 are read"
    );
    assert_eq!(
        Quote::parse(&q[..40]).unwrap_err().to_string(),
        "TDX quote: 40 bytes; the header alone has 48"
    );
}

#[test]
fn check_names_the_first_field_that_differs() {
    let r = Quote::parse(&v4_quote()).unwrap();
    let all = ExpectedTd {
        mrtd: [0xa1; 48],
        td_attributes: Some(0x1000_0000),
        xfam: Some(0x61ae7),
        mr_config_id: Some([0xc1; 48]),
    };
    assert_eq!(r.check(&all), Ok(()));
    assert_eq!(r.check(&ExpectedTd::new([0xa1; 48])), Ok(()));
    let mut want = all.clone();
    want.mrtd[0] = 0;
    want.xfam = Some(0);
    assert_eq!(r.check(&want).unwrap_err().field, "MRTD");
    let mut want = all.clone();
    want.td_attributes = Some(0);
    let m = r.check(&want).unwrap_err();
    assert_eq!(
        (m.field, m.got.as_str(), m.want.as_str()),
        ("TDATTRIBUTES", "0x10000000", "0x0")
    );
    let mut want = all.clone();
    want.xfam = Some(0xe7);
    assert_eq!(r.check(&want).unwrap_err().field, "XFAM");
    let mut want = all;
    want.mr_config_id = Some([0; 48]);
    assert_eq!(r.check(&want).unwrap_err().field, "MRCONFIGID");
}
