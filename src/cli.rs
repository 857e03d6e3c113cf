//! Command line: `xapsd run`, `xapsd check-config`, `xapsd pass`.
//!
//! Every config key is also a flag of `run` and `check-config`, and a flag
//! wins over the file. Exit codes: 0 success, 1 runtime failure, 2 bad
//! usage, 78 (EX_CONFIG) unusable configuration.

use std::path::{Path, PathBuf};

use argh::FromArgs;
use miniserde::json::{Number, Value};

use crate::config::{Config, ConfigError};

/// Exit code for a configuration the daemon refuses (sysexits EX_CONFIG).
pub const EXIT_CONFIG: i32 = 78;

#[derive(FromArgs, Debug)]
/// xapsd: real push for iOS Mail on self-hosted Dovecot.
#[argh(
    note = "Configuration keys (JSON file given with --config, or flags of `xapsd run`):
  listen         plugin API addresses, addr:port (default 127.0.0.1:11619 and [::1]:11619)
  db             redb store file (default /var/lib/xapsd/xapsd.redb if writable, else the user's state dir)
  cert_file      PEM push certificate; its subject UID is the topic (default none: dry run)
  key_file       PEM private key of the push certificate (default: read from cert_file)
  p12_file       PKCS#12 bundle (.p12) with the push certificate and its key, instead of cert_file (default none)
  p12_password_file  file whose first line is the p12_file password (default: empty password)
  p8_file        provider token key (.p8) from Apple, with key_id, team_id and topic (default none)
  key_id         key ID of p8_file, ten letters and digits (default none)
  team_id        team ID of the Apple developer account for p8_file (default none)
  topic          APNs topic to push to with p8_file (default none)
  apns_endpoint  production, sandbox or host:port (default production)
  apns_ca_file   extra PEM trust anchor for the APNs server (default none)
  delay_secs     seconds non-urgent events are held and folded (default 30)
  expire_days    days a device stays registered without re-registering (default 30)
  log_level      error, warn, info, debug or trace (default info)"
)]
pub struct Cli {
    /// print the version and exit
    #[argh(switch)]
    version: bool,
    #[argh(subcommand)]
    command: Option<Command>,
}

#[derive(FromArgs, Debug)]
#[argh(subcommand)]
enum Command {
    Run(RunArgs),
    CheckConfig(CheckConfigArgs),
    Pass(PassArgs),
}

#[derive(FromArgs, Debug)]
/// Read an Apple ID password (no echo on a terminal, else one line of
/// stdin) and print its SHA-256 for `apple_id_hashed_password`.
#[argh(subcommand, name = "pass")]
pub struct PassArgs {}

/// Declares a subcommand that takes the config file and every config key
/// as a flag, so `run` and `check-config` can never disagree.
macro_rules! config_command {
    ($name:ident, $cmd:literal, $about:literal) => {
        #[derive(FromArgs, Debug)]
        #[doc = $about]
        #[argh(subcommand, name = $cmd)]
        pub struct $name {
            /// JSON config file (default: none, embedded defaults)
            #[argh(option)]
            config: Option<PathBuf>,
            /// plugin API address, addr:port; repeat for several (default 127.0.0.1:11619 and [::1]:11619)
            #[argh(option)]
            listen: Vec<String>,
            /// redb store file (default /var/lib/xapsd/xapsd.redb if writable, else the user's state dir)
            #[argh(option)]
            db: Option<String>,
            /// PEM push certificate; its subject UID is the topic (default none: dry run)
            #[argh(option)]
            cert_file: Option<String>,
            /// PEM private key of the push certificate (default: read from cert-file)
            #[argh(option)]
            key_file: Option<String>,
            /// PKCS#12 bundle (.p12) with the push certificate and its key (default none)
            #[argh(option)]
            p12_file: Option<String>,
            /// file whose first line is the p12-file password (default: empty password)
            #[argh(option)]
            p12_password_file: Option<String>,
            /// provider token key (.p8) from Apple, with key-id, team-id and topic (default none)
            #[argh(option)]
            p8_file: Option<String>,
            /// key ID of p8-file, ten letters and digits (default none)
            #[argh(option)]
            key_id: Option<String>,
            /// team ID of the Apple developer account for p8-file (default none)
            #[argh(option)]
            team_id: Option<String>,
            /// APNs topic to push to with p8-file (default none)
            #[argh(option)]
            topic: Option<String>,
            /// production, sandbox or host:port (default production)
            #[argh(option)]
            apns_endpoint: Option<String>,
            /// extra PEM trust anchor for the APNs server (default none)
            #[argh(option)]
            apns_ca_file: Option<String>,
            /// seconds non-urgent events are held and folded (default 30)
            #[argh(option)]
            delay_secs: Option<u64>,
            /// days a device stays registered without re-registering (default 30)
            #[argh(option)]
            expire_days: Option<u64>,
            /// error, warn, info, debug or trace (default info)
            #[argh(option)]
            log_level: Option<String>,
        }

        impl $name {
            /// The config file (if any) with the flags applied over it.
            pub fn load(&self) -> Result<Config, ConfigError> {
                let mut config = match &self.config {
                    Some(path) => Config::from_file(path)?,
                    None => Config::default(),
                };
                let s = |v: &Option<String>| v.clone().map(Value::String);
                let n = |v: &Option<u64>| v.map(|n| Value::Number(Number::U64(n)));
                let listen = (!self.listen.is_empty()).then(|| {
                    Value::Array(self.listen.iter().cloned().map(Value::String).collect())
                });
                let flags = [
                    ("listen", listen),
                    ("db", s(&self.db)),
                    ("cert_file", s(&self.cert_file)),
                    ("key_file", s(&self.key_file)),
                    ("p12_file", s(&self.p12_file)),
                    ("p12_password_file", s(&self.p12_password_file)),
                    ("p8_file", s(&self.p8_file)),
                    ("key_id", s(&self.key_id)),
                    ("team_id", s(&self.team_id)),
                    ("topic", s(&self.topic)),
                    ("apns_endpoint", s(&self.apns_endpoint)),
                    ("apns_ca_file", s(&self.apns_ca_file)),
                    ("delay_secs", n(&self.delay_secs)),
                    ("expire_days", n(&self.expire_days)),
                    ("log_level", s(&self.log_level)),
                ];
                for (key, value) in flags {
                    if let Some(value) = value {
                        config.set(key, &value)?;
                    }
                }
                config.validate()?;
                Ok(config)
            }
        }
    };
}

