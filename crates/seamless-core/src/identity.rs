//! The service's identity: its name, and every name derived from it.
//!
//! The application says who it is once, with [`identity!`](crate::identity!) (its Cargo
//! package name, version and description); the configuration file, drop-in directory,
//! environment prefix, runtime directory, metric prefix, syslog identifier and command name
//! all follow from that. Renaming a service is renaming its package.

/// Who the service is. Build it with [`identity!`](crate::identity!) in the application
/// crate, so the values are that crate's, not this library's.
///
/// ```
/// let me = seamless_core::identity!();
/// assert_eq!(me.name, "seamless-core"); // in an application: its own package name
/// assert_eq!(me.env_prefix(), "SEAMLESS_CORE_");
/// assert_eq!(me.config_file(), "seamless-core.toml");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Identity {
    /// The package name, e.g. `orders-api`: binary, units, package, `/etc/NAME`, `/run/NAME`.
    pub name: &'static str,
    /// The package version, reported by `--version`, `/version` and the logs.
    pub version: &'static str,
    /// One line for `--help`.
    pub description: &'static str,
}

/// The [`Identity`] of the crate this is written in, from its Cargo manifest.
///
/// ```
/// const ME: seamless_core::Identity = seamless_core::identity!();
/// assert!(!ME.version.is_empty());
/// ```
#[macro_export]
macro_rules! identity {
    () => {
        $crate::Identity {
            name: env!("CARGO_PKG_NAME"),
            version: env!("CARGO_PKG_VERSION"),
            description: env!("CARGO_PKG_DESCRIPTION"),
        }
    };
}

impl Identity {
    /// Main configuration file name: `NAME.toml`.
    pub fn config_file(&self) -> String {
        format!("{}.toml", self.name)
    }

    /// Where the main file is looked for without `--config` or `$CONFIGURATION_DIRECTORY`:
    /// `/etc/NAME`.
    pub fn config_dir(&self) -> String {
        format!("/etc/{}", self.name)
    }

    /// Drop-in directory beside the main file: `NAME.d`.
    pub fn drop_in_dir(&self) -> String {
        format!("{}.d", self.name)
    }

    /// Prefix of environment variables that override keys: `orders-api` → `ORDERS_API_`.
    pub fn env_prefix(&self) -> String {
        format!("{}_", self.snake_name().to_uppercase())
    }

    /// The packaged unit's `RuntimeDirectory=`: `/run/NAME`, where an operator's shell
    /// (without `$RUNTIME_DIRECTORY`) finds the verdict files.
    pub fn runtime_dir(&self) -> String {
        format!("/run/{}", self.name)
    }

    /// Prefix of every metric name: `orders-api` → `orders_api`.
    pub fn metric_prefix(&self) -> String {
        self.snake_name()
    }

    /// The name with `-` and `.` as `_`: what identifiers (metrics, variables) allow.
    fn snake_name(&self) -> String {
        self.name.replace(['-', '.'], "_")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_package_name() {
        let id = Identity {
            name: "orders-api",
            version: "1.2.3",
            description: "",
        };
        assert_eq!(id.config_file(), "orders-api.toml");
        assert_eq!(id.config_dir(), "/etc/orders-api");
        assert_eq!(id.drop_in_dir(), "orders-api.d");
        assert_eq!(id.env_prefix(), "ORDERS_API_");
        assert_eq!(id.runtime_dir(), "/run/orders-api");
        assert_eq!(id.metric_prefix(), "orders_api");
    }
}
