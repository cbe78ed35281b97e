//! What an error means, decided in one place: every error the pipeline
//! meets on a record's way declares its [`Domain`] (whose fault) and
//! whether it is transient; [`decide`] turns that into what happens to the
//! record or the worker.
//!
//! | domain | transient | outcome |
//! |---|---|---|
//! | the record (user input) | — | dead-lettered with a stable reason |
//! | an external system (broker, registry, topic) | yes | held and retried with backoff |
//! | an external system | no (authorisation, missing topic) | the worker stops, saying what to fix |
//! | internal (a bug, a model that cannot run) | — | the worker stops |

/// Whose fault an error is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Domain {
    /// The record itself: bytes, fields, size.
    Input,
    /// A system outside the worker: broker, schema registry, topic config.
    External { transient: bool },
    /// The worker's own state or code.
    Internal,
}

/// What happens next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The record goes to the dead-letter topic; its partition moves on.
    DeadLetter,
    /// The record is held (nothing behind it is committed) and retried.
    Retry,
    /// The worker stops with an error.
    Stop,
}

/// The one decision.
pub const fn decide(domain: Domain) -> Outcome {
    match domain {
        Domain::Input => Outcome::DeadLetter,
        Domain::External { transient: true } => Outcome::Retry,
        Domain::External { transient: false } | Domain::Internal => Outcome::Stop,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_domain_has_one_outcome() {
        assert_eq!(decide(Domain::Input), Outcome::DeadLetter);
        assert_eq!(decide(Domain::External { transient: true }), Outcome::Retry);
        assert_eq!(decide(Domain::External { transient: false }), Outcome::Stop);
        assert_eq!(decide(Domain::Internal), Outcome::Stop);
    }
}
