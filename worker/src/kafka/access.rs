//! Permissions check at start-up: before it reads or writes anything, the
//! worker asks the cluster which operations this principal may perform on
//! each topic and group it uses (DescribeTopics and DescribeConsumerGroups
//! with `include_authorized_operations`, which need only the Describe that
//! every granted operation implies) and stops with a message naming the
//! first missing permission. Without the check, a missing ACL surfaces late
//! or not at all: a consumer retries `GroupAuthorizationFailed` forever, a
//! producer that never sends never learns, a topic without Describe looks
//! missing and the worker tries to create it.

use std::collections::HashMap;
use std::ffi::{CStr, CString};
use std::fmt;
use std::os::raw::c_char;
use std::time::Duration;

use rdkafka::bindings as rd;
use rdkafka::types::{RDKafkaErrorCode, RDKafkaRespErr};

/// A Kafka resource riskstream uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Resource {
    Topic,
    Group,
}

/// An ACL operation riskstream needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operation {
    Read,
    Write,
    Describe,
    /// Only in messages: topic creation refused.
    Create,
}

impl fmt::Display for Resource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Resource::Topic => "topic",
            Resource::Group => "group",
        })
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Operation::Read => "Read",
            Operation::Write => "Write",
            Operation::Describe => "Describe",
            Operation::Create => "Create",
        })
    }
}

impl Operation {
    fn code(self) -> u32 {
        use rd::rd_kafka_AclOperation_t as O;
        (match self {
            Operation::Read => O::RD_KAFKA_ACL_OPERATION_READ,
            Operation::Write => O::RD_KAFKA_ACL_OPERATION_WRITE,
            Operation::Describe => O::RD_KAFKA_ACL_OPERATION_DESCRIBE,
            Operation::Create => O::RD_KAFKA_ACL_OPERATION_CREATE,
        }) as u32
    }
}

/// One permission the worker needs, and what for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Need {
    pub resource: Resource,
    pub name: String,
    pub operation: Operation,
    pub why: &'static str,
}

/// How long the cluster may take to answer a describe request. Kafka
/// answers in milliseconds; a cluster that names no controller (librdkafka's
/// mock) fails it after this long, and the check is skipped.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);

/// What the cluster said about one resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access {
    /// The operations this principal may perform on it.
    Allowed(Vec<u32>),
    /// Describing it failed with this code (not authorized, unknown topic).
    Refused(RDKafkaErrorCode),
}

/// Why a check could not be made.
#[derive(Debug, thiserror::Error)]
#[error("{what}: {detail}")]
pub struct CheckFailed {
    what: &'static str,
    detail: String,
    /// The cluster refused the login or never answered: nothing else the
    /// worker does would work either. Otherwise (a cluster without these
    /// APIs, such as librdkafka's mock) the check is skipped.
    pub fatal: bool,
}

/// True for the codes with which Kafka refuses an unauthorized principal.
pub fn is_authorization(code: RDKafkaErrorCode) -> bool {
    use RDKafkaErrorCode as C;
    matches!(
        code,
        C::TopicAuthorizationFailed
            | C::GroupAuthorizationFailed
            | C::ClusterAuthorizationFailed
            | C::TransactionalIdAuthorizationFailed
            | C::DelegationTokenAuthorizationFailed
    )
}

/// The first need the cluster's answers refuse: a resource it would not
/// describe for lack of authorization, or one described without the
/// operation. A topic that does not exist yet passes (the worker creates
/// it, or waits for it).
pub fn first_missing<'a>(
    needs: &'a [Need],
    answers: &HashMap<(Resource, String), Access>,
) -> Option<&'a Need> {
    needs.iter().find(|n| {
        match answers.get(&(n.resource, n.name.clone())) {
            // An empty list: the broker did not say (a broker with an
            // authorizer always lists at least Describe).
            Some(Access::Allowed(ops)) => !ops.is_empty() && !ops.contains(&n.operation.code()),
            Some(Access::Refused(code)) => is_authorization(*code),
            // Not answered: nothing to say (the check is best effort on
            // what the cluster reports).
            None => false,
        }
    })
}

