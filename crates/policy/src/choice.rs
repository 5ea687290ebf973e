//! Closed lists of words (engage modes, scopes, roles, …): one enum per
//! list, and the words, the `ALL` list, `FromStr` and `Display` all come
//! from the one [`choice!`](crate::choice) declaration, so no other place
//! keeps a copy of the strings.

/// A word that is not one of a choice list's; says which are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnknownChoice {
    pub given: String,
    pub names: &'static [&'static str],
}

impl std::fmt::Display for UnknownChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:?} is not one of {}",
            self.given,
            self.names.join(", ")
        )
    }
}

impl std::error::Error for UnknownChoice {}

/// Declares a choice enum: `choice! { pub enum X { A = "a", B = "b" } }`
/// gives the enum and `X::ALL`, `X::NAMES` (the words, same order),
/// `as_str`, `parse`, `FromStr` and `Display`. The first word is the
/// example error messages show.
#[macro_export]
macro_rules! choice {
    ($(#[$m:meta])* $vis:vis enum $name:ident { $($(#[$vm:meta])* $var:ident = $s:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        $vis enum $name { $($(#[$vm])* $var),+ }

        impl $name {
            /// Every value, in the order of [`Self::NAMES`].
            pub const ALL: &'static [$name] = &[$($name::$var),+];
            /// Every word, in the order of [`Self::ALL`].
            pub const NAMES: &'static [&'static str] = &[$($s),+];

            pub fn as_str(self) -> &'static str {
                match self { $($name::$var => $s),+ }
            }

            pub fn parse(s: &str) -> Option<Self> {
                match s { $($s => Some($name::$var),)+ _ => None }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl std::str::FromStr for $name {
            type Err = $crate::choice::UnknownChoice;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::parse(s).ok_or_else(|| $crate::choice::UnknownChoice {
                    given: s.to_owned(),
                    names: Self::NAMES,
                })
            }
        }
    };
}

#[cfg(test)]
mod tests {
    crate::choice! {
        enum Fruit { Apple = "apple", Pear = "pear-tree" }
    }

    #[test]
    fn words_and_values_agree() {
        for (v, n) in Fruit::ALL.iter().zip(Fruit::NAMES) {
            assert_eq!(v.as_str(), *n);
            assert_eq!(n.parse::<Fruit>(), Ok(*v));
            assert_eq!(v.to_string(), *n);
        }
        let e = "fig".parse::<Fruit>().unwrap_err();
        assert_eq!(e.to_string(), "\"fig\" is not one of apple, pear-tree");
    }
}
