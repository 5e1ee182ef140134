//! Parser for the PTX subset the project's kernels use. Anything outside it
//! is a parse error naming the line, so an unsupported instruction can never
//! be silently misread.

use std::collections::HashMap;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ty {
    B8,
    B16,
    B32,
    B64,
    U8,
    U16,
    U32,
    U64,
    S8,
    S16,
    S32,
    S64,
    F16,
    Bf16,
    F32,
    F64,
    Pred,
    Bf16x2,
    F16x2,
}

impl Ty {
    pub fn parse(s: &str) -> Option<Ty> {
        Some(match s {
            "b8" => Ty::B8,
            "b16" => Ty::B16,
            "b32" => Ty::B32,
            "b64" => Ty::B64,
            "u8" => Ty::U8,
            "u16" => Ty::U16,
            "u32" => Ty::U32,
            "u64" => Ty::U64,
            "s8" => Ty::S8,
            "s16" => Ty::S16,
            "s32" => Ty::S32,
            "s64" => Ty::S64,
            "f16" => Ty::F16,
            "bf16" => Ty::Bf16,
            "f32" => Ty::F32,
            "f64" => Ty::F64,
            "pred" => Ty::Pred,
            "bf16x2" => Ty::Bf16x2,
            "f16x2" => Ty::F16x2,
            _ => return None,
        })
    }
    pub fn bytes(self) -> usize {
        match self {
            Ty::B8 | Ty::U8 | Ty::S8 => 1,
            Ty::B16 | Ty::U16 | Ty::S16 | Ty::F16 | Ty::Bf16 => 2,
            Ty::B32 | Ty::U32 | Ty::S32 | Ty::F32 | Ty::Bf16x2 | Ty::F16x2 => 4,
            Ty::B64 | Ty::U64 | Ty::S64 | Ty::F64 => 8,
            Ty::Pred => 1,
        }
    }
    pub fn is_signed(self) -> bool {
        matches!(self, Ty::S8 | Ty::S16 | Ty::S32 | Ty::S64)
    }
    pub fn is_float(self) -> bool {
        matches!(self, Ty::F16 | Ty::Bf16 | Ty::F32 | Ty::F64)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Special {
    Tid(u8),
    Ntid(u8),
    Ctaid(u8),
    Nctaid(u8),
    LaneId,
    WarpId,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Operand {
    Reg(u16),
    Imm(u64),
    /// A float literal, converted to the instruction's type when executed.
    FImm(f64),
    Special(Special),
    /// `[base + offset]`: base is a register, a shared variable or a param.
    Addr(AddrBase, i64),
    Vector(Vec<u16>),
    /// A shared variable's address used as a value (`mov.u64 %rd, smem;`).
    Symbol(u32),
    Label(u32),
    /// `_` sink in vector/pair destinations.
    Sink,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum AddrBase {
    Reg(u16),
    Shared(u32),
    Param(u32),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Space {
    Global,
    Shared,
    Param,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cmp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    Equ,
    Neu,
    Ltu,
    Leu,
    Gtu,
    Geu,
    Num,
    Nan,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MulMode {
    Lo,
    Hi,
    Wide,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShflMode {
    Up,
    Down,
    Bfly,
    Idx,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Opcode {
    Mov,
    Add,
    Sub,
    Mul(MulMode),
    Mad(MulMode),
    Fma,
    Div {
        approx: bool,
    },
    Rem,
    Rcp {
        approx: bool,
    },
    Sqrt {
        approx: bool,
    },
    Rsqrt,
    Ex2,
    Lg2,
    Abs,
    Neg,
    Min,
    Max,
    And,
    Or,
    Xor,
    Not,
    Shl,
    Shr,
    Setp(Cmp),
    Selp,
    Cvt {
        dst: Ty,
        src: Ty,
        rnd: Round,
    },
    Cvta,
    Ld {
        space: Space,
        vec: u8,
    },
    St {
        space: Space,
        vec: u8,
    },
    Bra,
    Bar,
    Shfl(ShflMode),
    Ret,
    /// `cvt.rn.{bf16x2,f16x2}.f32 d, a, b`: a goes to the upper half.
    CvtPack {
        dst: Ty,
    },
    /// `mma.sync.aligned.m16n8k16.row.col.f32.{bf16,f16}.{bf16,f16}.f32`.
    Mma {
        ab: Ty,
    },
    /// `ldmatrix.sync.aligned.m8n8.x{1,2,4}{.trans}.shared.b16`.
    Ldmatrix {
        num: u8,
        trans: bool,
    },
    /// `cp.async.{ca,cg}.shared.global [dst], [src], size{, src_size}`.
    CpAsync,
    CpAsyncCommit,
    /// `cp.async.wait_group N` (`wait_all` is commit + wait 0).
    CpAsyncWait {
        all: bool,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Round {
    /// No rounding modifier (exact conversions, or float→float widening).
    None,
    Rn,
    Rz,
    Rm,
    Rp,
    Rni,
    Rzi,
    Rmi,
    Rpi,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Inst {
    pub opcode: Opcode,
    pub ty: Ty,
    /// `@%p` / `@!%p`.
    pub guard: Option<(u16, bool)>,
    pub args: Vec<Operand>,
    pub line: u32,
}

#[derive(Clone, Debug)]
pub struct SharedVar {
    pub name: String,
    pub align: usize,
    /// `None` for `.extern` dynamic shared memory.
    pub size: Option<usize>,
}

#[derive(Clone, Debug)]
pub struct Param {
    pub name: String,
    pub ty: Ty,
    pub offset: usize,
}

#[derive(Clone, Debug)]
pub struct Kernel {
    pub name: String,
    pub params: Vec<Param>,
    pub param_bytes: usize,
    pub regs: Vec<(String, Ty)>,
    pub shared: Vec<SharedVar>,
    pub insts: Vec<Inst>,
}

#[derive(Clone, Debug)]
pub struct Module {
    pub version: String,
    pub target: String,
    pub kernels: Vec<Kernel>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ParseError {
    pub line: u32,
    pub msg: String,
}

impl std::fmt::Display for ParseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "line {}: {}", self.line, self.msg)
    }
}

type PResult<T> = Result<T, ParseError>;

fn perr<T>(line: u32, msg: impl Into<String>) -> PResult<T> {
    Err(ParseError {
        line,
        msg: msg.into(),
    })
}

/// Removes comments, keeping newlines so line numbers stay right.
fn strip_comments(src: &str) -> String {
    let mut out = String::with_capacity(src.len());
    let b = src.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'/' && i + 1 < b.len() && b[i + 1] == b'/' {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
        } else if b[i] == b'/' && i + 1 < b.len() && b[i + 1] == b'*' {
            i += 2;
            while i + 1 < b.len() && !(b[i] == b'*' && b[i + 1] == b'/') {
                if b[i] == b'\n' {
                    out.push('\n');
                }
                i += 1;
            }
            i += 2;
        } else {
            out.push(b[i] as char);
            i += 1;
        }
    }
    out
}

const LINE_DIRECTIVES: [&str; 6] = [
    ".version",
    ".target",
    ".address_size",
    ".maxntid",
    ".reqntid",
    ".minnctapersm",
];

/// Splits into statements: (line, text) at `;`, `{`, `}` and labels.
fn statements(src: &str) -> Vec<(u32, String)> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut line = 1u32;
    let mut start = 1u32;
    let mut depth_paren = 0i32;
    for ch in src.chars() {
        if cur.trim().is_empty() {
            start = line;
        }
        match ch {
            '\n' => {
                // Directives without a `;` end at the end of their line.
                let t = cur.trim_start();
                if depth_paren == 0 && LINE_DIRECTIVES.iter().any(|d| t.starts_with(d)) {
                    out.push((start, t.trim().to_string()));
                    cur.clear();
                } else {
                    cur.push(' ');
                }
                line += 1;
            }
            '(' => {
                depth_paren += 1;
                cur.push(ch);
            }
            ')' => {
                depth_paren -= 1;
                cur.push(ch);
            }
            ';' if depth_paren == 0 => {
                out.push((start, cur.trim().to_string()));
                cur.clear();
            }
            '{' | '}' if depth_paren == 0 && !cur.contains('[') && !is_vector_context(&cur) => {
                if !cur.trim().is_empty() {
                    out.push((start, cur.trim().to_string()));
                }
                out.push((line, ch.to_string()));
                cur.clear();
            }
            ':' if depth_paren == 0 && is_label(&cur) => {
                out.push((start, format!("{}:", cur.trim())));
                cur.clear();
            }
            _ => cur.push(ch),
        }
    }
    if !cur.trim().is_empty() {
        out.push((start, cur.trim().to_string()));
    }
    out
}

/// Inside an instruction, `{` opens a vector operand, not a block.
fn is_vector_context(cur: &str) -> bool {
    let t = cur.trim();
    !t.is_empty() && !t.starts_with('.') && !t.ends_with(')')
}

fn is_label(cur: &str) -> bool {
    let t = cur.trim();
    !t.is_empty()
        && !t.starts_with('.')
        && !t.starts_with('@')
        && t.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$')
}

pub fn parse(src: &str) -> PResult<Module> {
    let clean = strip_comments(src);
    let stmts = statements(&clean);
    let mut version = String::new();
    let mut target = String::new();
    let mut kernels = Vec::new();
    // Module-scope shared variables (`.extern .shared` must live here).
    let mut module_shared = Vec::new();
    let mut i = 0;
    while i < stmts.len() {
        let (line, s) = &stmts[i];
        if let Some(v) = s.strip_prefix(".version") {
            version = v.trim().to_string();
        } else if let Some(t) = s.strip_prefix(".target") {
            target = t.trim().to_string();
        } else if s.starts_with(".address_size") {
        } else if s.starts_with(".shared") || s.starts_with(".extern") {
            module_shared.push(parse_shared(*line, s)?);
        } else if s.contains(".entry") {
            let (k, next) = parse_kernel(&stmts, i, &module_shared)?;
            kernels.push(k);
            i = next;
            continue;
        } else {
            return perr(*line, format!("unexpected module-level statement `{s}`"));
        }
        i += 1;
    }
    if version.is_empty() {
        return perr(1, "missing .version");
    }
    Ok(Module {
        version,
        target,
        kernels,
    })
}

struct Names {
    regs: HashMap<String, u16>,
    reg_list: Vec<(String, Ty)>,
    shared: HashMap<String, u32>,
    params: HashMap<String, u32>,
    labels: HashMap<String, u32>,
}

fn parse_kernel(
    stmts: &[(u32, String)],
    start: usize,
    module_shared: &[SharedVar],
) -> PResult<(Kernel, usize)> {
    let (line, head) = &stmts[start];
    let after = head.split(".entry").nth(1).unwrap_or("").trim();
    let name_end = after.find('(').unwrap_or(after.len());
    let name = after[..name_end].trim().to_string();
    if name.is_empty() {
        return perr(*line, "kernel without a name");
    }
    let mut params = Vec::new();
    let mut offset = 0usize;
    if let (Some(a), Some(b)) = (after.find('('), after.rfind(')')) {
        for p in after[a + 1..b].split(',') {
            let p = p.trim();
            if p.is_empty() {
                continue;
            }
            let toks: Vec<&str> = p.split_whitespace().collect();
            if toks.len() != 3 || toks[0] != ".param" {
                return perr(*line, format!("unsupported parameter `{p}`"));
            }
            let ty = Ty::parse(toks[1].trim_start_matches('.')).ok_or(ParseError {
                line: *line,
                msg: format!("unknown parameter type in `{p}`"),
            })?;
            offset = offset.next_multiple_of(ty.bytes());
            params.push(Param {
                name: toks[2].to_string(),
                ty,
                offset,
            });
            offset += ty.bytes();
        }
    }
    let mut names = Names {
        regs: HashMap::new(),
        reg_list: Vec::new(),
        shared: HashMap::new(),
        params: params
            .iter()
            .enumerate()
            .map(|(i, p)| (p.name.clone(), i as u32))
            .collect(),
        labels: HashMap::new(),
    };
    let mut shared: Vec<SharedVar> = module_shared.to_vec();
    for (i, v) in shared.iter().enumerate() {
        names.shared.insert(v.name.clone(), i as u32);
    }
    // Find the body: from `{` to the matching `}`; skip performance directives.
    let mut i = start + 1;
    while i < stmts.len() && stmts[i].1 != "{" {
        let s = &stmts[i].1;
        if !(s.starts_with(".maxntid")
            || s.starts_with(".reqntid")
            || s.starts_with(".minnctapersm"))
        {
            return perr(
                stmts[i].0,
                format!("unexpected `{s}` before the kernel body"),
            );
        }
        i += 1;
    }
    if i >= stmts.len() {
        return perr(*line, format!("kernel `{name}` has no body"));
    }
    let body_start = i + 1;
    let mut depth = 1;
    let mut j = body_start;
    while j < stmts.len() && depth > 0 {
        match stmts[j].1.as_str() {
            "{" => depth += 1,
            "}" => depth -= 1,
            _ => {}
        }
        j += 1;
    }
    if depth != 0 {
        return perr(*line, format!("kernel `{name}`: unbalanced braces"));
    }
    let body = &stmts[body_start..j - 1];
    // Pass 1: declarations and labels.
    let mut n_inst = 0u32;
    for (l, s) in body {
        if s == "{" || s == "}" {
            continue;
        }
        if let Some(lbl) = s.strip_suffix(':') {
            names.labels.insert(lbl.to_string(), n_inst);
        } else if s.starts_with(".reg") {
            declare_regs(*l, s, &mut names)?;
        } else if s.starts_with(".shared") || s.starts_with(".extern") {
            let v = parse_shared(*l, s)?;
            names.shared.insert(v.name.clone(), shared.len() as u32);
            shared.push(v);
        } else if s.starts_with('.') {
            return perr(*l, format!("unsupported directive `{s}`"));
        } else {
            n_inst += 1;
        }
    }
    // Pass 2: instructions.
    let mut insts = Vec::new();
    for (l, s) in body {
        if s == "{" || s == "}" || s.ends_with(':') || s.starts_with('.') {
            continue;
        }
        insts.push(parse_inst(*l, s, &names)?);
    }
    Ok((
        Kernel {
            name,
            params,
            param_bytes: offset,
            regs: names.reg_list,
            shared,
            insts,
        },
        j,
    ))
}

fn declare_regs(line: u32, s: &str, names: &mut Names) -> PResult<()> {
    // `.reg .f32 %f<32>;` or `.reg .b32 %r1, %r2;`
    let rest = s.trim_start_matches(".reg").trim();
    let (ty_s, list) = rest.split_once(char::is_whitespace).ok_or(ParseError {
        line,
        msg: format!("bad register declaration `{s}`"),
    })?;
    let ty = Ty::parse(ty_s.trim_start_matches('.')).ok_or(ParseError {
        line,
        msg: format!("unknown register type `{ty_s}`"),
    })?;
    for item in list.split(',') {
        let item = item.trim();
        if let Some((base, n)) = item.split_once('<') {
            let n: usize = n.trim_end_matches('>').parse().map_err(|_| ParseError {
                line,
                msg: format!("bad register range `{item}`"),
            })?;
            for k in 0..n {
                add_reg(line, format!("{base}{k}"), ty, names)?;
            }
        } else {
            add_reg(line, item.to_string(), ty, names)?;
        }
    }
    Ok(())
}

fn add_reg(line: u32, name: String, ty: Ty, names: &mut Names) -> PResult<()> {
    if names.regs.contains_key(&name) {
        return perr(line, format!("register `{name}` declared twice"));
    }
    if names.reg_list.len() >= u16::MAX as usize {
        return perr(line, "too many registers");
    }
    names.regs.insert(name.clone(), names.reg_list.len() as u16);
    names.reg_list.push((name, ty));
    Ok(())
}

fn parse_shared(line: u32, s: &str) -> PResult<SharedVar> {
    let ext = s.starts_with(".extern");
    let toks: Vec<&str> = s.split_whitespace().collect();
    let mut align = 1;
    let mut k = 0;
    while k < toks.len() {
        if toks[k] == ".align" {
            align = toks
                .get(k + 1)
                .and_then(|a| a.parse().ok())
                .ok_or(ParseError {
                    line,
                    msg: format!("bad .align in `{s}`"),
                })?;
        }
        k += 1;
    }
    let decl = toks.last().copied().unwrap_or("");
    let ety = toks
        .iter()
        .rev()
        .nth(1)
        .and_then(|t| Ty::parse(t.trim_start_matches('.')))
        .ok_or(ParseError {
            line,
            msg: format!("shared declaration without element type: `{s}`"),
        })?;
    let (name, size) = match decl.split_once('[') {
        Some((n, rest)) => {
            let inner = rest.trim_end_matches(']');
            if inner.is_empty() {
                (n, None)
            } else {
                let count: usize = inner.parse().map_err(|_| ParseError {
                    line,
                    msg: format!("bad shared array size in `{s}`"),
                })?;
                (n, Some(count * ety.bytes()))
            }
        }
        None => (decl, Some(ety.bytes())),
    };
    if ext != size.is_none() {
        return perr(line, "only `.extern .shared` arrays may be unsized");
    }
    Ok(SharedVar {
        name: name.to_string(),
        align,
        size,
    })
}

/// Splits operands at top-level commas (not inside `{}` or `[]`).
fn split_operands(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut depth = 0;
    let mut cur = String::new();
    for c in s.chars() {
        match c {
            '{' | '[' => {
                depth += 1;
                cur.push(c)
            }
            '}' | ']' => {
                depth -= 1;
                cur.push(c)
            }
            ',' if depth == 0 => {
                out.push(cur.trim().to_string());
                cur.clear();
            }
            _ => cur.push(c),
        }
    }
    if !cur.trim().is_empty() {
        out.push(cur.trim().to_string());
    }
    out
}

fn parse_int(s: &str) -> Option<i64> {
    let (neg, body) = match s.strip_prefix('-') {
        Some(b) => (true, b),
        None => (false, s),
    };
    let body = body.trim_end_matches('U');
    let v = if let Some(h) = body.strip_prefix("0x").or(body.strip_prefix("0X")) {
        u64::from_str_radix(h, 16).ok()? as i64
    } else {
        body.parse::<u64>().ok()? as i64
    };
    Some(if neg { v.wrapping_neg() } else { v })
}

fn parse_operand(line: u32, s: &str, names: &Names) -> PResult<Operand> {
    let s = s.trim();
    let reg = |n: &str| -> PResult<u16> {
        names.regs.get(n).copied().ok_or(ParseError {
            line,
            msg: format!("undeclared register `{n}`"),
        })
    };
    if s == "_" {
        return Ok(Operand::Sink);
    }
    if let Some(inner) = s.strip_prefix('{').and_then(|x| x.strip_suffix('}')) {
        let regs = inner
            .split(',')
            .map(|r| reg(r.trim()))
            .collect::<PResult<Vec<_>>>()?;
        return Ok(Operand::Vector(regs));
    }
    if let Some(inner) = s.strip_prefix('[').and_then(|x| x.strip_suffix(']')) {
        let (base, off) = match inner.find(['+', '-']) {
            Some(p) if p > 0 => {
                let off =
                    parse_int(inner[p..].trim_start_matches('+').trim()).ok_or(ParseError {
                        line,
                        msg: format!("bad address offset in `{s}`"),
                    })?;
                (inner[..p].trim(), off)
            }
            _ => (inner.trim(), 0),
        };
        let b = if base.starts_with('%') {
            AddrBase::Reg(reg(base)?)
        } else if let Some(&i) = names.shared.get(base) {
            AddrBase::Shared(i)
        } else if let Some(&i) = names.params.get(base) {
            AddrBase::Param(i)
        } else {
            return perr(line, format!("unknown address base `{base}`"));
        };
        return Ok(Operand::Addr(b, off));
    }
    if let Some(sp) = special(s) {
        return Ok(Operand::Special(sp));
    }
    if s.starts_with('%') {
        return Ok(Operand::Reg(reg(s)?));
    }
    if let Some(h) = s.strip_prefix("0f").or(s.strip_prefix("0F")) {
        let bits = u32::from_str_radix(h, 16).map_err(|_| ParseError {
            line,
            msg: format!("bad f32 literal `{s}`"),
        })?;
        return Ok(Operand::FImm(f32::from_bits(bits) as f64));
    }
    if let Some(h) = s.strip_prefix("0d").or(s.strip_prefix("0D")) {
        let bits = u64::from_str_radix(h, 16).map_err(|_| ParseError {
            line,
            msg: format!("bad f64 literal `{s}`"),
        })?;
        return Ok(Operand::FImm(f64::from_bits(bits)));
    }
    if let Some(v) = parse_int(s) {
        return Ok(Operand::Imm(v as u64));
    }
    if (s.contains('.') || s.contains('e'))
        && let Ok(v) = s.parse::<f64>()
    {
        return Ok(Operand::FImm(v));
    }
    if let Some(&i) = names.shared.get(s) {
        return Ok(Operand::Symbol(i));
    }
    if let Some(&i) = names.labels.get(s) {
        return Ok(Operand::Label(i));
    }
    perr(line, format!("cannot read operand `{s}`"))
}

fn special(s: &str) -> Option<Special> {
    let dim = |d: &str| match d {
        "x" => Some(0u8),
        "y" => Some(1),
        "z" => Some(2),
        _ => None,
    };
    let (base, d) = s.split_once('.').unwrap_or((s, ""));
    Some(match base {
        "%tid" => Special::Tid(dim(d)?),
        "%ntid" => Special::Ntid(dim(d)?),
        "%ctaid" => Special::Ctaid(dim(d)?),
        "%nctaid" => Special::Nctaid(dim(d)?),
        "%laneid" if d.is_empty() => Special::LaneId,
        "%warpid" if d.is_empty() => Special::WarpId,
        _ => return None,
    })
}

fn parse_inst(line: u32, s: &str, names: &Names) -> PResult<Inst> {
    let mut s = s.trim();
    let mut guard = None;
    if let Some(rest) = s.strip_prefix('@') {
        let (g, r) = rest.split_once(char::is_whitespace).ok_or(ParseError {
            line,
            msg: "guard without instruction".into(),
        })?;
        let (neg, name) = match g.strip_prefix('!') {
            Some(n) => (true, n),
            None => (false, g),
        };
        let r_idx = names.regs.get(name).copied().ok_or(ParseError {
            line,
            msg: format!("undeclared predicate `{name}`"),
        })?;
        guard = Some((r_idx, neg));
        s = r.trim();
    }
    let (opcode, rest) = match s.split_once(char::is_whitespace) {
        Some((o, r)) => (o, r.trim()),
        None => (s, ""),
    };
    let parts: Vec<&str> = opcode.split('.').collect();
    let base = parts[0];
    let mods: Vec<&str> = parts[1..].to_vec();
    let has = |m: &str| mods.contains(&m);
    let last_ty = mods.iter().rev().find_map(|m| Ty::parse(m));
    let bad = |what: &str| -> PResult<Inst> {
        perr(line, format!("unsupported instruction `{opcode}`{what}"))
    };
    // Pair destination `%r|%p` of shfl: keep only the value register.
    let operands: Vec<String> = split_operands(rest)
        .into_iter()
        .map(|o| o.split('|').next().unwrap_or("").trim().to_string())
        .collect();
    let mut args = operands
        .iter()
        .map(|o| parse_operand(line, o, names))
        .collect::<PResult<Vec<_>>>()?;
    let ty = last_ty.unwrap_or(Ty::B32);
    let mode = || {
        if has("wide") {
            MulMode::Wide
        } else if has("hi") {
            MulMode::Hi
        } else {
            MulMode::Lo
        }
    };
    let vec = if has("v4") {
        4
    } else if has("v2") {
        2
    } else {
        1
    };
    let space = || {
        if has("global") {
            Some(Space::Global)
        } else if has("shared") {
            Some(Space::Shared)
        } else if has("param") {
            Some(Space::Param)
        } else {
            None
        }
    };
    let op = match base {
        "mov" => Opcode::Mov,
        "add" => Opcode::Add,
        "sub" => Opcode::Sub,
        "mul" if ty.is_float() => Opcode::Mul(MulMode::Lo),
        "mul" => Opcode::Mul(mode()),
        "mad" => Opcode::Mad(mode()),
        "fma" => Opcode::Fma,
        "div" => Opcode::Div {
            approx: has("approx") || has("full"),
        },
        "rem" => Opcode::Rem,
        "rcp" => Opcode::Rcp {
            approx: has("approx"),
        },
        "sqrt" => Opcode::Sqrt {
            approx: has("approx"),
        },
        "rsqrt" if has("approx") => Opcode::Rsqrt,
        "ex2" if has("approx") => Opcode::Ex2,
        "lg2" if has("approx") => Opcode::Lg2,
        "abs" => Opcode::Abs,
        "neg" => Opcode::Neg,
        "min" => Opcode::Min,
        "max" => Opcode::Max,
        "and" => Opcode::And,
        "or" => Opcode::Or,
        "xor" => Opcode::Xor,
        "not" => Opcode::Not,
        "shl" => Opcode::Shl,
        "shr" => Opcode::Shr,
        "setp" => {
            let c = mods.first().copied().unwrap_or("");
            let cmp = match c {
                "eq" => Cmp::Eq,
                "ne" => Cmp::Ne,
                "lt" | "lo" => Cmp::Lt,
                "le" | "ls" => Cmp::Le,
                "gt" | "hi" => Cmp::Gt,
                "ge" | "hs" => Cmp::Ge,
                "equ" => Cmp::Equ,
                "neu" => Cmp::Neu,
                "ltu" => Cmp::Ltu,
                "leu" => Cmp::Leu,
                "gtu" => Cmp::Gtu,
                "geu" => Cmp::Geu,
                "num" => Cmp::Num,
                "nan" => Cmp::Nan,
                _ => return bad(": unknown comparison"),
            };
            if mods.len() != 2 {
                return bad(": combined predicates are not supported");
            }
            Opcode::Setp(cmp)
        }
        "selp" => Opcode::Selp,
        "cvt" if has("bf16x2") || has("f16x2") => {
            if !has("rn") || !has("f32") {
                return bad(": only cvt.rn.{bf16x2,f16x2}.f32 packs");
            }
            Opcode::CvtPack {
                dst: if has("bf16x2") { Ty::Bf16x2 } else { Ty::F16x2 },
            }
        }
        "cvt" => {
            let tys: Vec<Ty> = mods.iter().filter_map(|m| Ty::parse(m)).collect();
            if tys.len() != 2 {
                return bad(": cvt needs two types");
            }
            let rnd = if has("rn") {
                Round::Rn
            } else if has("rz") {
                Round::Rz
            } else if has("rm") {
                Round::Rm
            } else if has("rp") {
                Round::Rp
            } else if has("rni") {
                Round::Rni
            } else if has("rzi") {
                Round::Rzi
            } else if has("rmi") {
                Round::Rmi
            } else if has("rpi") {
                Round::Rpi
            } else {
                Round::None
            };
            Opcode::Cvt {
                dst: tys[0],
                src: tys[1],
                rnd,
            }
        }
        "cvta" if has("to") && has("global") => Opcode::Cvta,
        "ld" => match space() {
            Some(sp) => Opcode::Ld { space: sp, vec },
            None => {
                return bad(": generic addressing is not supported; name .global/.shared/.param");
            }
        },
        "st" => match space() {
            Some(Space::Param) | None => {
                return bad(": stores need .global or .shared");
            }
            Some(sp) => Opcode::St { space: sp, vec },
        },
        "bra" => Opcode::Bra,
        "bar" if has("sync") || mods.is_empty() => Opcode::Bar,
        "barrier" if has("sync") => Opcode::Bar,
        "shfl" if has("sync") => {
            let m = if has("up") {
                ShflMode::Up
            } else if has("down") {
                ShflMode::Down
            } else if has("bfly") {
                ShflMode::Bfly
            } else if has("idx") {
                ShflMode::Idx
            } else {
                return bad(": unknown shuffle mode");
            };
            Opcode::Shfl(m)
        }
        "ret" | "exit" => Opcode::Ret,
        "mma" => {
            let tys: Vec<Ty> = mods.iter().filter_map(|m| Ty::parse(m)).collect();
            let shape_ok =
                has("sync") && has("aligned") && has("m16n8k16") && has("row") && has("col");
            match tys.as_slice() {
                [Ty::F32, a, b, Ty::F32]
                    if shape_ok && a == b && matches!(a, Ty::Bf16 | Ty::F16) =>
                {
                    Opcode::Mma { ab: *a }
                }
                _ => {
                    return bad(
                        ": only mma.sync.aligned.m16n8k16.row.col.f32.{bf16,f16}.{bf16,f16}.f32",
                    );
                }
            }
        }
        "ldmatrix"
            if has("sync") && has("aligned") && has("m8n8") && has("shared") && has("b16") =>
        {
            let num = if has("x4") {
                4
            } else if has("x2") {
                2
            } else if has("x1") {
                1
            } else {
                return bad(": ldmatrix needs .x1, .x2 or .x4");
            };
            Opcode::Ldmatrix {
                num,
                trans: has("trans"),
            }
        }
        "cp" if has("async") && has("commit_group") => Opcode::CpAsyncCommit,
        "cp" if has("async") && has("wait_group") => Opcode::CpAsyncWait { all: false },
        "cp" if has("async") && has("wait_all") => Opcode::CpAsyncWait { all: true },
        "cp" if has("async") && has("shared") && has("global") && (has("ca") || has("cg")) => {
            Opcode::CpAsync
        }
        _ => return bad(""),
    };
    // Arity checks, so the interpreter can index operands freely.
    let want = match &op {
        Opcode::Mov
        | Opcode::Abs
        | Opcode::Neg
        | Opcode::Not
        | Opcode::Rcp { .. }
        | Opcode::Sqrt { .. } => 2,
        Opcode::Rsqrt | Opcode::Ex2 | Opcode::Lg2 | Opcode::Cvt { .. } | Opcode::Cvta => 2,
        Opcode::Add
        | Opcode::Sub
        | Opcode::Mul(_)
        | Opcode::Div { .. }
        | Opcode::Rem
        | Opcode::Min
        | Opcode::Max => 3,
        Opcode::And | Opcode::Or | Opcode::Xor | Opcode::Shl | Opcode::Shr | Opcode::Setp(_) => 3,
        Opcode::Mad(_) | Opcode::Fma | Opcode::Selp => 4,
        Opcode::Ld { .. } | Opcode::St { .. } => 2,
        Opcode::Bra => 1,
        Opcode::Bar => 1,
        Opcode::Shfl(_) => 5,
        Opcode::Ret | Opcode::CpAsyncCommit => 0,
        Opcode::CvtPack { .. } => 3,
        Opcode::Mma { .. } => 4,
        Opcode::Ldmatrix { .. } => 2,
        Opcode::CpAsync => args.len().clamp(3, 4),
        Opcode::CpAsyncWait { all } => usize::from(!all),
    };
    if args.len() != want {
        return perr(
            line,
            format!("`{opcode}` takes {want} operands, got {}", args.len()),
        );
    }
    if let Opcode::Bra = op {
        match &args[0] {
            Operand::Label(_) => {}
            Operand::Symbol(_) | Operand::Reg(_) => return perr(line, "bra needs a label"),
            _ => return perr(line, "bra needs a label"),
        }
    }
    if let (Opcode::Ld { vec, .. } | Opcode::St { vec, .. }, true) = (&op, vec > 1) {
        let vi = if matches!(op, Opcode::Ld { .. }) {
            0
        } else {
            1
        };
        match &args[vi] {
            Operand::Vector(v) if v.len() == *vec as usize => {}
            _ => return perr(line, format!("`{opcode}` needs a {{…}} of {vec} registers")),
        }
    }
    let regs_of = |o: &Operand| match o {
        Operand::Vector(v) => v.len(),
        Operand::Reg(_) => 1,
        _ => 0,
    };
    match &op {
        Opcode::Mma { .. } => {
            let want = [4, 4, 2, 4];
            for (i, w) in want.iter().enumerate() {
                if !matches!(&args[i], Operand::Vector(v) if v.len() == *w) {
                    return perr(
                        line,
                        format!("mma operand {} needs a {{…}} of {w} registers", i + 1),
                    );
                }
            }
        }
        Opcode::Ldmatrix { num, .. }
            if regs_of(&args[0]) != *num as usize || !matches!(args[1], Operand::Addr(..)) =>
        {
            return perr(
                line,
                format!("ldmatrix .x{num} needs {num} destination registers and an address"),
            );
        }
        Opcode::CpAsync => {
            if !matches!(args[0], Operand::Addr(..)) || !matches!(args[1], Operand::Addr(..)) {
                return perr(line, "cp.async needs [shared], [global] addresses");
            }
            let size = match args[2] {
                Operand::Imm(v) if [4, 8, 16].contains(&v) => v,
                _ => return perr(line, "cp.async copy size must be 4, 8 or 16"),
            };
            if has("cg") && size != 16 {
                return perr(line, "cp.async.cg copies exactly 16 bytes");
            }
        }
        Opcode::CpAsyncWait { all: false } if !matches!(args[0], Operand::Imm(_)) => {
            return perr(line, "cp.async.wait_group needs an immediate group count");
        }
        _ => {}
    }
    if let Opcode::Bar = op {
        // Only barrier 0 for the whole block.
        if args[0] != Operand::Imm(0) {
            return perr(line, "only `bar.sync 0` is supported");
        }
        args.clear();
    }
    Ok(Inst {
        opcode: op,
        ty,
        guard,
        args,
        line,
    })
}
