//! The driver's state behind one lock: contexts (each with its own emulated
//! device memory and kernels), streams, events, modules, functions and
//! pinned host buffers, all named by opaque handles.
//!
//! A handle stays in its table after it is destroyed, marked dead, so a
//! later use is recognised as a use after free rather than as garbage.

use crate::codes::*;
use crate::work::Work;
use dawin::device::emu::{Emu, EmuOptions};
use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{LazyLock, Mutex, MutexGuard};
use std::time::Instant;

/// Settings read at `cuInit` from the environment.
#[derive(Clone, Copy, Debug)]
pub struct Options {
    /// Device memory in bytes (`DAWIN_EMU_DRIVER_MEMORY`, default 8 GiB).
    pub memory: usize,
    /// Blocks in a shuffled order (`DAWIN_EMU_SHUFFLE`, as for `emu`).
    pub shuffle_blocks: Option<u64>,
}

pub struct Ctx {
    pub alive: bool,
    pub primary: bool,
    pub emu: Emu,
    /// Device allocations: base address → bytes.
    pub allocs: BTreeMap<u64, usize>,
    /// A failed kernel or copy poisons the context, as on a GPU: every
    /// later call that waits on it answers this.
    pub sticky: Option<CuResult>,
}

pub struct Stream {
    pub ctx: u64,
    pub alive: bool,
    /// Without CU_STREAM_NON_BLOCKING, synchronous copies wait for it.
    pub blocking: bool,
    pub queue: VecDeque<Work>,
}

pub struct Event {
    pub ctx: u64,
    pub alive: bool,
    pub timing: bool,
    /// Bumped by each record, so a wait targets the latest one.
    pub records: u64,
    /// The stream a pending record sits on.
    pub pending_on: Option<u64>,
    /// When the latest record ran.
    pub done_at: Option<Instant>,
}

pub struct Module {
    pub ctx: u64,
    pub alive: bool,
    pub kernels: Vec<String>,
}

pub struct Func {
    /// Its context is the module's.
    pub module: u64,
    pub kernel: String,
    /// Bytes of `.shared` the kernel declares.
    pub static_shared: u32,
    /// Dynamic shared memory allowed (raised by cuFuncSetAttribute).
    pub max_dynamic_shared: u32,
}

pub struct Pinned {
    pub ctx: u64,
    pub len: usize,
}

#[derive(Default)]
pub struct Driver {
    pub options: Option<Options>,
    pub contexts: HashMap<u64, Ctx>,
    /// The device's primary context while it has references.
    pub primary: Option<(u64, u32)>,
    pub streams: HashMap<u64, Stream>,
    pub events: HashMap<u64, Event>,
    pub modules: HashMap<u64, Module>,
    pub funcs: HashMap<u64, Func>,
    /// Pinned host buffers: address → record.
    pub pinned: BTreeMap<usize, Pinned>,
    /// Each call named on stderr (`DAWIN_EMU_DRIVER_TRACE=1`).
    pub trace: bool,
    next_handle: u64,
}

static DRIVER: LazyLock<Mutex<Driver>> = LazyLock::new(|| Mutex::new(Driver::default()));

thread_local! {
    /// The calling thread's current context (0: none) and pushed ones.
    pub static CURRENT: RefCell<Vec<u64>> = const { RefCell::new(Vec::new()) };
}

/// Runs an entry point's body on the locked driver (after `cuInit`) and
/// answers its code.
pub fn call(entry: &str, body: impl FnOnce(&mut Driver) -> Res) -> CuResult {
    let mut d = lock();
    if d.trace {
        say(entry);
    }
    if d.options.is_none() {
        return CUDA_ERROR_NOT_INITIALIZED;
    }
    answer(entry, body(&mut d))
}

pub fn lock() -> MutexGuard<'static, Driver> {
    // A panic under the lock aborts the process (extern "C"), so the lock
    // cannot be seen poisoned by a caller that goes on.
    DRIVER.lock().unwrap_or_else(|p| p.into_inner())
}

