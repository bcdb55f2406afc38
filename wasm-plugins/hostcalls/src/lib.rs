//! A test plugin for flowdog's host, written against the raw ABI (no SDK) so that it can pass
//! what an SDK never would: bad pointers, bad lengths, unknown enum values. Every request gets
//! a local 200 whose body lists each host call made and the status it returned, one
//! `name=status` per line; flowdog's tests compare them with the spec.

use std::fmt::Write;

#[link(wasm_import_module = "env")]
extern "C" {
    fn proxy_log(level: u32, p: *const u8, n: usize) -> u32;
    fn proxy_get_log_level(ret: *mut u32) -> u32;
    fn proxy_get_current_time_nanoseconds(ret: *mut u64) -> u32;
    fn proxy_set_tick_period_milliseconds(ms: u32) -> u32;
    fn proxy_get_buffer_bytes(t: u32, start: usize, max: usize, rp: *mut *mut u8, rn: *mut usize) -> u32;
    fn proxy_set_buffer_bytes(t: u32, start: usize, size: usize, p: *const u8, n: usize) -> u32;
    fn proxy_get_header_map_pairs(t: u32, rp: *mut *mut u8, rn: *mut usize) -> u32;
    fn proxy_set_header_map_pairs(t: u32, p: *const u8, n: usize) -> u32;
    fn proxy_get_header_map_value(t: u32, kp: *const u8, kn: usize, rp: *mut *mut u8, rn: *mut usize) -> u32;
    fn proxy_add_header_map_value(t: u32, kp: *const u8, kn: usize, vp: *const u8, vn: usize) -> u32;
    fn proxy_replace_header_map_value(t: u32, kp: *const u8, kn: usize, vp: *const u8, vn: usize) -> u32;
    fn proxy_remove_header_map_value(t: u32, kp: *const u8, kn: usize) -> u32;
    fn proxy_get_property(pp: *const u8, pn: usize, rp: *mut *mut u8, rn: *mut usize) -> u32;
    fn proxy_set_property(pp: *const u8, pn: usize, vp: *const u8, vn: usize) -> u32;
    fn proxy_get_shared_data(kp: *const u8, kn: usize, rp: *mut *mut u8, rn: *mut usize, cas: *mut u32) -> u32;
    fn proxy_set_shared_data(kp: *const u8, kn: usize, vp: *const u8, vn: usize, cas: u32) -> u32;
    fn proxy_register_shared_queue(np: *const u8, nn: usize, ret: *mut u32) -> u32;
    fn proxy_resolve_shared_queue(vp: *const u8, vn: usize, np: *const u8, nn: usize, ret: *mut u32) -> u32;
    fn proxy_dequeue_shared_queue(id: u32, rp: *mut *mut u8, rn: *mut usize) -> u32;
    fn proxy_enqueue_shared_queue(id: u32, p: *const u8, n: usize) -> u32;
    fn proxy_continue_stream(t: u32) -> u32;
    fn proxy_close_stream(t: u32) -> u32;
    fn proxy_send_local_response(
        status: u32,
        dp: *const u8,
        dn: usize,
        bp: *const u8,
        bn: usize,
        hp: *const u8,
        hn: usize,
        grpc: i32,
    ) -> u32;
    fn proxy_http_call(
        up: *const u8,
        un: usize,
        hp: *const u8,
        hn: usize,
        bp: *const u8,
        bn: usize,
        tp: *const u8,
        tn: usize,
        timeout: u32,
        ret: *mut u32,
    ) -> u32;
    fn proxy_grpc_call(
        up: *const u8,
        un: usize,
        sp: *const u8,
        sn: usize,
        mp: *const u8,
        mn: usize,
        ip: *const u8,
        in_: usize,
        gp: *const u8,
        gn: usize,
        timeout: u32,
        ret: *mut u32,
    ) -> u32;
    fn proxy_get_status(code: *mut u32, rp: *mut *mut u8, rn: *mut usize) -> u32;
    fn proxy_set_effective_context(id: u32) -> u32;
    fn proxy_call_foreign_function(
        np: *const u8,
        nn: usize,
        ap: *const u8,
        an: usize,
        rp: *mut *mut u8,
        rn: *mut usize,
    ) -> u32;
    fn proxy_done() -> u32;
    fn proxy_define_metric(t: u32, np: *const u8, nn: usize, ret: *mut u32) -> u32;
    fn proxy_increment_metric(id: u32, by: i64) -> u32;
    fn proxy_record_metric(id: u32, v: u64) -> u32;
    fn proxy_get_metric(id: u32, ret: *mut u64) -> u32;
}