/// Asks the cluster, through the client `rk`, what this principal may do
/// on each named topic and group.
pub fn describe(
    client: &rdkafka::client::Client<impl rdkafka::client::ClientContext>,
    topics: &[&str],
    groups: &[&str],
    timeout: Duration,
) -> Result<HashMap<(Resource, String), Access>, CheckFailed> {
    let mut out = HashMap::new();
    let rk = client.native_ptr();
    if !topics.is_empty() {
        let names = c_names(topics)?;
        let request = Request::new(
            rk,
            rd::rd_kafka_admin_op_t::RD_KAFKA_ADMIN_OP_DESCRIBETOPICS,
            timeout,
        )?;
        // SAFETY: `rk` is a live client; `names` outlives the call (the
        // collection copies them); `request` owns the options and queue.
        let event = unsafe {
            let mut ptrs: Vec<*const c_char> = names.iter().map(|n| n.as_ptr()).collect();
            let coll = rd::rd_kafka_TopicCollection_of_topic_names(ptrs.as_mut_ptr(), ptrs.len());
            rd::rd_kafka_DescribeTopics(rk, coll, request.options, request.queue);
            rd::rd_kafka_TopicCollection_destroy(coll);
            request.wait("DescribeTopics")?
        };
        // SAFETY: the event is a DescribeTopics result, alive until dropped.
        unsafe { read_topics(event.0, &mut out) };
    }
    if !groups.is_empty() {
        let names = c_names(groups)?;
        let request = Request::new(
            rk,
            rd::rd_kafka_admin_op_t::RD_KAFKA_ADMIN_OP_DESCRIBECONSUMERGROUPS,
            timeout,
        )?;
        // SAFETY: as above; librdkafka copies the group names.
        let event = unsafe {
            let mut ptrs: Vec<*const c_char> = names.iter().map(|n| n.as_ptr()).collect();
            rd::rd_kafka_DescribeConsumerGroups(
                rk,
                ptrs.as_mut_ptr(),
                ptrs.len(),
                request.options,
                request.queue,
            );
            request.wait("DescribeConsumerGroups")?
        };
        // SAFETY: the event is a DescribeConsumerGroups result.
        unsafe { read_groups(event.0, &mut out) };
    }
    Ok(out)
}

fn c_names(names: &[&str]) -> Result<Vec<CString>, CheckFailed> {
    names
        .iter()
        .map(|n| {
            CString::new(*n).map_err(|_| CheckFailed {
                what: "resource name",
                detail: format!("{n:?} holds a NUL byte"),
                fatal: true,
            })
        })
        .collect()
}

/// Admin options (authorized operations included, a request timeout) and
/// a queue for the answer; both destroyed on drop.
struct Request {
    rk: *mut rd::rd_kafka_t,
    options: *mut rd::rd_kafka_AdminOptions_t,
    queue: *mut rd::rd_kafka_queue_t,
    timeout: Duration,
}

/// An admin result event, destroyed on drop.
struct Event(*mut rd::rd_kafka_event_t);

impl Drop for Event {
    fn drop(&mut self) {
        // SAFETY: the event came from rd_kafka_queue_poll and is destroyed once.
        unsafe { rd::rd_kafka_event_destroy(self.0) }
    }
}

impl Request {
    fn new(
        rk: *mut rd::rd_kafka_t,
        op: rd::rd_kafka_admin_op_t,
        timeout: Duration,
    ) -> Result<Self, CheckFailed> {
        let ms = i32::try_from(timeout.min(REQUEST_TIMEOUT).as_millis()).unwrap_or(i32::MAX);
        let mut errstr = [0 as c_char; 256];
        // SAFETY: `rk` is a live client; each pointer made here is owned
        // by the returned value (destroyed on drop), also on early return.
        unsafe {
            let r = Self {
                rk,
                options: rd::rd_kafka_AdminOptions_new(rk, op),
                queue: rd::rd_kafka_queue_new(rk),
                timeout,
            };
            rd::rd_kafka_AdminOptions_set_request_timeout(
                r.options,
                ms,
                errstr.as_mut_ptr(),
                errstr.len(),
            );
            let e = rd::rd_kafka_AdminOptions_set_include_authorized_operations(r.options, 1);
            if !e.is_null() {
                let detail = CStr::from_ptr(rd::rd_kafka_error_string(e))
                    .to_string_lossy()
                    .into_owned();
                rd::rd_kafka_error_destroy(e);
                return Err(CheckFailed {
                    what: "admin options",
                    detail,
                    fatal: false,
                });
            }
            Ok(r)
        }
    }