/// Ends the process on a use of a destroyed object: the real driver's
/// behaviour there is undefined (a crash at best), so no answer is right.
pub fn use_after_free(entry: &str, what: &str) -> ! {
    say(&format!(
        "{entry}: {what} was used after it was destroyed (on a GPU this may crash or corrupt memory); aborting"
    ));
    std::process::abort()
}

impl Driver {
    /// [`use_after_free`] for an object of context `ctx`, saying whether it
    /// died with its context.
    pub fn dead(&self, entry: &str, what: &str, ctx: u64) -> ! {
        if self.contexts.get(&ctx).is_some_and(|c| !c.alive) {
            use_after_free(entry, &format!("{what} of a destroyed context"))
        }
        use_after_free(entry, what)
    }
}

pub fn current_ctx() -> u64 {
    CURRENT.with(|c| c.borrow().last().copied().unwrap_or(0))
}

pub fn set_current(ctx: u64) {
    CURRENT.with(|c| {
        let mut c = c.borrow_mut();
        c.pop();
        c.push(ctx);
    })
}

impl Driver {
    pub fn options(&self) -> Options {
        self.options.expect("checked by call()")
    }

    pub fn new_handle(&mut self) -> u64 {
        // Distinct, non-null, aligned like pointers, never reused.
        self.next_handle += 1;
        0xd000_0000 + 16 * self.next_handle
    }

    pub fn new_context(&mut self, primary: bool) -> Res<u64> {
        let o = self.options();
        let options = EmuOptions {
            shuffle_blocks: o.shuffle_blocks,
            memory_limit: Some(o.memory),
            bank_conflicts: false,
        };
        let emu =
            Emu::new(&[], options).map_err(|e| fail(CUDA_ERROR_INVALID_CONTEXT, e.to_string()))?;
        let h = self.new_handle();
        let ctx = Ctx {
            alive: true,
            primary,
            emu,
            allocs: BTreeMap::new(),
            sticky: None,
        };
        self.contexts.insert(h, ctx);
        Ok(h)
    }

    /// The calling thread's current context, alive.
    pub fn current(&mut self, entry: &str) -> Res<u64> {
        let h = current_ctx();
        self.live_context(entry, h)?;
        Ok(h)
    }

    /// Context `h`, which must exist and be alive.
    pub fn live_context(&self, entry: &str, h: u64) -> Res<&Ctx> {
        match self.contexts.get(&h) {
            None => Err(quiet(CUDA_ERROR_INVALID_CONTEXT)),
            Some(c) if !c.alive => use_after_free(entry, "a context"),
            Some(c) => Ok(c),
        }
    }

    pub fn ctx(&mut self, h: u64) -> &mut Ctx {
        self.contexts.get_mut(&h).expect("a live context handle")
    }

    /// Destroys a context: everything created in it dies with it.
    pub fn destroy_context(&mut self, h: u64) -> Res {
        // Queued work finishes first; a poisoned context is still destroyed
        // (that is how a program recovers from a fault).
        let _ = self.synchronize_context(h);
        if let Some(c) = self.contexts.get_mut(&h) {
            c.alive = false;
            c.allocs.clear();
        }
        for s in self.streams.values_mut().filter(|s| s.ctx == h) {
            s.alive = false;
        }
        for e in self.events.values_mut().filter(|e| e.ctx == h) {
            e.alive = false;
        }
        for m in self.modules.values_mut().filter(|m| m.ctx == h) {
            m.alive = false;
        }
        // Pinned buffers stay allocated (their records say which context
        // owned them), so a late cuMemFreeHost is caught, not a double free.
        Ok(())
    }

    /// Runs every stream of a context and answers its sticky error.
    pub fn synchronize_context(&mut self, h: u64) -> Res {
        let streams: Vec<u64> = self
            .streams
            .iter()
            .filter(|(_, s)| s.ctx == h && s.alive)
            .map(|(&k, _)| k)
            .collect();
        for s in streams {
            self.run_stream(s, None)?;
        }
        match self.contexts.get(&h).and_then(|c| c.sticky) {
            Some(code) => Err(quiet(code)),
            None => Ok(()),
        }
    }
}