#[link(wasm_import_module = "wasi_snapshot_preview1")]
extern "C" {
    fn fd_write(fd: u32, iovs: *const u32, n: usize, ret: *mut usize) -> u32;
    fn random_get(p: *mut u8, n: usize) -> u32;
    fn clock_time_get(id: u32, precision: u64, ret: *mut u64) -> u32;
}

/// An address past the end of any memory this module will have.
const BAD: usize = 0xFFFF_FFF0;

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

#[no_mangle]
pub extern "C" fn proxy_on_vm_start(_root: u32, _n: usize) -> u32 {
    1
}

#[no_mangle]
pub extern "C" fn proxy_on_configure(_root: u32, _n: usize) -> u32 {
    1
}

fn bytes(p: *mut u8, n: usize) -> Vec<u8> {
    if p.is_null() {
        return Vec::new();
    }
    // SAFETY: the host wrote `n` bytes at `p`, memory it got from proxy_on_memory_allocate.
    unsafe { Vec::from_raw_parts(p, n, n) }
}

fn pairs(list: &[(&str, &str)]) -> Vec<u8> {
    let mut v = (list.len() as u32).to_le_bytes().to_vec();
    for (k, val) in list {
        v.extend((k.len() as u32).to_le_bytes());
        v.extend((val.len() as u32).to_le_bytes());
    }
    for (k, val) in list {
        v.extend(k.as_bytes());
        v.push(0);
        v.extend(val.as_bytes());
        v.push(0);
    }
    v
}

