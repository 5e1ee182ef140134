//! A flag whose value is one of a library [`Choice`]'s names: the possible
//! values, their aliases and their help come from the library's list.

use clap::builder::{PossibleValue, PossibleValuesParser, TypedValueParser};
use dawin::choice::Choice;

/// The parser of a flag taking one of `T`'s names.
pub fn choice<T: Choice + Send + Sync>() -> impl TypedValueParser<Value = T> {
    let values = T::ALL.iter().map(|n| {
        PossibleValue::new(n.name)
            .aliases(n.aliases.iter().copied())
            .help(n.help)
    });
    PossibleValuesParser::new(values)
        .map(|name| T::from_name(&name).expect("clap only passes listed names"))
}

/// The parser of a count flag (`--batch-size`, `--repeats`, ...): a whole
/// number from 1 to `max`. Zero, a negative number (`-b -4`, which the flag
/// takes as its value rather than as another flag) or a fraction is named
/// as such.
pub fn positive<T>(max: u64) -> impl TypedValueParser<Value = T>
where
    T: TryFrom<u64> + Clone + Send + Sync + 'static,
{
    move |s: &str| -> Result<T, String> {
        let range = if max == u64::MAX {
            "1 or more".to_string()
        } else {
            format!("1 to {max}")
        };
        let bad = || format!("must be a positive whole number ({range}), got `{s}`");
        let v: u64 = match s.trim().parse::<i128>() {
            Ok(v) if v >= 1 && v <= max as i128 => v as u64,
            _ => return Err(bad()),
        };
        T::try_from(v).map_err(|_| bad())
    }
}
