//! What an error means, decided in one place: every error a stage meets
//! declares its [`Domain`] (whose fault: the user's input, an external
//! system, or the worker itself) and whether it is transient; [`decide`]
//! turns that into what happens to the record or the worker. And how an
//! error is shown: [`chain`], the error and each of its causes once.
//!
//! | domain | transient | outcome |
//! |---|---|---|
//! | user input: the record | — | dead-lettered with a stable reason |
//! | user input: the settings (flags, config, model files) | — | the worker stops, saying what to fix |
//! | an external system (broker, registry, topic) | yes | held and retried with backoff |
//! | an external system | no (authorisation, missing topic) | the worker stops, saying what to fix |
//! | internal (a bug, a model that cannot run) | — | the worker stops |
//!
//! Who declares one: a record's decode failure (`codec::DecodeError`), a
//! delivery failure (`sink::Class`), and the errors that end a stage
//! (`source::SourceError`, `scoring::ScoringError` through
//! `model::ModelError`, `sink::SinkError`), each with `domain()` and
//! `outcome()`.

use std::error::Error;
use std::fmt;

/// Whose fault an error is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Domain {
    /// What the user gave the worker.
    Input(Input),
    /// A system outside the worker: broker, schema registry, topic config.
    External { transient: bool },
    /// The worker's own state or code.
    Internal,
}

/// Which user input is at fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Input {
    /// One record: its bytes, fields, size.
    Record,
    /// What the worker was started with: flags, config, client options,
    /// the model files it was pointed at.
    Settings,
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
        Domain::Input(Input::Record) => Outcome::DeadLetter,
        Domain::External { transient: true } => Outcome::Retry,
        Domain::Input(Input::Settings)
        | Domain::External { transient: false }
        | Domain::Internal => Outcome::Stop,
    }
}

/// An error and its causes, each once, joined by `": "`: what logs,
/// dead-letter details and the command line's last line show. Messages
/// say what was being done, their `source()` what went wrong; a cause
/// whose text an earlier message already holds (some libraries print
/// their source in their own message) is not repeated.
pub fn chain(e: &dyn Error) -> Chain<'_> {
    Chain(e)
}

/// See [`chain`].
#[derive(Clone, Copy)]
pub struct Chain<'a>(&'a dyn Error);

impl fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut shown = self.0.to_string();
        let mut cause = self.0.source();
        while let Some(c) = cause {
            let text = c.to_string();
            if !text.is_empty() && !shown.contains(&text) {
                shown.push_str(": ");
                shown.push_str(&text);
            }
            cause = c.source();
        }
        f.write_str(&shown)
    }
}

impl fmt::Debug for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_domain_has_one_outcome() {
        assert_eq!(decide(Domain::Input(Input::Record)), Outcome::DeadLetter);
        assert_eq!(decide(Domain::Input(Input::Settings)), Outcome::Stop);
        assert_eq!(decide(Domain::External { transient: true }), Outcome::Retry);
        assert_eq!(decide(Domain::External { transient: false }), Outcome::Stop);
        assert_eq!(decide(Domain::Internal), Outcome::Stop);
    }

    /// A stage that returns an error stops the worker, whatever the
    /// error's domain: each one's declared outcome says so.
    #[test]
    fn every_stage_error_stops_the_worker() {
        use crate::model::{DeviceChoice, ModelError};
        use crate::scoring::ScoringError;
        use crate::sink::SinkError;
        use crate::source::SourceError;
        use rdkafka::error::KafkaError;
        use rdkafka::types::RDKafkaErrorCode as C;
        let settings = Domain::Input(Input::Settings);
        let cluster = Domain::External { transient: false };
        let source = [
            (
                SourceError::Create(KafkaError::ClientCreation("x".into())),
                settings,
            ),
            (
                SourceError::Subscribe {
                    topic: "t".into(),
                    source: KafkaError::Subscription("t".into()),
                },
                cluster,
            ),
            (
                SourceError::Fatal(KafkaError::MessageConsumptionFatal(C::Fatal)),
                cluster,
            ),
            (
                SourceError::Fenced(KafkaError::Global(C::FencedInstanceId)),
                cluster,
            ),
        ];
        for (e, domain) in source {
            assert_eq!((e.domain(), e.outcome()), (domain, Outcome::Stop), "{e}");
        }
        let sink = [
            (
                SinkError::Create(KafkaError::ClientCreation("x".into())),
                settings,
            ),
            (SinkError::Fatal(KafkaError::Canceled), cluster),
            (
                SinkError::Refused {
                    topic: "t".into(),
                    code: C::TopicAuthorizationFailed,
                    fix: "grant",
                },
                cluster,
            ),
        ];
        for (e, domain) in sink {
            assert_eq!((e.domain(), e.outcome()), (domain, Outcome::Stop), "{e}");
        }
        let scoring = [
            ScoringError::Model(ModelError::Device(DeviceChoice::Wgpu, "x".into())),
            ScoringError::Model(ModelError::CardShape {
                path: "p".into(),
                detail: "d".into(),
            }),
        ];
        for e in scoring {
            assert_eq!((e.domain(), e.outcome()), (settings, Outcome::Stop), "{e}");
        }
    }

    #[derive(Debug)]
    struct Step(&'static str, Option<Box<Step>>);

    impl fmt::Display for Step {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(self.0)
        }
    }

    impl Error for Step {
        fn source(&self) -> Option<&(dyn Error + 'static)> {
            self.1.as_deref().map(|s| s as &dyn Error)
        }
    }

    #[test]
    fn the_chain_shows_each_cause_once() {
        let root = Step("connection refused", None);
        let e = Step(
            "reading model card m/1/card.json",
            Some(Box::new(Step("open failed", Some(Box::new(root))))),
        );
        assert_eq!(
            chain(&e).to_string(),
            "reading model card m/1/card.json: open failed: connection refused"
        );
        // A library that prints its source in its own message.
        let e = Step(
            "cannot create the consumer",
            Some(Box::new(Step(
                "Message consumption error: BrokerTransportFailure",
                Some(Box::new(Step("BrokerTransportFailure", None))),
            ))),
        );
        assert_eq!(
            chain(&e).to_string(),
            "cannot create the consumer: Message consumption error: BrokerTransportFailure"
        );
        assert_eq!(chain(&Step("alone", None)).to_string(), "alone");
    }
}
