//! The one vocabulary of run and step statuses: the engine's report, the store's rows, the
//! API's bodies and the notifications all use these types. The serde names are the text
//! of the report and of the store's columns.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Defines a string-backed enum with serde names, `ALL`, `as_str`, `Display` and `FromStr`.
macro_rules! string_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        pub enum $name {
            $($(#[$vmeta])* #[serde(rename = $text)] $variant),+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The text of the report, the store's column and the API.
            pub(crate) fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = String;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($text => Ok($name::$variant),)+
                    other => Err(other.to_string()),
                }
            }
        }
    };
}

string_enum! {
    /// Where a run is in its life. `agent exec` ends in `succeeded`, `failed` or
    /// `cancelled`; the daemon also shows `queued`, `running` and `interrupted`.
    RunStatus {
        /// Waiting in the daemon's queue (possibly claimed by the scheduler).
        Queued => "queued",
        /// In progress.
        Running => "running",
        /// Every step that had to run succeeded (or failed with `continue`).
        Succeeded => "succeeded",
        /// A step failed and the failure was not absorbed.
        Failed => "failed",
        /// Cancelled by a user, a signal or `overlap: cancel_previous`.
        Cancelled => "cancelled",
        /// Was running when the daemon died; waits to be resumed or retried.
        Interrupted => "interrupted",
    }
}

impl RunStatus {
    /// True for `succeeded`, `failed` and `cancelled`: nothing will happen to the run again.
    pub(crate) fn is_final(self) -> bool {
        matches!(
            self,
            RunStatus::Succeeded | RunStatus::Failed | RunStatus::Cancelled
        )
    }

    /// The status the daemon records for a run the engine finished: `succeeded` and
    /// `cancelled` as they are, anything else (the engine ends in no other) `failed`.
    pub(crate) fn finished(self) -> RunStatus {
        match self {
            RunStatus::Succeeded => RunStatus::Succeeded,
            RunStatus::Cancelled => RunStatus::Cancelled,
            RunStatus::Queued | RunStatus::Running | RunStatus::Failed | RunStatus::Interrupted => {
                RunStatus::Failed
            }
        }
    }
}

string_enum! {
    /// Where a step, one attempt of it, or a stage is.
    StepStatus {
        /// Not started yet (only in a live report).
        Pending => "pending",
        /// Started and not finished.
        Running => "running",
        /// Finished with success (or served from the cache).
        Succeeded => "succeeded",
        /// Finished with failure (its last attempt did).
        Failed => "failed",
        /// Not run: `when` was false, or an earlier failure stopped the run.
        Skipped => "skipped",
        /// Stopped or never started because the run was cancelled.
        Cancelled => "cancelled",
        /// Was running when the daemon died (store and API only).
        Interrupted => "interrupted",
    }
}

impl StepStatus {
    /// True once the step will not change again: `succeeded`, `failed`, `skipped`,
    /// `cancelled` (not `pending`, `running` nor `interrupted`, which a resume may re-run).
    pub fn is_final(self) -> bool {
        matches!(
            self,
            StepStatus::Succeeded
                | StepStatus::Failed
                | StepStatus::Skipped
                | StepStatus::Cancelled
        )
    }
}

string_enum! {
    /// What started a run.
    TriggerKind {
        /// A new commit on a watched branch.
        Push => "push",
        /// A cron slot.
        Schedule => "schedule",
        /// `agent trigger` or the API.
        Manual => "manual",
        /// An inbound webhook.
        Webhook => "webhook",
        /// `agent retry` of an earlier run.
        Retry => "retry",
        /// A pull request opened or updated on a forge (an inbound `pull_request` hook).
        PullRequest => "pull_request",
    }
}

string_enum! {
    /// Where a webhook delivery is.
    DeliveryStatus {
        /// Waiting for its next attempt.
        Pending => "pending",
        /// Accepted by the receiver.
        Delivered => "delivered",
        /// Given up (retry budget spent or a permanent error).
        Failed => "failed",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The serde names, `as_str` and `FromStr` agree for every value, so the report, the
    /// store's text columns and the API cannot drift apart.
    #[test]
    fn one_text_per_status_everywhere() {
        for s in RunStatus::ALL {
            let json = serde_json::to_value(s).expect("serialize");
            assert_eq!(json, s.as_str());
            assert_eq!(s.as_str().parse::<RunStatus>(), Ok(*s));
            assert_eq!(serde_json::from_value::<RunStatus>(json).ok(), Some(*s));
        }
        for s in StepStatus::ALL {
            let json = serde_json::to_value(s).expect("serialize");
            assert_eq!(json, s.as_str());
            assert_eq!(s.as_str().parse::<StepStatus>(), Ok(*s));
        }
        assert_eq!("done".parse::<RunStatus>(), Err("done".to_string()));
        assert_eq!(RunStatus::Running.finished(), RunStatus::Failed);
        assert_eq!(RunStatus::Cancelled.finished(), RunStatus::Cancelled);
    }
}