    /// Waits for the answer.
    ///
    /// # Safety
    /// A request must have been sent to this queue.
    unsafe fn wait(&self, what: &'static str) -> Result<Event, CheckFailed> {
        let deadline = std::time::Instant::now() + self.timeout;
        let ev = loop {
            // SAFETY: the queue is alive while `self` is.
            let ev = unsafe { rd::rd_kafka_queue_poll(self.queue, 100) };
            if !ev.is_null() {
                break ev;
            }
            // A refused login fails no request: librdkafka retries it
            // and reports it on the client's main queue only.
            // SAFETY: `rk` is alive while `self` is.
            if let Some(detail) = unsafe { authentication_error(self.rk) } {
                return Err(CheckFailed {
                    what: "authentication",
                    detail,
                    fatal: true,
                });
            }
            if std::time::Instant::now() >= deadline {
                let ms = self.timeout.as_millis();
                return Err(CheckFailed {
                    what,
                    detail: format!("no answer within {ms} ms"),
                    fatal: true,
                });
            }
        };
        let event = Event(ev);
        // SAFETY: `ev` is a live event.
        let err = unsafe { rd::rd_kafka_event_error(ev) };
        if err != RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR {
            // SAFETY: as above; the string lives as long as the event.
            let s = unsafe { rd::rd_kafka_event_error_string(ev) };
            let detail = if s.is_null() {
                format!("{:?}", RDKafkaErrorCode::from(err))
            } else {
                // SAFETY: a NUL-terminated string of the event.
                unsafe { CStr::from_ptr(s) }.to_string_lossy().into_owned()
            };
            return Err(CheckFailed {
                what,
                detail,
                fatal: false,
            });
        }
        Ok(event)
    }
}

/// A SASL authentication failure waiting on `rk`'s main queue (the
/// events taken from it before are dropped: the client is the check's own).
///
/// # Safety
/// `rk` is a live client.
unsafe fn authentication_error(rk: *mut rd::rd_kafka_t) -> Option<String> {
    // SAFETY: per the contract; the queue reference and each event are
    // released once.
    unsafe {
        let main = rd::rd_kafka_queue_get_main(rk);
        let mut found = None;
        loop {
            let ev = rd::rd_kafka_queue_poll(main, 0);
            if ev.is_null() {
                break;
            }
            let is_auth = rd::rd_kafka_event_type(ev) == rd::RD_KAFKA_EVENT_ERROR
                && matches!(
                    rd::rd_kafka_event_error(ev),
                    RDKafkaRespErr::RD_KAFKA_RESP_ERR__AUTHENTICATION
                        | RDKafkaRespErr::RD_KAFKA_RESP_ERR_SASL_AUTHENTICATION_FAILED
                );
            if is_auth && found.is_none() {
                let s = rd::rd_kafka_event_error_string(ev);
                found = Some(if s.is_null() {
                    "authentication failed".to_string()
                } else {
                    CStr::from_ptr(s).to_string_lossy().into_owned()
                });
            }
            rd::rd_kafka_event_destroy(ev);
        }
        rd::rd_kafka_queue_destroy(main);
        found
    }
}

impl Drop for Request {
    fn drop(&mut self) {
        // SAFETY: both were made in `new` and are destroyed once.
        unsafe {
            rd::rd_kafka_AdminOptions_destroy(self.options);
            rd::rd_kafka_queue_destroy(self.queue);
        }
    }
}

/// The answer for one resource: its error, else its authorized operations.
///
/// # Safety
/// `error` is null or a live error; `ops` points to `n` operations.
unsafe fn access_of(
    error: *const rd::rd_kafka_error_t,
    ops: *const rd::rd_kafka_AclOperation_t,
    n: usize,
) -> Access {
    if !error.is_null() {
        // SAFETY: a live error.
        let code = RDKafkaErrorCode::from(unsafe { rd::rd_kafka_error_code(error) });
        if code != RDKafkaErrorCode::NoError {
            return Access::Refused(code);
        }
    }
    if ops.is_null() || n == 0 {
        return Access::Allowed(Vec::new());
    }
    // Read as integers: a value this build does not know stays a number.
    // SAFETY: `ops` holds `n` 32-bit enum values.
    let raw = unsafe { std::slice::from_raw_parts(ops.cast::<u32>(), n) };
    Access::Allowed(raw.to_vec())
}

