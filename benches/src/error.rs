//! The one error type of `weir-bench`: every failure the tool reports before exiting non-zero.

use rdkafka::error::KafkaError;

/// Why a benchmark could not run or finish. Messages are written for the person at the terminal.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// The arguments make no sense together (checked before anything runs).
    #[error("invalid arguments: {0}")]
    Usage(String),
    /// No broker answered a metadata request within the timeout.
    #[error("cannot reach a broker at {bootstrap}: {source}")]
    Unreachable {
        bootstrap: String,
        #[source]
        source: KafkaError,
    },
    /// The broker refused to create the benchmark topic.
    #[error("cannot create topic {topic:?}: {reason}")]
    TopicCreation { topic: String, reason: String },
    /// The topic is missing or has no partitions.
    #[error("topic {topic:?} {reason}")]
    Topic { topic: String, reason: String },
    /// A client call failed; `context` says which one.
    #[error("{context}: {source}")]
    Kafka {
        context: String,
        #[source]
        source: KafkaError,
    },
    /// A file or socket operation of `limits` failed.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    /// Records were produced but none (or too few) came back within the timeout.
    #[error("{0}")]
    Incomplete(String),
    /// The report could not be serialized.
    #[error("cannot write the JSON report: {0}")]
    Json(#[from] serde_json::Error),
}

impl BenchError {
    /// Wraps a client error with what was being done.
    pub fn kafka(context: impl Into<String>, source: KafkaError) -> Self {
        Self::Kafka {
            context: context.into(),
            source,
        }
    }

    /// Wraps an I/O error with what was being done.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            context: context.into(),
            source,
        }
    }
}