config_command!(
    RunArgs,
    "run",
    "Run the daemon in the foreground (init systems supervise it)."
);
config_command!(
    CheckConfigArgs,
    "check-config",
    "Check the configuration and push identity, print what is in force."
);

/// Parses the command line and runs; returns the process exit code.
pub fn main() -> i32 {
    let cli: Cli = argh::from_env();
    if cli.version {
        println!("xapsd {}", env!("CARGO_PKG_VERSION"));
        return 0;
    }
    match cli.command {
        Some(Command::Run(args)) => match args.load() {
            Ok(config) => {
                crate::daemon::init_logging(config.log_level);
                match crate::daemon::run(config) {
                    Ok(()) => 0,
                    Err(e) => {
                        log::error!("{e}");
                        1
                    }
                }
            }
            Err(e) => config_failure(args.config.as_deref(), &e),
        },
        Some(Command::CheckConfig(args)) => match args.load() {
            Ok(config) => crate::daemon::check_config(config),
            Err(e) => config_failure(args.config.as_deref(), &e),
        },
        Some(Command::Pass(_)) => crate::pass::main(),
        None => {
            eprintln!("xapsd: no command given; try `xapsd run` or `xapsd --help`");
            2
        }
    }
}

fn config_failure(_file: Option<&Path>, e: &ConfigError) -> i32 {
    eprintln!("xapsd: {e}");
    EXIT_CONFIG
}

#[cfg(test)]
mod tests {
    use super::*;

    fn help(args: &[&str]) -> String {
        match Cli::from_args(&["xapsd"], args) {
            Err(early) => early.output,
            Ok(_) => panic!("--help must exit early"),
        }
    }

    #[test]
    fn help_lists_every_key_with_its_default() {
        let top = help(&["--help"]);
        let run = help(&["run", "--help"]);
        for (key, text) in crate::config::KEYS {
            assert!(
                top.contains(key) && top.contains(text),
                "top-level help lacks `{key}`"
            );
            let flag = format!("--{}", key.replace('_', "-"));
            assert!(run.contains(&flag), "run --help lacks {flag}");
        }
        assert!(run.matches("(default").count() >= crate::config::KEYS.len());
    }

    #[test]
    fn flags_win_over_the_file() {
        let dir = std::env::temp_dir().join(format!("xapsd-cli-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("c.json");
        std::fs::write(&file, r#"{"delay_secs": 5, "expire_days": 9}"#).unwrap();
        let Ok(cli) = Cli::from_args(
            &["xapsd"],
            &[
                "run",
                "--config",
                file.to_str().unwrap(),
                "--delay-secs",
                "7",
                "--listen",
                "127.0.0.1:1",
            ],
        ) else {
            panic!("arguments must parse")
        };
        let Some(Command::Run(args)) = cli.command else {
            panic!("run expected")
        };
        let config = args.load().unwrap();
        assert_eq!((config.delay_secs, config.expire_days), (7, 9));
        assert_eq!(config.listen, vec!["127.0.0.1:1".parse().unwrap()]);
    }
}
