//! Confluent Schema Registry client: the REST calls the wire format needs
//! (look a schema up by id, register a schema under a subject), with caches,
//! over a minimal HTTP/1.1 client on std (plain `http://`, optional basic
//! auth from the URL's user info). Confluent framing is `0x00`, a 4-byte
//! big-endian schema id, then the Avro datum.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use base64::Engine as _;

use super::KnownSchema;

/// First byte of a Confluent-framed record.
pub const CONFLUENT_MAGIC: u8 = 0;
/// Magic byte + schema id.
pub const CONFLUENT_HEADER_LEN: usize = 5;

#[derive(Debug, thiserror::Error, Clone, PartialEq)]
pub enum RegistryError {
    #[error("schema registry URL {0:?}: expected http://host:port[/path] (https: put a TLS proxy in front)")]
    Url(String),
    #[error("schema registry {url}: {detail}")]
    Http { url: String, detail: String },
    #[error("schema registry {url} answered {status}: {body}")]
    Status {
        url: String,
        status: u16,
        body: String,
    },
    #[error("schema {id} from the registry does not parse: {detail}")]
    Schema { id: u32, detail: String },
}

/// A registry connection with its caches (Debug shows no credentials).
pub struct SchemaRegistry {
    url: String,
    host: String,
    port: u16,
    prefix: String,
    auth: Option<String>,
    by_id: RwLock<HashMap<u32, Arc<KnownSchema>>>,
}

impl std::fmt::Debug for SchemaRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SchemaRegistry")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

impl SchemaRegistry {
    pub fn new(url: &str) -> Result<Self, RegistryError> {
        let bad = || RegistryError::Url(url.to_string());
        let rest = url.strip_prefix("http://").ok_or_else(bad)?;
        let (authority, prefix) = match rest.find('/') {
            Some(i) => (&rest[..i], rest[i..].trim_end_matches('/').to_string()),
            None => (rest, String::new()),
        };
        let (auth, hostport) = match authority.rsplit_once('@') {
            Some((user, hp)) => (
                Some(base64::engine::general_purpose::STANDARD.encode(user)),
                hp,
            ),
            None => (None, authority),
        };
        let (host, port) = match hostport.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), p.parse().map_err(|_| bad())?),
            None => (hostport.to_string(), 80),
        };
        if host.is_empty() {
            return Err(bad());
        }
        // Never keep the password in the printable URL.
        let shown = format!("http://{host}:{port}{prefix}");
        Ok(Self {
            url: shown,
            host,
            port,
            prefix,
            auth,
            by_id: RwLock::new(HashMap::new()),
        })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// `GET /schemas/ids/{id}`, cached.
    pub fn schema(&self, id: u32) -> Result<Arc<KnownSchema>, RegistryError> {
        if let Some(s) = self
            .by_id
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&id)
        {
            return Ok(s.clone());
        }
        let body = self.call("GET", &format!("/schemas/ids/{id}"), None)?;
        let v: serde_json::Value =
            serde_json::from_str(&body).map_err(|e| RegistryError::Schema {
                id,
                detail: e.to_string(),
            })?;
        let text = v["schema"].as_str().ok_or_else(|| RegistryError::Schema {
            id,
            detail: format!("no \"schema\" in {body}"),
        })?;
        let s = Arc::new(
            KnownSchema::parse(text, &format!("registry id {id}")).map_err(|e| {
                RegistryError::Schema {
                    id,
                    detail: e.to_string(),
                }
            })?,
        );
        self.by_id
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, s.clone());
        Ok(s)
    }

    /// `POST /subjects/{subject}/versions`: registers (or finds) a schema; returns its id.
    pub fn register(
        &self,
        subject: &str,
        schema: &KnownSchema,
        text: &str,
    ) -> Result<u32, RegistryError> {
        let body = serde_json::json!({ "schema": text }).to_string();
        let resp = self.call(
            "POST",
            &format!("/subjects/{subject}/versions"),
            Some(&body),
        )?;
        let v: serde_json::Value =
            serde_json::from_str(&resp).map_err(|e| RegistryError::Http {
                url: self.url.clone(),
                detail: format!("bad JSON from register: {e}"),
            })?;
        let id = v["id"]
            .as_u64()
            .and_then(|i| u32::try_from(i).ok())
            .ok_or_else(|| RegistryError::Http {
                url: self.url.clone(),
                detail: format!("no id in {resp}"),
            })?;
        self.by_id
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, Arc::new(schema.clone()));
        Ok(id)
    }

    fn call(&self, method: &str, path: &str, body: Option<&str>) -> Result<String, RegistryError> {
        let err = |detail: String| RegistryError::Http {
            url: self.url.clone(),
            detail,
        };
        let addr = (self.host.as_str(), self.port)
            .to_socket_addrs()
            .map_err(|e| err(e.to_string()))?
            .next()
            .ok_or_else(|| err("no address".into()))?;
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
            .map_err(|e| err(e.to_string()))?;
        let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
        let body = body.unwrap_or("");
        let mut req = format!(
            "{method} {}{path} HTTP/1.1\r\nHost: {}:{}\r\nAccept: application/vnd.schemaregistry.v1+json, application/json\r\nContent-Type: application/vnd.schemaregistry.v1+json\r\nContent-Length: {}\r\nConnection: close\r\n",
            self.prefix,
            self.host,
            self.port,
            body.len()
        );
        if let Some(a) = &self.auth {
            req.push_str(&format!("Authorization: Basic {a}\r\n"));
        }
        req.push_str("\r\n");
        req.push_str(body);
        s.write_all(req.as_bytes())
            .map_err(|e| err(e.to_string()))?;
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).map_err(|e| err(e.to_string()))?;
        let (status, resp) = parse_response(&raw).map_err(err)?;
        if !(200..300).contains(&status) {
            return Err(RegistryError::Status {
                url: self.url.clone(),
                status,
                body: resp,
            });
        }
        Ok(resp)
    }
}

