//! Talking to `tasker` processes: holding them (killed when a test ends, however it
//! ends), finding the address they print, and sending plain HTTP/1.1 requests.

// Each test binary uses the part it needs.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A process, killed when dropped if it is still running.
pub struct Proc(pub Child);

impl Proc {
    /// SIGTERM, then the exit code once it stopped.
    pub fn terminate(&mut self) -> Option<i32> {
        let pid = self.0.id().to_string();
        let killed = Command::new("kill").args(["-TERM", &pid]).status();
        assert!(killed.expect("kill -TERM").success());
        self.0.wait().expect("exits").code()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Everything the process writes to stderr, collected as it comes.
#[derive(Clone, Default)]
pub struct Log(Arc<Mutex<String>>);

impl Log {
    pub fn text(&self) -> String {
        self.0.lock().unwrap().clone()
    }
}

/// Reads `child`'s stderr in the background until a line contains `marker`; returns
/// the `http://…` address on that line and the log of everything so far and after.
pub fn address(child: &mut Child, marker: &str) -> (String, Log) {
    let stderr = child.stderr.take().expect("stderr is piped");
    let log = Log::default();
    let (found, wait) = std::sync::mpsc::channel();
    let collected = log.clone();
    let marker = marker.to_owned();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            collected.0.lock().unwrap().push_str(&format!("{line}\n"));
            if line.contains(&marker)
                && let Some(at) = line.find("http://")
            {
                let addr: String = line[at + 7..]
                    .chars()
                    .take_while(|c| !c.is_whitespace() && *c != '/')
                    .collect();
                let _ = found.send(addr);
            }
        }
    });
    let addr = wait
        .recv_timeout(Duration::from_secs(60))
        .unwrap_or_else(|_| panic!("no `{}` line; stderr:\n{}", "listening", log.text()));
    (addr, log)
}

/// One request; (status, body).
pub fn http(
    addr: &str,
    method: &str,
    path: &str,
    body: &str,
    token: Option<&str>,
) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).expect("connects");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    // Templates go as YAML, every other body as JSON.
    let media = if path == "/v1/templates" {
        "application/yaml"
    } else {
        "application/json"
    };
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Type: {media}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response[9..12].parse().expect("a status line");
    let body = response
        .split_once("\r\n\r\n")
        .map_or(String::new(), |(_, b)| b.to_owned());
    (status, body)
}