#[no_mangle]
pub extern "C" fn proxy_on_request_headers(ctx: u32, _n: usize, _eos: u32) -> u32 {
    let mut r = String::new();
    let mut line = |name: &str, s: u32| {
        let _ = writeln!(r, "{name}={s}");
    };
    let (mut rp, mut rn): (*mut u8, usize) = (std::ptr::null_mut(), 0);
    let msg = b"hostcalls: hello";
    let path = b":path";
    // SAFETY: every call below is a host call; the pointers are this module's own buffers, or
    // deliberately bad ones (BAD, lengths past the end) that the host must refuse.
    unsafe {
        line("log", proxy_log(2, msg.as_ptr(), msg.len()));
        line("log_bad_level", proxy_log(9, msg.as_ptr(), msg.len()));
        line("log_bad_ptr", proxy_log(2, BAD as *const u8, 100));
        let mut lvl = 0u32;
        line("get_log_level", proxy_get_log_level(&mut lvl));
        line("get_log_level_bad_ptr", proxy_get_log_level(BAD as *mut u32));
        let mut t = 0u64;
        line("time", proxy_get_current_time_nanoseconds(&mut t));
        line("time_nonzero", (t > 0) as u32);
        line("time_bad_ptr", proxy_get_current_time_nanoseconds(BAD as *mut u64));
        line("tick", proxy_set_tick_period_milliseconds(0));

        line("map_pairs", proxy_get_header_map_pairs(0, &mut rp, &mut rn));
        let m = bytes(rp, rn);
        line("map_pairs_has_path", (m.windows(5).any(|w| w == b":path")) as u32);
        line("map_pairs_bad_type", proxy_get_header_map_pairs(99, &mut rp, &mut rn));
        line("map_pairs_bad_ret", proxy_get_header_map_pairs(0, BAD as *mut *mut u8, &mut rn));
        line("map_value", proxy_get_header_map_value(0, path.as_ptr(), path.len(), &mut rp, &mut rn));
        line("map_value_is_path", (bytes(rp, rn) == b"/hostcalls") as u32);
        line("map_value_missing", proxy_get_header_map_value(0, b"nope".as_ptr(), 4, &mut rp, &mut rn));
        line("map_value_bad_type", proxy_get_header_map_value(99, path.as_ptr(), path.len(), &mut rp, &mut rn));
        line("map_value_bad_key", proxy_get_header_map_value(0, BAD as *const u8, 5, &mut rp, &mut rn));
        line("map_add", proxy_add_header_map_value(0, b"x-test".as_ptr(), 6, b"1".as_ptr(), 1));
        line("map_add_bad_name", proxy_add_header_map_value(0, b"bad name".as_ptr(), 8, b"1".as_ptr(), 1));
        line("map_add_bad_value", proxy_add_header_map_value(0, b"x-v".as_ptr(), 3, b"a\nb".as_ptr(), 3));
        line("map_add_call_headers", proxy_add_header_map_value(6, b"x".as_ptr(), 1, b"1".as_ptr(), 1));
        line("map_replace", proxy_replace_header_map_value(0, b"x-test".as_ptr(), 6, b"2".as_ptr(), 1));
        line(
            "map_replace_path",
            proxy_replace_header_map_value(0, path.as_ptr(), path.len(), b"/rewritten".as_ptr(), 10),
        );
        line(
            "map_replace_bad_path",
            proxy_replace_header_map_value(0, path.as_ptr(), path.len(), b"no slash".as_ptr(), 8),
        );
        line("map_remove", proxy_remove_header_map_value(0, b"x-test".as_ptr(), 6));
        line("map_remove_bad_type", proxy_remove_header_map_value(42, b"x-test".as_ptr(), 6));
        line("map_set_garbage", proxy_set_header_map_pairs(0, b"\xff\xff\xff\xff".as_ptr(), 4));
        let good = pairs(&[(":path", "/set"), ("x-set", "yes")]);
        line("map_set", proxy_set_header_map_pairs(0, good.as_ptr(), good.len()));
        line("response_map_in_request", proxy_get_header_map_pairs(2, &mut rp, &mut rn));

        line("buffer_config", proxy_get_buffer_bytes(7, 0, 100, &mut rp, &mut rn));
        line("buffer_config_is", (bytes(rp, rn) == b"hostcalls-config") as u32);
        line("buffer_bad_type", proxy_get_buffer_bytes(99, 0, 100, &mut rp, &mut rn));
        line("buffer_bad_start", proxy_get_buffer_bytes(7, 1000, 10, &mut rp, &mut rn));
        line("buffer_call_body_outside_call", proxy_get_buffer_bytes(4, 0, 10, &mut rp, &mut rn));
        line("buffer_set_config", proxy_set_buffer_bytes(7, 0, 1, b"x".as_ptr(), 1));
        line("buffer_set_body_bad_start", proxy_set_buffer_bytes(0, 1000, 1, b"x".as_ptr(), 1));
        line("buffer_set_body", proxy_set_buffer_bytes(0, 0, 0, b"x".as_ptr(), 1));
        line("buffer_set_bad_ptr", proxy_set_buffer_bytes(0, 0, 0, BAD as *const u8, 16));

        line("property", proxy_get_property(b"plugin_name".as_ptr(), 11, &mut rp, &mut rn));
        line("property_is_name", (bytes(rp, rn) == b"hostcalls") as u32);
        line("property_missing", proxy_get_property(b"nope".as_ptr(), 4, &mut rp, &mut rn));
        line("property_bad_ptr", proxy_get_property(BAD as *const u8, 4, &mut rp, &mut rn));
        line("property_port", proxy_get_property(b"destination\0port".as_ptr(), 16, &mut rp, &mut rn));
        line("property_port_is_8_bytes", (bytes(rp, rn).len() == 8) as u32);
        line("property_set", proxy_set_property(b"my\0prop".as_ptr(), 7, b"v".as_ptr(), 1));
        line("property_get_set", proxy_get_property(b"my\0prop".as_ptr(), 7, &mut rp, &mut rn));
        line("property_set_is", (bytes(rp, rn) == b"v") as u32);

        let mut cas = 0u32;
        line("shared_set", proxy_set_shared_data(b"k".as_ptr(), 1, b"v".as_ptr(), 1, 0));
        line("shared_get", proxy_get_shared_data(b"k".as_ptr(), 1, &mut rp, &mut rn, &mut cas));
        line("shared_get_is", (bytes(rp, rn) == b"v") as u32);
        line("shared_set_stale_cas", proxy_set_shared_data(b"k".as_ptr(), 1, b"w".as_ptr(), 1, cas.wrapping_add(7)));
        line("shared_set_cas", proxy_set_shared_data(b"k".as_ptr(), 1, b"w".as_ptr(), 1, cas));
        line("shared_get_missing", proxy_get_shared_data(b"none".as_ptr(), 4, &mut rp, &mut rn, &mut cas));
        line("shared_get_bad_cas_ptr", proxy_get_shared_data(b"k".as_ptr(), 1, &mut rp, &mut rn, BAD as *mut u32));

        let mut q = 0u32;
        line("queue_register", proxy_register_shared_queue(b"q".as_ptr(), 1, &mut q));
        line("queue_enqueue", proxy_enqueue_shared_queue(q, b"a".as_ptr(), 1));
        line("queue_dequeue", proxy_dequeue_shared_queue(q, &mut rp, &mut rn));
        line("queue_dequeue_is", (bytes(rp, rn) == b"a") as u32);
        line("queue_dequeue_empty", proxy_dequeue_shared_queue(q, &mut rp, &mut rn));
        line("queue_enqueue_unknown", proxy_enqueue_shared_queue(9999, b"a".as_ptr(), 1));
        let mut q2 = 0u32;
        line("queue_resolve", proxy_resolve_shared_queue(b"".as_ptr(), 0, b"q".as_ptr(), 1, &mut q2));
        line("queue_resolve_same", (q == q2) as u32);
        line("queue_resolve_missing", proxy_resolve_shared_queue(b"".as_ptr(), 0, b"zz".as_ptr(), 2, &mut q2));

        let mut id = 0u32;
        line("metric_define", proxy_define_metric(0, b"hostcalls_counter".as_ptr(), 17, &mut id));
        line("metric_define_bad_type", proxy_define_metric(9, b"m".as_ptr(), 1, &mut id));
        line("metric_increment", proxy_increment_metric(id, 3));
        line("metric_increment_negative_counter", proxy_increment_metric(id, -1));
        let mut v = 0u64;
        line("metric_get", proxy_get_metric(id, &mut v));
        line("metric_get_is_3", (v == 3) as u32);
        line("metric_record_unknown", proxy_record_metric(9999, 1));
        line("metric_get_unknown", proxy_get_metric(9999, &mut v));

        let call = pairs(&[(":method", "GET"), (":path", "/"), (":authority", "x")]);
        let mut token = 0u32;
        let up = b"no-such-upstream";
        line(
            "http_call_unknown_upstream",
            proxy_http_call(
                up.as_ptr(),
                up.len(),
                call.as_ptr(),
                call.len(),
                b"".as_ptr(),
                0,
                b"".as_ptr(),
                0,
                1000,
                &mut token,
            ),
        );
        line(
            "http_call_bad_headers",
            proxy_http_call(
                up.as_ptr(),
                up.len(),
                BAD as *const u8,
                8,
                b"".as_ptr(),
                0,
                b"".as_ptr(),
                0,
                1000,
                &mut token,
            ),
        );
        line(
            "grpc_call",
            proxy_grpc_call(
                up.as_ptr(),
                up.len(),
                up.as_ptr(),
                1,
                up.as_ptr(),
                1,
                b"".as_ptr(),
                0,
                b"".as_ptr(),
                0,
                1000,
                &mut token,
            ),
        );
        let mut code = 0u32;
        line("get_status", proxy_get_status(&mut code, &mut rp, &mut rn));
        drop(bytes(rp, rn));
        line("get_status_is_unimplemented", (code == 12) as u32);

        line("effective_context_bad", proxy_set_effective_context(123_456));
        line("effective_context", proxy_set_effective_context(ctx));
        line("continue_bad_type", proxy_continue_stream(7));
        line("close_bad_type", proxy_close_stream(9));
        line("foreign_function", proxy_call_foreign_function(b"f".as_ptr(), 1, b"".as_ptr(), 0, &mut rp, &mut rn));
        line("done", proxy_done());

        let out = b"hostcalls: via fd_write";
        let iov = [out.as_ptr() as u32, out.len() as u32];
        let mut written = 0usize;
        line("wasi_fd_write", fd_write(1, iov.as_ptr(), 1, &mut written));
        line("wasi_fd_write_all", (written == out.len()) as u32);
        line("wasi_fd_write_bad_fd", fd_write(5, iov.as_ptr(), 1, &mut written));
        let bad_iov = [BAD as u32, 64];
        line("wasi_fd_write_bad_iov", fd_write(1, bad_iov.as_ptr(), 1, &mut written));
        let mut rnd = [0u8; 16];
        line("wasi_random", random_get(rnd.as_mut_ptr(), rnd.len()));
        let mut now = 0u64;
        line("wasi_clock", clock_time_get(0, 1, &mut now));
        line("wasi_clock_bad_id", clock_time_get(9, 1, &mut now));

        line(
            "local_response_bad_status",
            proxy_send_local_response(9999, b"".as_ptr(), 0, b"".as_ptr(), 0, b"".as_ptr(), 0, -1),
        );
        let headers = pairs(&[("content-type", "text/plain")]);
        proxy_send_local_response(200, b"".as_ptr(), 0, r.as_ptr(), r.len(), headers.as_ptr(), headers.len(), -1);
    }
    1
}
