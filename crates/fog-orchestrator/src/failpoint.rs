//! Crash injection at step boundaries, for restart-safety tests.
//!
//! Only with the `failpoints` cargo feature: the environment variable `FOGD_FAILPOINTS`
//! holds `name=action` pairs separated by `,`; `action` is `crash` (abort the process, like
//! SIGKILL: no cleanup runs) or `pause` (the step never continues). Names are
//! `{operation step name}` reached after the step before it was persisted, for example
//! `create_instance.start`. Without the feature, [`hit`] compiles to nothing.

/// Called at each step boundary with the step about to run.
#[allow(unused_variables)]
pub async fn hit(name: &str) {
    #[cfg(feature = "failpoints")]
    {
        let Ok(spec) = std::env::var("FOGD_FAILPOINTS") else {
            return;
        };
        for pair in spec.split(',') {
            match pair.split_once('=') {
                Some((n, "crash")) if n == name => {
                    eprintln!("failpoint {name}: crashing");
                    std::process::abort();
                }
                Some((n, "pause")) if n == name => {
                    eprintln!("failpoint {name}: pausing");
                    std::future::pending::<()>().await;
                }
                _ => {}
            }
        }
    }
}
