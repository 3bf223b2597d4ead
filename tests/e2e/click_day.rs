//! Click day: people reload impatiently. Work whose caller has gone must not keep the patient
//! ones waiting, nor turn them away once the impatient have left.

use crate::helpers::*;
use sportello_proto::identity::v1 as id;
use sportello_proto::identity::v1::identity_service_client::IdentityServiceClient;
use std::time::{Duration, Instant};
use tonic::transport::Channel;
use tonic::Code;

/// A PIN login for a fiscal code nobody holds: one full argon2 verification (the decoy), then
/// UNAUTHENTICATED. An answer of any kind but RESOURCE_EXHAUSTED means the caller was served.
async fn pin_login(channel: Channel, n: u64, deadline: Duration) -> Result<(), tonic::Status> {
    let (cf, _) = citizen_request(
        "Bianchi",
        "Lucia",
        (1960 + (n % 40) as i32, 1 + (n % 12) as u32, 1 + (n % 28) as u32),
        id::Sex::Female,
    );
    let mut request =
        tonic::Request::new(id::LoginWithPinRequest { fiscal_code: cf, pin: "ABCDEFGH".into() });
    request.set_timeout(deadline);
    IdentityServiceClient::new(channel).login_with_pin(request).await.map(|_| ())
}

/// Asks until served, pausing briefly when turned away, as a patient client following
/// RetryInfo does.
async fn patiently(channel: Channel, n: u64, refusals: &mut u32) -> Code {
    loop {
        match pin_login(channel.clone(), n, Duration::from_secs(10)).await {
            Err(status) if status.code() == Code::ResourceExhausted => {
                *refusals += 1;
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            Err(status) => return status.code(),
            Ok(()) => return Code::Ok,
        }
    }
}

#[tokio::test]
async fn a_patient_citizen_is_served_while_impatient_ones_churn_and_at_once_after() {
    let suite = spawn_suite_with(|c| {
        // One hashing thread with a short queue, at the real cost: the pool is the bottleneck.
        c.identity.pin_hash =
            identity_svc::hashing::HashParams { workers: 1, max_queued: 128, ..Default::default() };
    })
    .await;
    let channel = connect(suite.identity.addr).await;

    // 300 impatient callers, 128 at a time, each giving up after 5-150 ms.
    let impatient = {
        let channel = channel.clone();
        tokio::spawn(async move {
            let semaphore = std::sync::Arc::new(tokio::sync::Semaphore::new(128));
            let mut calls = Vec::new();
            for n in 0..300u64 {
                let permit = semaphore.clone().acquire_owned().await.expect("permit");
                let channel = channel.clone();
                let deadline = Duration::from_millis(5 + (n * 37) % 146);
                calls.push(tokio::spawn(async move {
                    let _permit = permit;
                    let _ = pin_login(channel, n, deadline).await;
                }));
            }
            for call in calls {
                call.await.expect("impatient call");
            }
        })
    };

    // Meanwhile a patient citizen is answered, every time.
    let patient = {
        let channel = channel.clone();
        tokio::spawn(async move {
            let mut refusals = 0;
            for n in 0..5 {
                let code = patiently(channel.clone(), n, &mut refusals).await;
                assert_eq!(code, Code::Unauthenticated);
            }
            refusals
        })
    };
    impatient.await.expect("churn");

    // Once they have gone, nobody is turned away for work done for them: the queue they filled
    // (128 hashes, over 3 s of work) empties as soon as their hang-ups reach the server.
    let started = Instant::now();
    let mut refused_after = 0;
    let code = patiently(channel.clone(), 1_000, &mut refused_after).await;
    assert_eq!(code, Code::Unauthenticated);
    assert!(
        started.elapsed() < Duration::from_millis(1_500),
        "served {:?} after the churn, refused {refused_after} times",
        started.elapsed()
    );
    let refusals = tokio::time::timeout(Duration::from_secs(30), patient)
        .await
        .expect("the patient citizen is served")
        .expect("patient");
    eprintln!("patient refused {refusals} times");
}
