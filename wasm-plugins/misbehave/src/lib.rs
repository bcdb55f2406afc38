//! A test plugin that misbehaves on demand, by the last word of the request's path or query
//! (`/trap` or `/headers?trap`), to prove the host contains it: `trap` traps (unreachable),
//! `loop` never returns, `alloc` grows its memory until the limit; anything else passes with
//! `x-misbehave: no`.

#[link(wasm_import_module = "env")]
extern "C" {
    fn proxy_get_header_map_value(t: u32, kp: *const u8, kn: usize, rp: *mut *mut u8, rn: *mut usize) -> u32;
    fn proxy_add_header_map_value(t: u32, kp: *const u8, kn: usize, vp: *const u8, vn: usize) -> u32;
}

#[no_mangle]
pub extern "C" fn proxy_abi_version_0_2_1() {}

#[no_mangle]
pub extern "C" fn proxy_on_memory_allocate(size: usize) -> *mut u8 {
    let mut v = Vec::<u8>::with_capacity(size.max(1));
    let p = v.as_mut_ptr();
    std::mem::forget(v);
    p
}

#[no_mangle]
pub extern "C" fn proxy_on_context_create(_id: u32, _root: u32) {}

static mut HOARD: Vec<Vec<u8>> = Vec::new();

#[no_mangle]
pub extern "C" fn proxy_on_request_headers(_ctx: u32, _n: usize, _eos: u32) -> u32 {
    let (mut p, mut n): (*mut u8, usize) = (std::ptr::null_mut(), 0);
    // SAFETY: host calls with this module's own buffers; the value is memory the host got from
    // proxy_on_memory_allocate, taken back as a Vec.
    let path = unsafe {
        if proxy_get_header_map_value(0, b":path".as_ptr(), 5, &mut p, &mut n) != 0 {
            return 0;
        }
        Vec::from_raw_parts(p, n, n)
    };
    let word = path.rsplit(|&b| b == b'/' || b == b'?').next().unwrap_or_default();
    match word {
        b"trap" => std::process::abort(),
        b"loop" => {
            let mut x: u64 = 1;
            loop {
                x = std::hint::black_box(x.wrapping_mul(3));
            }
        }
        b"alloc" => loop {
            // SAFETY: this module is single-threaded; nothing else touches HOARD.
            unsafe {
                let hoard = &mut *std::ptr::addr_of_mut!(HOARD);
                hoard.push(vec![1u8; 1 << 20]);
            }
        },
        _ => {
            // SAFETY: a host call with this module's own constant buffers.
            unsafe { proxy_add_header_map_value(0, b"x-misbehave".as_ptr(), 11, b"no".as_ptr(), 2) };
            0
        }
    }
}