/// # Safety
/// `ev` is a live DescribeTopics result event.
unsafe fn read_topics(
    ev: *mut rd::rd_kafka_event_t,
    out: &mut HashMap<(Resource, String), Access>,
) {
    // SAFETY: per the contract, every pointer below lives as long as `ev`.
    unsafe {
        let res = rd::rd_kafka_event_DescribeTopics_result(ev);
        if res.is_null() {
            return;
        }
        let mut cnt = 0usize;
        let arr = rd::rd_kafka_DescribeTopics_result_topics(res, &mut cnt);
        for i in 0..cnt {
            let d = *arr.add(i);
            let name = rd::rd_kafka_TopicDescription_name(d);
            if name.is_null() {
                continue;
            }
            let name = CStr::from_ptr(name).to_string_lossy().into_owned();
            let mut n = 0usize;
            let ops = rd::rd_kafka_TopicDescription_authorized_operations(d, &mut n);
            let access = access_of(rd::rd_kafka_TopicDescription_error(d), ops, n);
            out.insert((Resource::Topic, name), access);
        }
    }
}

/// # Safety
/// `ev` is a live DescribeConsumerGroups result event.
unsafe fn read_groups(
    ev: *mut rd::rd_kafka_event_t,
    out: &mut HashMap<(Resource, String), Access>,
) {
    // SAFETY: per the contract, every pointer below lives as long as `ev`.
    unsafe {
        let res = rd::rd_kafka_event_DescribeConsumerGroups_result(ev);
        if res.is_null() {
            return;
        }
        let mut cnt = 0usize;
        let arr = rd::rd_kafka_DescribeConsumerGroups_result_groups(res, &mut cnt);
        for i in 0..cnt {
            let d = *arr.add(i);
            let name = rd::rd_kafka_ConsumerGroupDescription_group_id(d);
            if name.is_null() {
                continue;
            }
            let name = CStr::from_ptr(name).to_string_lossy().into_owned();
            let mut n = 0usize;
            let ops = rd::rd_kafka_ConsumerGroupDescription_authorized_operations(d, &mut n);
            let access = access_of(rd::rd_kafka_ConsumerGroupDescription_error(d), ops, n);
            out.insert((Resource::Group, name), access);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn need(resource: Resource, name: &str, operation: Operation) -> Need {
        Need {
            resource,
            name: name.into(),
            operation,
            why: "test",
        }
    }

    #[test]
    fn the_first_need_without_its_operation_or_refused_is_missing() {
        let needs = [
            need(Resource::Topic, "in", Operation::Read),
            need(Resource::Topic, "new", Operation::Write),
            need(Resource::Topic, "out", Operation::Write),
            need(Resource::Group, "g", Operation::Read),
        ];
        let mut answers = HashMap::new();
        let read = Operation::Read.code();
        let describe = Operation::Describe.code();
        answers.insert(
            (Resource::Topic, "in".into()),
            Access::Allowed(vec![read, describe]),
        );
        answers.insert(
            (Resource::Topic, "new".into()),
            Access::Refused(RDKafkaErrorCode::UnknownTopicOrPartition),
        );
        answers.insert(
            (Resource::Topic, "out".into()),
            Access::Allowed(vec![describe]),
        );
        answers.insert(
            (Resource::Group, "g".into()),
            Access::Refused(RDKafkaErrorCode::GroupAuthorizationFailed),
        );
        assert_eq!(
            first_missing(&needs, &answers).map(|n| n.name.as_str()),
            Some("out")
        );
        answers.insert(
            (Resource::Topic, "out".into()),
            Access::Allowed(vec![4, describe, 99]),
        );
        assert_eq!(
            first_missing(&needs, &answers).map(|n| n.name.as_str()),
            Some("g")
        );
        answers.remove(&(Resource::Group, "g".into()));
        assert_eq!(first_missing(&needs, &answers), None);
        answers.insert((Resource::Topic, "in".into()), Access::Allowed(vec![]));
        assert_eq!(
            first_missing(&needs, &answers),
            None,
            "nothing said: nothing missing"
        );
    }
}
