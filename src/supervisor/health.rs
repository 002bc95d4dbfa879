//! etcd's `/health` as the run loop sees it, polled by a small task.

use std::time::Duration;

use tokio::sync::watch;

use super::control::Health;
use crate::etcd::Client;

/// Polls /health quickly until etcd first answers, then every `interval`; publishes changes.
pub async fn poll_health(client: Client, interval: Duration, tx: watch::Sender<Health>) {
    let endpoint = client.endpoints().first().cloned().unwrap_or_default();
    loop {
        let health = match client.health_of(&endpoint).await {
            Ok(true) => Health::Healthy,
            Ok(false) => Health::Unhealthy,
            // Not answering at all is only "unhealthy" once etcd has been up.
            Err(_) if *tx.borrow() == Health::Unknown => Health::Unknown,
            Err(_) => Health::Unhealthy,
        };
        tx.send_if_modified(|old| {
            let changed = *old != health;
            *old = health;
            changed
        });
        let pause = if health == Health::Healthy {
            interval
        } else {
            Duration::from_millis(50)
        };
        tokio::time::sleep(pause).await;
    }
}
