//! Domain nouns as types.

use std::fmt;

use serde::{Deserialize, Serialize};

macro_rules! id_newtype {
    ($(#[$doc:meta])* $name:ident($inner:ty), $prefix:literal) => {
        $(#[$doc])*
        #[derive(
            Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
        )]
        #[serde(transparent)]
        pub struct $name(pub $inner);

        impl $name {
            /// The raw value, for encoding into a wire or storage format.
            pub const fn get(self) -> $inner {
                self.0
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!($prefix, "{}"), self.0)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!($prefix, "{}"), self.0)
            }
        }

        impl From<$inner> for $name {
            fn from(value: $inner) -> Self {
                Self(value)
            }
        }
    };
}

id_newtype!(
    /// Identifies a stream: the storage of one Kafka partition (or of an internal log).
    StreamId(u64),
    "stream-"
);
id_newtype!(
    /// The ownership epoch of a stream. The controller bumps it at every ownership change; every write
    /// and every metadata commit carries it, and a stale epoch is rejected. It doubles as the Kafka
    /// leader epoch.
    Epoch(u64),
    "epoch-"
);
id_newtype!(
    /// Identifies a data object (stream set object or stream object) in the object store.
    ObjectId(u64),
    "object-"
);
id_newtype!(
    /// A position in a stream. Stream offsets are Kafka offsets.
    Offset(u64),
    ""
);

impl Offset {
    /// The offset `n` positions further on.
    #[must_use]
    pub const fn add(self, n: u64) -> Offset {
        Offset(self.0 + n)
    }

    /// How many offsets lie between `earlier` and `self` (zero if `earlier` is not earlier).
    #[must_use]
    pub const fn distance_from(self, earlier: Offset) -> u64 {
        self.0.saturating_sub(earlier.0)
    }
}

impl Epoch {
    /// The epoch after this one.
    #[must_use]
    pub const fn next(self) -> Epoch {
        Epoch(self.0 + 1)
    }
}
