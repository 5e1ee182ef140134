//! What a stream queues: one operation, run when the host waits.

use dawin::device::{Arg, Dims};

/// One queued operation.
pub enum Work {
    Launch {
        kernel: String,
        dims: Dims,
        args: Vec<Arg>,
    },
    /// `snapshot` holds the source bytes as they were when the copy was
    /// queued; from pinned memory (`pinned`), the copy reads the buffer when
    /// it runs, and a buffer changed in between is reported.
    ToDevice {
        dst: u64,
        src: usize,
        snapshot: Vec<u8>,
        pinned: bool,
    },
    ToHost {
        dst: usize,
        src: u64,
        len: usize,
    },
    DeviceToDevice {
        dst: u64,
        src: u64,
        len: usize,
    },
    Memset {
        dst: u64,
        value: u8,
        len: usize,
    },
    Record {
        event: u64,
        nth: u64,
    },
    Wait {
        event: u64,
        nth: u64,
    },
}
