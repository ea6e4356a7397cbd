//! A TCP proxy a test can cut: it forwards to a target (PostgreSQL, usually) until `cut`, which
//! closes every open connection and refuses new ones until `restore`. Outages are simulated with
//! it instead of stopping the shared PostgreSQL server.

use std::net::SocketAddr;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// A cuttable TCP proxy.
pub struct Proxy {
    pub addr: SocketAddr,
    up: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    /// Listens on a free loopback port and forwards to `target`.
    pub async fn start(target: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (up, _) = watch::channel(true);
        let up_rx = up.subscribe();
        let task = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    continue;
                };
                let mut up = up_rx.clone();
                if !*up.borrow() {
                    drop(client);
                    continue;
                }
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(target).await else {
                        return;
                    };
                    let (mut client, mut server) = (client, server);
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = up.wait_for(|u| !*u) => {}
                    }
                });
            }
        });
        Proxy { addr, up, task }
    }

    /// A proxy in front of the PostgreSQL server of the tests.
    pub async fn postgres() -> Proxy {
        let url = url::Url::parse(&super::admin_url()).unwrap();
        let host = url.host_str().unwrap_or("127.0.0.1");
        let target = tokio::net::lookup_host((host, url.port().unwrap_or(5432)))
            .await
            .unwrap()
            .next()
            .unwrap();
        Self::start(target).await
    }

    /// `url` with its host and port replaced by this proxy's.
    pub fn route(&self, url: &str) -> String {
        let mut u = url::Url::parse(url).unwrap();
        u.set_host(Some(&self.addr.ip().to_string())).unwrap();
        u.set_port(Some(self.addr.port())).unwrap();
        u.to_string()
    }

    /// Closes every connection and refuses new ones.
    pub fn cut(&self) {
        self.up.send_replace(false);
    }

    /// Forwards again.
    pub fn restore(&self) {
        self.up.send_replace(true);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}
