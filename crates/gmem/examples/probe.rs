//! Prints what this machine's KVM offers for guest_memfd, then creates a guest_memfd, maps it,
//! writes and reads it back, binds it to a memslot and tries a conversion.
//!
//! `cargo run -p gmem --example probe`

use gmem::{Capabilities, GmemFlags, GuestMemfd};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let kvm = kvm_ioctls::Kvm::new().map_err(|e| format!("opening /dev/kvm: {e}"))?;
    println!("/dev/kvm:   {}", Capabilities::probe_kvm(&kvm));
    let vm = kvm.create_vm()?;
    let caps = Capabilities::probe(&vm);
    println!("default VM: {caps}");

    let want = GmemFlags::MMAP | GmemFlags::INIT_SHARED;
    let flags = if caps.guest_memfd_flags.contains(want) {
        want
    } else {
        GmemFlags::empty()
    };
    let size = 2 << 20;
    let mut gmem = GuestMemfd::create(&vm, size, flags)?;
    println!(
        "created:    guest_memfd of {size:#x} bytes, flags {}",
        gmem.flags()
    );

    if flags.contains(GmemFlags::MMAP) {
        let view = gmem.map_shared(0, size)?;
        view.populate_write(0, 0x1000)?;
        view.write_at(0x100, b"hello, guest_memfd")?;
        let mut back = [0u8; 18];
        view.read_at(0x100, &mut back)?;
        println!("read back:  {:?}", String::from_utf8_lossy(&back));
    } else {
        println!("map:        skipped (this VM does not offer {want})");
    }

    let slot = gmem.bind(0, 0x1_0000_0000, 0, size)?;
    println!(
        "bound:      slot {} at GPA {:#x}, {:#x} bytes, userspace_addr {:#x}",
        slot.slot(),
        slot.gpa(),
        slot.len(),
        slot.userspace_addr()
    );
    match gmem.set_private(0, 0x1000) {
        Ok(()) => println!("convert:    first page now private"),
        Err(e) => println!("convert:    {e}"),
    }
    slot.unbind()?;
    println!("unbound:    ok");
    Ok(())
}
