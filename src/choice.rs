//! Values a user picks by name (a flag's value): each such enum lists its
//! values once, with their names, the other names they answer to and what
//! they mean. The CLI turns the list into a flag's possible values and
//! their help; the library parses and prints the same names, and depends
//! on no argument parser.

/// One value of a [`Choice`].
pub struct Named<T: 'static> {
    pub value: T,
    pub name: &'static str,
    /// Other spellings it answers to.
    pub aliases: &'static [&'static str],
    /// What it means (the flag's help lists it).
    pub help: &'static str,
}

impl<T: Copy> Named<T> {
    pub const fn new(value: T, name: &'static str, help: &'static str) -> Self {
        Named {
            value,
            name,
            aliases: &[],
            help,
        }
    }

    pub const fn alias(self, aliases: &'static [&'static str]) -> Self {
        Named {
            value: self.value,
            name: self.name,
            aliases,
            help: self.help,
        }
    }
}

pub trait Choice: Copy + PartialEq + Sized + 'static {
    /// Every value, in the order help lists them.
    const ALL: &'static [Named<Self>];

    /// The value's name.
    fn name(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|n| n.value == self)
            .map_or("", |n| n.name)
    }

    /// The value of a name or alias (exact spelling).
    fn from_name(s: &str) -> Option<Self> {
        Self::ALL
            .iter()
            .find(|n| n.name == s || n.aliases.contains(&s))
            .map(|n| n.value)
    }
}

/// `Display` as the value's name, for a [`Choice`].
#[macro_export]
macro_rules! display_choice {
    ($t:ty) => {
        impl std::fmt::Display for $t {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str($crate::choice::Choice::name(*self))
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Copy, Debug, PartialEq)]
    enum Two {
        A,
        B,
    }

    impl Choice for Two {
        const ALL: &'static [Named<Self>] = &[
            Named::new(Two::A, "a", "first"),
            Named::new(Two::B, "b-two", "second").alias(&["b:2"]),
        ];
    }

    #[test]
    fn names_and_aliases_round_trip() {
        assert_eq!(Two::B.name(), "b-two");
        assert_eq!(Two::from_name("b:2"), Some(Two::B));
        assert_eq!(Two::from_name("a"), Some(Two::A));
        assert_eq!(Two::from_name("A"), None);
    }
}
