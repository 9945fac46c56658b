//! Admission with real step processes: CPU slots serialise big requests, `cpu: 0` is not
//! limited, oversized requests fail at once, waiters are served in order.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use crate::common::*;
use runners::{Admission, AdmissionConfig, Cancel, Request, RunnerError, StepCommand};

fn two_cores() -> Admission {
    Admission::new(AdmissionConfig {
        cpu: Some(2),
        memory_mb: Some(1000),
        ..AdmissionConfig::default()
    })
}

/// Runs `count` steps concurrently, each acquiring `request` and then running `sleep 0.2`;
/// returns the highest number of steps that ran at the same time.
async fn max_concurrency(admission: &Admission, count: usize, request: Request) -> u32 {
    let running = Arc::new(AtomicU32::new(0));
    let peak = Arc::new(AtomicU32::new(0));
    let mut tasks = Vec::new();
    for _ in 0..count {
        let admission = admission.clone();
        let running = running.clone();
        let peak = peak.clone();
        tasks.push(tokio::spawn(async move {
            let _permit = admission.acquire(request).await.expect("admitted");
            let now = running.fetch_add(1, Ordering::SeqCst) + 1;
            peak.fetch_max(now, Ordering::SeqCst);
            let (o, _) = run_capture(StepCommand::new("sleep").args(["0.2"]), Cancel::new()).await;
            assert!(o.success());
            running.fetch_sub(1, Ordering::SeqCst);
        }));
    }
    for t in tasks {
        t.await.expect("task");
    }
    peak.load(Ordering::SeqCst)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn four_steps_asking_for_all_cores_run_one_at_a_time() {
    let admission = two_cores();
    assert_eq!(max_concurrency(&admission, 4, Request::new(2, 0)).await, 1);
    assert_eq!(admission.in_use(), (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_cpu_steps_run_two_at_a_time() {
    let admission = two_cores();
    assert_eq!(max_concurrency(&admission, 4, Request::new(1, 0)).await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn io_bound_steps_are_not_limited() {
    let admission = two_cores();
    // Hold every CPU slot: cpu 0 steps still all run together.
    let _all = admission
        .acquire(Request::new(2, 0))
        .await
        .expect("all cores");
    assert_eq!(max_concurrency(&admission, 6, Request::new(0, 0)).await, 6);
}

#[tokio::test]
async fn oversized_requests_fail_at_once() {
    let admission = two_cores();
    // A request that can never fit fails instead of waiting (a wait would never end).
    let never_fits =
        |request| tokio::time::timeout(Duration::from_secs(30), admission.acquire(request));
    let err = never_fits(Request::new(3, 0))
        .await
        .expect("fails instead of waiting")
        .expect_err("3 > 2");
    assert!(matches!(err, RunnerError::ResourceUnavailable(_)), "{err}");
    assert_eq!(err.class(), runners::ErrorClass::ResourceUnavailable);
    let err = never_fits(Request::new(1, 1001))
        .await
        .expect("fails instead of waiting")
        .expect_err("memory");
    assert!(err.to_string().contains("1001 MiB"), "{err}");
    assert!(admission.try_acquire(Request::new(3, 0)).is_err());
    // Equal to capacity is admitted.
    let p = admission
        .acquire(Request::new(2, 1000))
        .await
        .expect("equal fits");
    assert_eq!(admission.in_use(), (2, 1000));
    drop(p);
    assert_eq!(admission.in_use(), (0, 0));
}

#[tokio::test]
async fn try_acquire_is_the_sync_fast_path() {
    let admission = two_cores();
    let a = admission
        .try_acquire(Request::default())
        .expect("ok")
        .expect("fits");
    let b = admission
        .try_acquire(Request::default())
        .expect("ok")
        .expect("fits");
    assert!(
        admission
            .try_acquire(Request::default())
            .expect("ok")
            .is_none()
    );
    drop(a);
    assert!(
        admission
            .try_acquire(Request::default())
            .expect("ok")
            .is_some()
    );
    drop(b);
}

#[tokio::test]
async fn waiters_are_served_first_come_first_served() {
    let admission = two_cores();
    let hold = admission.acquire(Request::new(1, 0)).await.expect("first");
    let order = Arc::new(std::sync::Mutex::new(Vec::new()));
    // A big request waits for both cores; a later small one must not overtake it.
    let big = {
        let (admission, order) = (admission.clone(), order.clone());
        tokio::spawn(async move {
            let p = admission.acquire(Request::new(2, 0)).await.expect("big");
            order.lock().expect("lock").push("big");
            drop(p);
        })
    };
    let queued = tokio::time::timeout(Duration::from_secs(5), async {
        while admission.waiting() < 1 {
            tokio::task::yield_now().await;
        }
    })
    .await;
    assert!(queued.is_ok());
    let small = {
        let (admission, order) = (admission.clone(), order.clone());
        tokio::spawn(async move {
            let p = admission.acquire(Request::new(1, 0)).await.expect("small");
            order.lock().expect("lock").push("small");
            drop(p);
        })
    };
    let queued = tokio::time::timeout(Duration::from_secs(5), async {
        while admission.waiting() < 2 {
            tokio::task::yield_now().await;
        }
    })
    .await;
    assert!(
        queued.is_ok(),
        "the small request should wait behind the big one"
    );
    drop(hold);
    big.await.expect("big task");
    small.await.expect("small task");
    assert_eq!(*order.lock().expect("lock"), vec!["big", "small"]);
}

#[tokio::test]
async fn a_dropped_waiter_leaves_the_queue() {
    let admission = two_cores();
    let hold = admission.acquire(Request::new(2, 0)).await.expect("all");
    let waiting = tokio::time::timeout(
        Duration::from_millis(50),
        admission.acquire(Request::new(1, 0)),
    )
    .await;
    assert!(waiting.is_err(), "must wait while the cores are taken");
    assert_eq!(admission.waiting(), 0);
    drop(hold);
    assert!(
        admission
            .try_acquire(Request::new(2, 0))
            .expect("ok")
            .is_some()
    );
}

#[tokio::test]
async fn live_memory_capacity_comes_from_sysinfo() {
    let admission = Admission::default();
    assert!(admission.cpu_capacity() >= 1);
    let cap = admission.memory_capacity_mb();
    assert!(cap > 0, "sysinfo reports no memory");
    let p = admission
        .acquire(Request::new(0, 1))
        .await
        .expect("1 MiB fits");
    assert_eq!(admission.in_use(), (0, 1));
    drop(p);
    let err = admission
        .acquire(Request::new(0, cap + 1))
        .await
        .expect_err("more than the machine");
    assert!(matches!(err, RunnerError::ResourceUnavailable(_)));
}
