//! The baseline: the least a TLS WebSocket server on this stack can do. The
//! same rustls configuration and tungstenite buffer sizes as the gateway,
//! no authentication, no JSON: every text message is echoed back, everything
//! already received is answered before one flush. Its cost is the floor; the
//! gateway's distance from it is the gateway's own cost.

use std::net::SocketAddr;
use std::path::Path;

use futures_util::{FutureExt, SinkExt, StreamExt};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;

pub async fn serve(listen: SocketAddr, cert: &Path, key: &Path) -> anyhow::Result<()> {
    adjunct_gateway::tls::install_provider();
    let key = adjunct_gateway::tls::load_certified_key(cert, key).map_err(anyhow::Error::msg)?;
    let store = adjunct_gateway::tls::CertStore::new(key);
    let tls = adjunct_gateway::tls::server_config(store, None).map_err(anyhow::Error::msg)?;
    let acceptor = TlsAcceptor::from(tls);
    let listener = TcpListener::bind(listen).await?;
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            continue;
        };
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            let _ = tcp.set_nodelay(true);
            let Ok(tls) = acceptor.accept(tcp).await else {
                return;
            };
            let config = WebSocketConfig::default()
                .read_buffer_size(4096)
                .write_buffer_size(16 * 1024)
                .max_write_buffer_size(4 * 1024 * 1024)
                .max_message_size(Some(65536))
                .max_frame_size(Some(65536));
            let Ok(mut ws) = tokio_tungstenite::accept_async_with_config(tls, Some(config)).await
            else {
                return;
            };
            while let Some(Ok(first)) = ws.next().await {
                let mut next = Some(first);
                while let Some(msg) = next.take() {
                    if let Message::Text(t) = msg {
                        if ws.feed(Message::Text(t)).await.is_err() {
                            return;
                        }
                    }
                    if let Some(Some(Ok(m))) = ws.next().now_or_never() {
                        next = Some(m);
                    }
                }
                if ws.flush().await.is_err() {
                    return;
                }
            }
        });
    }
}
