//! The driver's result codes (the values of `CUresult`), their names and
//! strings, and how a failed call reports itself.

use std::ffi::{c_char, c_int};
use std::io::Write;

pub type CuResult = c_int;

pub const CUDA_SUCCESS: CuResult = 0;
pub const CUDA_ERROR_INVALID_VALUE: CuResult = 1;
pub const CUDA_ERROR_OUT_OF_MEMORY: CuResult = 2;
pub const CUDA_ERROR_NOT_INITIALIZED: CuResult = 3;
pub const CUDA_ERROR_INVALID_DEVICE: CuResult = 101;
pub const CUDA_ERROR_INVALID_IMAGE: CuResult = 200;
pub const CUDA_ERROR_INVALID_CONTEXT: CuResult = 201;
pub const CUDA_ERROR_INVALID_PTX: CuResult = 218;
pub const CUDA_ERROR_INVALID_HANDLE: CuResult = 400;
pub const CUDA_ERROR_ILLEGAL_STATE: CuResult = 401;
pub const CUDA_ERROR_NOT_FOUND: CuResult = 500;
pub const CUDA_ERROR_NOT_READY: CuResult = 600;
pub const CUDA_ERROR_ILLEGAL_ADDRESS: CuResult = 700;
pub const CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES: CuResult = 701;
pub const CUDA_ERROR_LAUNCH_FAILED: CuResult = 719;
pub const CUDA_ERROR_NOT_SUPPORTED: CuResult = 801;

/// A failed call: its code, and a line for stderr where the code alone
/// would not say what went wrong.
#[derive(Debug)]
pub struct Fail {
    pub code: CuResult,
    pub msg: Option<String>,
}

pub type Res<T = ()> = Result<T, Fail>;

/// A failure with a message.
pub fn fail(code: CuResult, msg: impl Into<String>) -> Fail {
    Fail {
        code,
        msg: Some(msg.into()),
    }
}

/// A failure the code says enough about.
pub fn quiet(code: CuResult) -> Fail {
    Fail { code, msg: None }
}

/// Writes `v` through an output pointer, refusing a null one.
pub fn put<T>(p: *mut T, v: T) -> Res {
    if p.is_null() {
        return Err(quiet(CUDA_ERROR_INVALID_VALUE));
    }
    // SAFETY: the caller passed a non-null pointer to storage for a `T`, as
    // the driver API requires of every output parameter.
    unsafe { p.write(v) };
    Ok(())
}

/// Says one line on stderr, the driver's only voice. Written straight to the
/// stream rather than through `eprintln!`, which a test harness may capture
/// and which an abort right after would lose.
pub fn say(line: &str) {
    let _ = writeln!(std::io::stderr(), "dawin emulated driver: {line}");
}

/// Turns a call's outcome into its code, saying the message on stderr.
pub fn answer(entry: &str, r: Res) -> CuResult {
    match r {
        Ok(()) => CUDA_SUCCESS,
        Err(Fail { code, msg }) => {
            if let Some(m) = msg {
                say(&format!("{entry}: {m}"));
            }
            code
        }
    }
}

const NAMES: &[(CuResult, &str, &str)] = &[
    (CUDA_SUCCESS, "CUDA_SUCCESS\0", "no error\0"),
    (
        CUDA_ERROR_INVALID_VALUE,
        "CUDA_ERROR_INVALID_VALUE\0",
        "invalid argument\0",
    ),
    (
        CUDA_ERROR_OUT_OF_MEMORY,
        "CUDA_ERROR_OUT_OF_MEMORY\0",
        "out of memory\0",
    ),
    (
        CUDA_ERROR_NOT_INITIALIZED,
        "CUDA_ERROR_NOT_INITIALIZED\0",
        "initialization error\0",
    ),
    (
        CUDA_ERROR_INVALID_DEVICE,
        "CUDA_ERROR_INVALID_DEVICE\0",
        "invalid device ordinal\0",
    ),
    (
        CUDA_ERROR_INVALID_IMAGE,
        "CUDA_ERROR_INVALID_IMAGE\0",
        "device kernel image is invalid\0",
    ),
    (
        CUDA_ERROR_INVALID_CONTEXT,
        "CUDA_ERROR_INVALID_CONTEXT\0",
        "invalid device context\0",
    ),
    (
        CUDA_ERROR_INVALID_PTX,
        "CUDA_ERROR_INVALID_PTX\0",
        "a PTX JIT compilation failed\0",
    ),
    (
        CUDA_ERROR_INVALID_HANDLE,
        "CUDA_ERROR_INVALID_HANDLE\0",
        "invalid resource handle\0",
    ),
    (
        CUDA_ERROR_ILLEGAL_STATE,
        "CUDA_ERROR_ILLEGAL_STATE\0",
        "the operation is not permitted in the current state\0",
    ),
    (
        CUDA_ERROR_NOT_FOUND,
        "CUDA_ERROR_NOT_FOUND\0",
        "named symbol not found\0",
    ),
    (
        CUDA_ERROR_NOT_READY,
        "CUDA_ERROR_NOT_READY\0",
        "device not ready\0",
    ),
    (
        CUDA_ERROR_ILLEGAL_ADDRESS,
        "CUDA_ERROR_ILLEGAL_ADDRESS\0",
        "an illegal memory access was encountered\0",
    ),
    (
        CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES,
        "CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES\0",
        "too many resources requested for launch\0",
    ),
    (
        CUDA_ERROR_LAUNCH_FAILED,
        "CUDA_ERROR_LAUNCH_FAILED\0",
        "unspecified launch failure\0",
    ),
    (
        CUDA_ERROR_NOT_SUPPORTED,
        "CUDA_ERROR_NOT_SUPPORTED\0",
        "operation not supported (by the dawin emulated driver)\0",
    ),
];

fn lookup(entry: &str, code: CuResult, string: bool, out: *mut *const c_char) -> CuResult {
    let Some(&(_, name, text)) = NAMES.iter().find(|e| e.0 == code) else {
        let _ = put(out, std::ptr::null());
        return CUDA_ERROR_INVALID_VALUE;
    };
    let s = if string { text } else { name };
    answer(entry, put(out, s.as_ptr().cast()))
}

#[unsafe(no_mangle)]
pub(crate) extern "C" fn cuGetErrorString(code: CuResult, out: *mut *const c_char) -> CuResult {
    lookup("cuGetErrorString", code, true, out)
}

#[unsafe(no_mangle)]
pub(crate) extern "C" fn cuGetErrorName(code: CuResult, out: *mut *const c_char) -> CuResult {
    lookup("cuGetErrorName", code, false, out)
}