/// Status and body of an HTTP/1.1 response (Content-Length, chunked, or to close).
pub fn parse_response(raw: &[u8]) -> Result<(u16, String), String> {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| "truncated HTTP response".to_string())?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad status line {:?}", head.lines().next()))?;
    let chunked = head.lines().any(|l| {
        l.to_ascii_lowercase().starts_with("transfer-encoding:")
            && l.to_ascii_lowercase().contains("chunked")
    });
    if !chunked {
        return Ok((status, body.to_string()));
    }
    let mut out = String::new();
    let mut rest = body;
    while let Some((size, after)) = rest.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).map_err(|_| "bad chunk size".to_string())?;
        if n == 0 {
            break;
        }
        let chunk = after
            .get(..n)
            .ok_or_else(|| "truncated chunk".to_string())?;
        out.push_str(chunk);
        rest = after.get(n + 2..).unwrap_or("");
    }
    Ok((status, out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_responses_parse() {
        let r = SchemaRegistry::new("http://user:secret@sr.local:8081/api/").unwrap();
        assert_eq!(r.url(), "http://sr.local:8081/api");
        let shown = format!("{r:?}");
        assert!(
            !shown.contains("secret") && !shown.contains("dXNlcjpzZWNyZXQ"),
            "{shown}"
        );
        assert!(r.auth.is_some());
        assert!(SchemaRegistry::new("https://sr:8081").is_err());
        assert!(SchemaRegistry::new("sr:8081").is_err());
        let (s, b) = parse_response(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\n{\"id\r\n4\r\n\":7}\r\n0\r\n\r\n").unwrap();
        assert_eq!((s, b.as_str()), (200, "{\"id\":7}"));
        let (s, _) =
            parse_response(b"HTTP/1.1 404 Not Found\r\nContent-Length: 2\r\n\r\n{}").unwrap();
        assert_eq!(s, 404);
        assert!(parse_response(b"HTTP/1.1 200").is_err());
    }
}
