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
