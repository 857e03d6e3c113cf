//! The usual cast of an integration test: a test CA, a mock APNs that
//! trusts it, and a push certificate for `TEST_TOPIC`, plus the daemon
//! config that points at them.

use super::certs::{PemFiles, TestCa, TEST_TOPIC};
use super::daemon::{Daemon, DaemonConfig};
use super::mock_apns::MockApns;

/// A CA, a mock APNs trusting it, and a push certificate for `TEST_TOPIC`.
pub struct Apple {
    /// Keeps the certificate files alive; signs more certificates.
    pub ca: TestCa,
    pub mock: MockApns,
    pub push: PemFiles,
}

impl Apple {
    pub fn new() -> Apple {
        let ca = TestCa::new();
        let mock = MockApns::start(&ca);
        let push = ca.write(&ca.push_cert(TEST_TOPIC), "push");
        Apple { ca, mock, push }
    }

    pub fn daemon(&self, delay_secs: u64) -> Daemon {
        Daemon::start(self.config(delay_secs))
    }

    pub fn config(&self, delay_secs: u64) -> DaemonConfig {
        DaemonConfig::new()
            .apns(&self.mock, &self.push)
            .num("delay_secs", delay_secs)
    }
}
