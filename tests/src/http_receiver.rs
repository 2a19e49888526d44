//! An HTTP/1.1 receiver for webhook tests: records every request (method, path, headers, body)
//! and answers with a status (and optionally a body or a `Location`) the test chooses.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    pub path: String,
    /// Lower-case names.
    pub headers: HashMap<String, String>,
    pub body: Vec<u8>,
}

impl Request {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("webhook body is JSON")
    }
}

/// What later requests are answered.
#[derive(Debug, Clone)]
struct Answer {
    status: u16,
    body: String,
    location: Option<String>,
}

pub struct HttpReceiver {
    pub addr: SocketAddr,
    requests: Arc<Mutex<Vec<Request>>>,
    answer: Arc<Mutex<Answer>>,
    task: tokio::task::JoinHandle<()>,
}

impl HttpReceiver {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("HTTP receiver bind");
        let addr = listener.local_addr().expect("HTTP receiver addr");
        let requests: Arc<Mutex<Vec<Request>>> = Arc::default();
        let answer = Arc::new(Mutex::new(Answer {
            status: 200,
            body: String::new(),
            location: None,
        }));
        let task = {
            let (requests, answer) = (requests.clone(), answer.clone());
            tokio::spawn(async move {
                loop {
                    let Ok((stream, _)) = listener.accept().await else {
                        continue;
                    };
                    let (requests, answer) = (requests.clone(), answer.clone());
                    tokio::spawn(async move {
                        let (read, mut write) = stream.into_split();
                        let mut read = BufReader::new(read);
                        let mut line = String::new();
                        if read.read_line(&mut line).await.is_err() {
                            return;
                        }
                        let mut parts = line.split_whitespace();
                        let method = parts.next().unwrap_or_default().to_owned();
                        let path = parts.next().unwrap_or_default().to_owned();
                        let mut headers = HashMap::new();
                        loop {
                            line.clear();
                            match read.read_line(&mut line).await {
                                Ok(0) | Err(_) => return,
                                Ok(_) => {}
                            }
                            let l = line.trim_end();
                            if l.is_empty() {
                                break;
                            }
                            if let Some((n, v)) = l.split_once(':') {
                                headers.insert(n.trim().to_ascii_lowercase(), v.trim().to_owned());
                            }
                        }
                        let len: usize = headers
                            .get("content-length")
                            .and_then(|v| v.parse().ok())
                            .unwrap_or(0);
                        let mut body = vec![0; len.min(1 << 20)];
                        if read.read_exact(&mut body).await.is_err() {
                            return;
                        }
                        let answer = answer.lock().unwrap().clone();
                        // Recorded before answering, so a test that sees the answer sees it.
                        requests.lock().unwrap().push(Request {
                            method,
                            path,
                            headers,
                            body,
                        });
                        let location = answer
                            .location
                            .map(|l| format!("Location: {l}\r\n"))
                            .unwrap_or_default();
                        let _ = write
                            .write_all(
                                format!(
                                    "HTTP/1.1 {} X\r\n{location}Content-Length: {}\r\n\
                                     Connection: close\r\n\r\n{}",
                                    answer.status,
                                    answer.body.len(),
                                    answer.body,
                                )
                                .as_bytes(),
                            )
                            .await;
                    });
                }
            })
        };
        Self {
            addr,
            requests,
            answer,
            task,
        }
    }

    pub fn requests(&self) -> Vec<Request> {
        self.requests.lock().unwrap().clone()
    }

    /// The status later requests get (e.g. 503 for an outage), with an empty body.
    pub fn respond_with(&self, code: u16) {
        self.answer_with(code, "", None);
    }

    /// The status, body and `Location` later requests get.
    pub fn answer_with(&self, code: u16, body: &str, location: Option<&str>) {
        *self.answer.lock().unwrap() = Answer {
            status: code,
            body: body.to_owned(),
            location: location.map(str::to_owned),
        };
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

impl Drop for HttpReceiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}
