//! The apps of the capture tests, run by the test binary in a pod's namespace: a TCP
//! echo server, and TCP and HTTP clients that know nothing of the mesh. Each client
//! prints one `RESULT:` line for the test to read.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

/// Runs `task` (`VERB ARGS`).
pub fn run(task: &str) {
    let (verb, rest) = task.split_once(' ').unwrap_or((task, ""));
    match verb {
        "tcp-echo" => tcp_echo(rest),
        "tcp-send" => println!("RESULT: {}", tcp_send(rest.parse().expect("address"))),
        "http-get" => {
            let (addr, path) = rest.split_once(' ').expect("ADDR PATH");
            let addr: SocketAddr = addr.parse().expect("address");
            println!("RESULT: {}", http_get(addr, &addr.to_string(), path));
        }
        "resolve-get" => {
            // The app's own resolver (glibc, /etc/resolv.conf), then HTTP by name.
            let (host, path) = rest.split_once(' ').expect("HOST:PORT PATH");
            let resolved = std::net::ToSocketAddrs::to_socket_addrs(host)
                .map(|mut a| a.find(SocketAddr::is_ipv4));
            match resolved {
                Ok(Some(addr)) => println!("RESULT: {} {}", addr.ip(), http_get(addr, host, path)),
                Ok(None) => println!("RESULT: error: no IPv4 address"),
                Err(e) => println!("RESULT: error: {e}"),
            }
        }
        other => panic!("unknown helper task {other}"),
    }
}

/// Echoes every connection's bytes back on each of `ports` (comma-separated), until
/// killed.
pub fn tcp_echo(ports: &str) {
    let listeners: Vec<TcpListener> = ports
        .split(',')
        .map(|p| TcpListener::bind(("0.0.0.0", p.parse::<u16>().expect("port"))).expect("bind"))
        .collect();
    println!("RESULT: listening");
    let mut threads = Vec::new();
    for listener in listeners {
        threads.push(std::thread::spawn(move || {
            for stream in listener.incoming().map_while(Result::ok) {
                std::thread::spawn(move || {
                    let mut stream = stream;
                    let mut buf = [0u8; 4096];
                    while let Ok(n) = stream.read(&mut buf) {
                        if n == 0 || stream.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                });
            }
        }));
    }
    for t in threads {
        let _ = t.join();
    }
}

/// Sends a line that is not HTTP and says whether it came back.
pub fn tcp_send(addr: SocketAddr) -> String {
    let message = b"\x00trellis capture ping\n";
    let attempt = || -> std::io::Result<Vec<u8>> {
        let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        stream.write_all(message)?;
        let mut got = Vec::new();
        let mut buf = [0u8; 64];
        let deadline = Instant::now() + Duration::from_secs(5);
        while got.len() < message.len() && Instant::now() < deadline {
            let n = stream.read(&mut buf)?;
            if n == 0 {
                return Err(std::io::Error::other("closed"));
            }
            got.extend_from_slice(&buf[..n]);
        }
        Ok(got)
    };
    match attempt() {
        Ok(got) if got == message => "echoed".into(),
        Ok(got) => format!("error: got {got:?}"),
        Err(e) => format!("error: {e}"),
    }
}

/// One HTTP/1.1 GET; `STATUS BODY` on one line (newlines escaped), or `error: …`.
pub fn http_get(addr: SocketAddr, host: &str, path: &str) -> String {
    let attempt = || -> std::io::Result<String> {
        let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
        )?;
        let mut response = String::new();
        stream.read_to_string(&mut response)?;
        Ok(response)
    };
    match attempt() {
        Ok(response) => {
            let status = response.split(' ').nth(1).unwrap_or("none").to_string();
            let body = response.split_once("\r\n\r\n").map_or("", |(_, b)| b);
            format!("{status} {}", body.replace('\n', "\\n"))
        }
        Err(e) => format!("error: {e}"),
    }
}
