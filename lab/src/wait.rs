//! Bounded waiting and the Ctrl-C flag. Every loop in the lab waits through here, so
//! every wait has a deadline and notices an interrupt within one poll step.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Poll step of [`until`] and [`sleep`]: short enough for a prompt Ctrl-C.
const STEP: Duration = Duration::from_millis(20);

pub fn interrupt() {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// Fails once the user has asked the lab to stop.
pub fn check() -> Result<()> {
    if interrupted() {
        bail!("interrupted");
    }
    Ok(())
}

/// Sleeps `duration`, waking early (with an error) on interrupt.
pub fn sleep(duration: Duration) -> Result<()> {
    let end = Instant::now() + duration;
    loop {
        check()?;
        let now = Instant::now();
        if now >= end {
            return Ok(());
        }
        std::thread::sleep(STEP.min(end - now));
    }
}

/// Polls `probe` every `every` until it yields a value or `timeout` passes.
pub fn until<T>(
    timeout: Duration,
    every: Duration,
    what: &str,
    mut probe: impl FnMut() -> Result<Option<T>>,
) -> Result<T> {
    let start = Instant::now();
    loop {
        check()?;
        if let Some(value) = probe()? {
            return Ok(value);
        }
        if start.elapsed() >= timeout {
            bail!(
                "timed out after {:.1} s waiting for {what}",
                timeout.as_secs_f64()
            );
        }
        sleep(every)?;
    }
}

/// Like [`until`] but a timeout is an answer (`None`), not an error.
pub fn until_or_timeout<T>(
    timeout: Duration,
    every: Duration,
    mut probe: impl FnMut() -> Result<Option<T>>,
) -> Result<Option<T>> {
    let start = Instant::now();
    loop {
        check()?;
        if let Some(value) = probe()? {
            return Ok(Some(value));
        }
        if start.elapsed() >= timeout {
            return Ok(None);
        }
        sleep(every)?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn until_returns_the_first_value() {
        let mut calls = 0;
        let value = until(
            Duration::from_secs(1),
            Duration::from_millis(1),
            "x",
            || {
                calls += 1;
                Ok((calls == 3).then_some(calls))
            },
        )
        .unwrap();
        assert_eq!(value, 3);
    }

    #[test]
    fn until_times_out_with_the_reason() {
        let err = until::<()>(
            Duration::from_millis(30),
            Duration::from_millis(5),
            "the moon",
            || Ok(None),
        )
        .unwrap_err();
        assert!(err.to_string().contains("waiting for the moon"), "{err}");
    }
}
