//! `etcd-supervisor acknowledge-inconsistency`: deletes the record a failed consistency
//! check left (`consistency/alarm`), so the supervisors take upgrade turns again. The
//! operator runs it after checking the members (and restoring the one that diverged).

use super::Outcome;
use crate::etcd::Client;
use crate::upgrade::turn::consistency;

/// Deletes the record; says what it was, or that there was none (still a success).
pub async fn command(args: &crate::cli::AcknowledgeArgs) -> Outcome {
    let env = std::env::vars().collect();
    let cfg = crate::config::client_config(
        &args.conn,
        &[crate::config::DEFAULT_ENDPOINT.to_owned()],
        &env,
    );
    let client = match Client::new(cfg) {
        Ok(c) => c,
        Err(e) => return Outcome::error(&e, true),
    };
    match consistency::acknowledge(&client, &args.prefix.key_prefix).await {
        Ok(Some(what)) => {
            println!("acknowledged: {what}\nupgrade turns resume");
            Outcome::Success
        }
        Ok(None) => {
            println!("no inconsistency is recorded");
            Outcome::Success
        }
        Err(e) => Outcome::error(&e, false),
    }
}
