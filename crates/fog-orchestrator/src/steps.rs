//! The persisted step names of every operation, for callers outside the engine (the API's
//! progress figures, crash-injection tests, the fault campaign): derived from the
//! operation types in [`crate::ops`], never written down twice.

use fog_model::Action;

/// Step names of `action`, in order. Names double as failpoint names.
pub fn step_names(action: &Action) -> &'static [&'static str] {
    crate::ops::registry(action).steps(action)
}

/// The step an operation starts at.
pub fn first_step(action: &Action) -> &'static str {
    step_names(action).first().copied().unwrap_or("")
}

/// The step after `step`, or `None` if `step` is the last.
pub fn next_step(action: &Action, step: &str) -> Option<&'static str> {
    crate::engine::next_step(step_names(action), step)
}

/// Progress in percent when `step` is about to run.
pub fn percent(action: &Action, step: &str) -> u8 {
    crate::engine::percent(step_names(action), step)
}

/// The first step from which `action` only rolls forward, if it has one.
pub fn point_of_no_return(action: &Action) -> Option<&'static str> {
    crate::ops::registry(action).point_of_no_return(action)
}

#[cfg(test)]
mod tests {
    use super::*;
    use fog_model::ManagedInstanceId;

    #[test]
    fn steps_advance_in_order_and_report_progress() {
        let id = ManagedInstanceId::parse(
            "/subscriptions/00000000-1111-2222-3333-444444444444/resourceGroups/rg/providers/Microsoft.Sql/managedInstances/mi",
        )
        .expect("id");
        let a = Action::CreateInstance {
            instance: id,
            admin_password_verifier: String::new(),
        };
        assert_eq!(first_step(&a), "create_instance.initialize");
        assert_eq!(
            next_step(&a, "create_instance.initialize"),
            Some("create_instance.start")
        );
        assert_eq!(next_step(&a, "create_instance.finish"), None);
        assert_eq!(percent(&a, "create_instance.initialize"), 0);
        assert_eq!(percent(&a, "create_instance.login"), 50);
        assert_eq!(point_of_no_return(&a), None);
    }

    #[test]
    fn failovers_list_their_steps_and_their_point_of_no_return() {
        let planned = Action::FailoverGroup {
            name: "g".into(),
            uid: "u".into(),
            planned: true,
            automatic: None,
        };
        let forced = Action::FailoverGroup {
            name: "g".into(),
            uid: "u".into(),
            planned: false,
            automatic: None,
        };
        assert!(step_names(&planned).contains(&"failover.catch_up"));
        assert!(!step_names(&forced).contains(&"failover.catch_up"));
        assert_eq!(step_names(&planned).len(), step_names(&forced).len() + 1);
        assert_eq!(point_of_no_return(&forced), Some("failover.promote"));
    }
}
