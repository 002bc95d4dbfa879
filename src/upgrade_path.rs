//! Upgrade-path rules (placeholder; being written).
